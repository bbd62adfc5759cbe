"""`sinks-jax bench train`: tokens/s, step time, MFU and memory of the real jitted train step
(paper_120m by default), with and without in-step sink statistics, causal and packed; with
`--profile DIR`, a trace of two steps per case and the kernels their device time went to."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sinks_jax.bench import profile
from sinks_jax.bench.measure import error_line, packed_segments, time_fn
from sinks_jax.bench.table import Table
from sinks_jax.model import ModelConfig
from sinks_jax.model import attention as attn_lib


def _train_config(args, backend: str, intra_doc: bool, global_first_key: bool = False):
    """The training config of the benchmark (paper_120m by default) for one backend."""
    from sinks_jax.train.config_file import load_config

    config = load_config(args.config, [f"--config.{kv}" for kv in args.set])
    config.seq_len = args.seq_len
    config.model.attention = backend
    config.model.attention_variant = args.variant
    if not args.quick:
        config.model.dtype = "bfloat16"
    if args.logits_dtype:
        config.model.logits_dtype = args.logits_dtype
    config.data.intra_doc = intra_doc
    config.model.global_first_key = global_first_key  # intra_fixed_bos: key 0 seen by all.
    if args.micro_batch:
        config.micro_batch_size = args.micro_batch
    if args.tokens_per_step:
        config.tokens_per_step = args.tokens_per_step
    return config


def train_case(args, backend: str, sink_stats: bool, packing: str, devices) -> dict:
    """Tokens/s, step time, MFU and memory of the real jitted train step on random tokens.

    `packing`: "causal" (one document per row), or a packed intra-doc cell of the packing
    grid, "intra_bos" or "intra_fixed_bos" (the same rows; key 0 visible to every document).
    """
    from sinks_jax.train import flops, optim, sharding
    from sinks_jax.train import step as step_lib
    from sinks_jax.train.state import init_state

    intra_doc = packing != "causal"
    config = _train_config(args, backend, intra_doc, packing == "intra_fixed_bos")
    mcfg = ModelConfig.from_dict(config.model.to_dict())
    mesh = jax.make_mesh(
        (len(devices), 1),
        ("data", "fsdp"),
        devices=devices,
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
    )
    T = config.seq_len
    k = optim.accumulation_steps(config.tokens_per_step, T, config.micro_batch_size)
    micro = config.tokens_per_step // T // k
    if args.per_device_batch:  # scaling mode: fixed work per device
        micro, k = args.per_device_batch * len(devices), args.accumulation
    tx = optim.make_optimizer(config.optim, max(config.num_steps, config.optim.warmup_steps + 1))
    state = init_state(mcfg, tx, mesh, seed=0)
    graphdef, params, opt_state = state.graphdef, state.params, state.opt_state
    p_sh, o_sh = state.param_shardings, state.opt_shardings
    b_sh = sharding.batch_sharding(mesh, accumulate=True)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, mcfg.vocab_size, (k, micro, T), dtype=np.int32)
    if intra_doc:
        seg = np.stack([np.asarray(packed_segments(micro, T, seed=i)) for i in range(k)])
        # position within the document = index - index of the document's first token
        first = attn_lib.sink_index(jnp.asarray(seg.reshape(k * micro, T)), T, k * micro, True)
        pos = np.arange(T) - np.asarray(first).reshape(k, micro, T)
    else:
        seg, pos = np.ones((k, micro, T), np.int32), np.broadcast_to(np.arange(T), (k, micro, T))
    batch = {
        "tokens": tokens,
        "targets": np.roll(tokens, -1, -1),
        "segment_ids": seg,
        "positions": pos.astype(np.int32),
        "loss_mask": np.ones_like(tokens),
    }
    batch = {n: jax.device_put(a, b_sh) for n, a in batch.items()}
    fn = step_lib.make_train_step(
        graphdef,
        tx,
        param_shardings=p_sh,
        opt_shardings=o_sh,
        batch_sharding=b_sh,
        replicated=sharding.replicated(mesh),
        use_segments=intra_doc,
        sink_stats=sink_stats,
    )
    state = {"params": params, "opt": opt_state}

    def run():
        state["params"], state["opt"], metrics = fn(state["params"], state["opt"], batch)
        return metrics

    start = time.perf_counter()
    jax.block_until_ready(run())  # compiles every jitted piece of the step
    first_call_s = time.perf_counter() - start
    step_s = time_fn(run, warmup=max(args.warmup - 1, 0), iters=args.iters)
    tokens_per_step = k * micro * T
    tps = tokens_per_step / step_s
    peak = flops.peak_flops_per_device() * len(devices)
    rec = dict(
        mode="train",
        logits_dtype=mcfg.logits_dtype,
        backend=backend,
        variant=mcfg.attention_variant,
        sink_stats=sink_stats,
        intra_doc=intra_doc,
        packing=packing,
        devices=len(devices),
        T=T,
        micro_batch=micro,
        accumulation=k,
        tokens_per_step=tokens_per_step,
        step_ms=1e3 * step_s,
        tokens_per_s=tps,
        mfu=(flops.train_flops_per_token(mcfg, T) * tps / peak) if peak else None,
        params=mcfg.param_count(),
        overrides=list(args.set),
        first_call_s=first_call_s,  # compile and one step
    )
    if args.profile:  # a trace of two steps and where their device time went
        name = f"{backend}_{mcfg.attention_variant}_{packing}_stats_{'on' if sink_stats else 'off'}"
        rec["profile"] = profile.trace_steps(run, os.path.join(args.profile, name), steps=2)
        print(f"{name}: {profile.summary_line(rec['profile'])}", flush=True)
    stats = jax.device_get(run())
    if sink_stats:
        rec["sink_rate_0.3"] = float(stats["sink_rate_0.3"])
    try:
        rec["peak_memory_bytes"] = int(devices[0].memory_stats()["peak_bytes_in_use"])
    except Exception:
        rec["peak_memory_bytes"] = None
    return rec


def bench_train(args) -> list[dict[str, Any]]:
    cases = []
    stats = {"both": (False, True), "on": (True,), "off": (False,)}[args.sink_stats]
    for backend in args.backends:
        cases += [(backend, on, "causal") for on in stats]
    if args.packed_backend:
        for packing in args.packed_modes:
            cases += [(args.packed_backend, on, packing) for on in stats]
    records = []
    devices = jax.local_devices()[: args.devices] if args.devices else jax.local_devices()[:1]
    table = Table(
        (
            "backend",
            "variant",
            "sink_stats",
            "packing",
            "devices",
            "step_ms",
            "tokens_per_s",
            "mfu",
            "peak_memory_bytes",
            "error",
        )
    )
    for backend, stats, packing in cases:
        try:
            rec = train_case(args, backend, stats, packing, devices)
        except Exception as exc:
            rec = dict(
                mode="train",
                backend=backend,
                variant=args.variant,
                sink_stats=stats,
                packing=packing,
                error=error_line(exc),
            )
        records.append(rec)
        table.row(rec)
    return records
