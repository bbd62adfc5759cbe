"""`sinks-jax bench analysis`: sink statistics (first-token attention, attention received by
every key) end to end: init, first call, steady state, memory."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from sinks_jax.bench.measure import compiled_memory_bytes, error_line, time_fn
from sinks_jax.bench.shapes import model_shape
from sinks_jax.bench.table import Table
from sinks_jax.model import ModelConfig, Transformer


def bench_analysis(args) -> list[dict[str, Any]]:
    """Sink statistics (first-token attention, and attention received by every key) end to end."""
    shape = model_shape(args.model, args.quick)
    records = []
    table = Table(
        (
            "backend",
            "T",
            "collect",
            "first_call_s",
            "steady_s",
            "end_to_end_s",
            "memory_bytes",
            "error",
        )
    )
    for backend in args.backends:
        cfg = ModelConfig.from_dict({**shape, "attention": backend, "block_size": args.block_size})
        start = time.perf_counter()
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
        params = jax.block_until_ready(
            jax.jit(lambda: nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))[1])()
        )
        init_s = time.perf_counter() - start
        for T in args.seq_lens:
            for collect in (("sink_attn",), ("sink_attn", "received_attn")):
                rec = dict(
                    mode="analysis",
                    model=args.model,
                    backend=backend,
                    T=T,
                    collect=list(collect),
                    params=cfg.param_count(),
                    init_s=init_s,
                )

                def stats(params, tokens, collect=collect):
                    _, aux = nnx.merge(graphdef, params)(tokens, collect=collect)
                    out = {"sink_score": aux["sink_attn"].mean(axis=(1, 3))}  # [L, H]
                    if "received_attn" in collect:
                        out["received_top"] = jax.lax.top_k(aux["received_attn"].mean((0, 1, 2)), 4)
                    return out

                try:
                    tokens = jax.random.randint(jax.random.key(T), (1, T), 0, cfg.vocab_size)
                    fn = jax.jit(stats)
                    start = time.perf_counter()
                    out = jax.block_until_ready(fn(params, tokens))  # includes compilation
                    rec["first_call_s"] = time.perf_counter() - start
                    rec["steady_s"] = time_fn(fn, params, tokens, warmup=0, iters=args.iters)
                    rec["end_to_end_s"] = init_s + rec["first_call_s"]
                    rec["memory_bytes"] = compiled_memory_bytes(fn, params, tokens)
                    rec["mean_sink_score"] = float(out["sink_score"].mean())
                    if "received_top" in out:
                        rec["top_received_keys"] = np.asarray(out["received_top"][1]).tolist()
                except Exception as exc:
                    rec["error"] = error_line(exc)
                records.append(rec)
                table.row(rec)
    return records
