"""`sinks-jax bench stream`: speed and memory of reading through a sink cache
(`sinks_jax.streaming`), on SmolLM2-135M's shape (random weights: speed does not depend on
them).

Options (declared in bench/command.py): --window, --sinks, --streams, --decode-steps,
--stream-batch, and the shared --quick, --iters, --warmup, --dtype, --backends, --tokens,
--seq-lens. Three cases, each a table row:

  fast     all queries at once (`fast_nll`): tokens/s over `--stream-batch` streams of
           `--tokens` tokens each, cache `--sinks` + `--window`, through the windowed kernel
           (cuDNN on a GPU in bf16, blockwise elsewhere, or `--backends`);
  decode   token-by-token decoding of `--streams` streams (one compiled scan of
           `--decode-steps` steps): tokens/s, all streams counted;
  memory   XLA's compiled memory of decoding one stream of T tokens in one scan, for T in
           `--seq-lens` (default 1k .. 100k), sink cache against a dense cache: the sink
           cache's stays flat (only the token ids and NLLs grow, 8 bytes a token).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.bench.measure import compiled_memory_bytes, error_line, time_fn
from sinks_jax.bench.table import Table
from sinks_jax.model import ModelConfig, Transformer

# SmolLM2-135M (config.json of HuggingFaceTB/SmolLM2-135M), as `pretrained.hf_config` reads it.
SMOLLM2_135M = {
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
}


def _model(args, gpu: bool) -> tuple[ModelConfig, Any, Any]:
    from sinks_jax.pretrained.hf_config import config_from_hf_dict

    dtype = args.dtype if gpu else "float32"
    cfg = config_from_hf_dict(SMOLLM2_135M, dtype=dtype, attention="xla")
    if args.quick:
        cfg = cfg.replace(num_layers=2, vocab_size=512)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    params = jax.jit(lambda: nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))[1])()
    return cfg, graphdef, jax.block_until_ready(params)


def bench_stream(args) -> list[dict[str, Any]]:
    from sinks_jax.streaming import decode, fast
    from sinks_jax.streaming.head import nll_from_logits
    from sinks_jax.streaming.policy import CachePolicy

    gpu = jax.default_backend() == "gpu"
    if args.quick:
        args.window, args.sinks, args.streams, args.decode_steps = 64, 4, 8, 16
        args.stream_batch, args.tokens = 1, 1024
        args.seq_lens = [1024, 4096]
    seq_lens = args.seq_lens
    cfg, graphdef, params = _model(args, gpu)
    model = nnx.merge(graphdef, params)
    policy = CachePolicy(args.sinks, args.window)
    base = dict(
        mode="stream",
        model="smollm2-135m" + (" (2 layers)" if args.quick else ""),
        dtype=cfg.dtype,
        cache=policy.name,
    )
    records = []
    table = Table(("case", "backend", "B", "T", "tokens_per_s", "seconds", "memory_bytes", "error"))

    # fast: all queries at once.
    for backend in args.backends or [fast.default_backend(cfg)]:
        rec = dict(base, case="fast", backend=backend, B=args.stream_batch, T=args.tokens)
        try:
            tokens = jax.random.randint(
                jax.random.key(0), (args.stream_batch, args.tokens), 0, cfg.vocab_size
            )
            run = functools.partial(fast.fast_nll, model, tokens, policy, backend=backend)
            start = time.perf_counter()
            jax.block_until_ready(run())
            rec["first_call_s"] = time.perf_counter() - start
            rec["seconds"] = time_fn(run, warmup=0, iters=args.iters)
            rec["tokens_per_s"] = args.stream_batch * (args.tokens - 1) / rec["seconds"]
        except Exception as exc:
            rec["error"] = error_line(exc)
        records.append(rec)
        table.row(rec)

    # decode: one compiled scan of decode_steps steps over `streams` streams.
    def segment_fn(pol):
        def run(params, state, tokens_BxN, targets_BxN):
            m = nnx.merge(graphdef, params)

            def body(state, xs):
                logits, state = decode.step(m, state, xs[0], pol)
                return state, nll_from_logits(logits, xs[1])

            state, nll = jax.lax.scan(body, state, (tokens_BxN.T, targets_BxN.T))
            return state, nll

        return jax.jit(run)

    rec = dict(base, case="decode", backend="-", B=args.streams, T=args.decode_steps)
    try:
        fn = segment_fn(policy)
        state = decode.init_state(model, policy, args.streams, max_len=args.decode_steps + 1)
        toks = jax.random.randint(
            jax.random.key(1), (args.streams, args.decode_steps), 0, cfg.vocab_size
        )
        start = time.perf_counter()
        jax.block_until_ready(fn(params, state, toks, toks))
        rec["first_call_s"] = time.perf_counter() - start
        rec["seconds"] = time_fn(fn, params, state, toks, toks, warmup=0, iters=args.iters)
        rec["tokens_per_s"] = args.streams * args.decode_steps / rec["seconds"]
        rec["memory_bytes"] = compiled_memory_bytes(fn, params, state, toks, toks)
    except Exception as exc:
        rec["error"] = error_line(exc)
    records.append(rec)
    table.row(rec)

    # memory: decoding one stream of T tokens, sink cache against dense (compiled, not run).
    for T in seq_lens:
        for name, pol in (("memory", policy), ("memory dense", CachePolicy())):
            rec = dict(base, case=name, backend="-", B=1, T=T, cache=pol.name)
            try:
                state = jax.eval_shape(lambda p=pol, T=T: decode.init_state(model, p, 1, max_len=T))
                toks = jax.ShapeDtypeStruct((1, T), jnp.int32)
                rec["memory_bytes"] = compiled_memory_bytes(
                    segment_fn(pol), params, state, toks, toks
                )
                rec["cache_bytes"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
            except Exception as exc:
                rec["error"] = error_line(exc)
            records.append(rec)
            table.row(rec)
    return records
