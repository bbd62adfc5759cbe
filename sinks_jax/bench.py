"""`sinks-jax bench`: throughput and memory of training, attention backends and sink statistics.

    sinks-jax bench train      [--config configs/paper_120m.py] [--seq-len 2048] [--backends ...]
                               [--variant sink_logit] (model.attention_variant; default softmax)
    sinks-jax bench attention  [--seq-lens 2048 8192 32768] [--backends ...]
    sinks-jax bench analysis   [--seq-lens 8192 32768 131072] [--model paper_120m|llama8b]
    sinks-jax bench scaling    (the train mode on 1 and on all local devices, same per-device batch)
    sinks-jax bench compile    [--depths 2 12 48] (compile time of the forward pass against depth)
    add --quick for a seconds-long CPU smoke run; --out FILE.json for the full records.

Each mode prints a table and writes JSON records (device, versions, settings, figures). Times
are medians over `--iters` runs after `--warmup` runs, synchronised with block_until_ready.
Peak memory is XLA's compiled memory analysis of the timed executable (arguments + outputs +
temporaries), which is per case and does not depend on what ran before.
MFU counts 6 x (matmul parameters incl. the output head) x tokens + causal attention FLOPs
(12 L H hd T / 2 per token), against 989 TFLOP/s dense bf16 for H100/H200 SXM.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer, forward
from sinks_jax.model import attention as attn_lib

PAPER_120M = dict(
    vocab_size=32000,
    num_layers=12,
    d_model=768,
    num_heads=12,
    num_kv_heads=1,
    d_ff=2048,
    rope_theta=10000.0,
    tie_embeddings=False,
    dtype="bfloat16",
    param_dtype="float32",
)
QUICK_SHAPE = dict(  # --quick: a model that runs in seconds on a CPU
    vocab_size=259,
    num_layers=2,
    d_model=64,
    num_heads=4,
    num_kv_heads=1,
    d_ff=128,
    dtype="float32",
    param_dtype="float32",
)


def _environment() -> dict[str, Any]:
    import flax
    import optax

    dev = jax.devices()[0]
    return {
        "date": datetime.date.today().isoformat(),
        "device": dev.device_kind,
        "platform": dev.platform,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "command": "sinks-jax bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
    }


def time_fn(fn: Callable, *args, warmup: int = 2, iters: int = 10) -> float:
    """Median wall seconds of `fn(*args)` (synchronised), after warm-up runs."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_memory_bytes(jitted, *args) -> int | None:
    """Arguments + outputs + temporaries of the compiled executable (None if unknown)."""
    try:
        m = jitted.lower(*args).compile().memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:  # memory analysis is backend dependent
        return None


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def _segments(B: int, T: int, docs: int = 4, seed: int = 0) -> jax.Array:
    """Packed rows of `docs` documents of random lengths, as segment ids 1..docs."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((B, T), np.int32)
    for b in range(B):
        cuts = np.sort(rng.choice(np.arange(1, T), docs - 1, replace=False))
        for s, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, T]), start=1):
            seg[b, lo:hi] = s
    return jnp.asarray(seg)


# --------------------------------------------------------------------------- attention mode


def bench_attention(args) -> list[dict[str, Any]]:
    H, K, D = args.heads, args.kv_heads, args.head_dim
    records = []
    table = Table(
        (
            "backend",
            "T",
            "segments",
            "fwd_ms",
            "fwd_bwd_ms",
            "fwd_tflops",
            "fwd_bwd_tflops",
            "memory_bytes",
            "error",
        )
    )
    for T in args.seq_lens:
        B = max(1, args.tokens // T)
        ks = jax.random.split(jax.random.key(T), 4)
        dt = jnp.dtype(args.dtype)
        q = jax.random.normal(ks[0], (B, T, H, D), dt)
        k = jax.random.normal(ks[1], (B, T, K, D), dt)
        v = jax.random.normal(ks[2], (B, T, K, D), dt)
        do = jax.random.normal(ks[3], (B, T, H, D), dt)
        fwd_flops = 4.0 * B * H * T * T * D / 2  # causal: half the square
        for backend in args.backends:
            for segmented in (False, True):
                rec = dict(
                    mode="attention",
                    backend=backend,
                    T=T,
                    B=B,
                    H=H,
                    K=K,
                    D=D,
                    segments=segmented,
                    dtype=args.dtype,
                )
                seg = _segments(B, T) if segmented else None

                def fwd(q, k, v, backend=backend, seg=seg):
                    return attn_lib.attention(
                        q, k, v, backend=backend, segment_ids=seg, block_size=args.block_size
                    )

                def fwd_bwd(q, k, v, backend=backend, seg=seg):
                    out, vjp = jax.vjp(lambda *a: fwd(*a).out_BxTxHxD, q, k, v)
                    return vjp(do)

                try:
                    f, fb = jax.jit(fwd), jax.jit(fwd_bwd)
                    rec["fwd_ms"] = 1e3 * time_fn(f, q, k, v, warmup=args.warmup, iters=args.iters)
                    rec["fwd_bwd_ms"] = 1e3 * time_fn(
                        fb, q, k, v, warmup=args.warmup, iters=args.iters
                    )
                    rec["fwd_tflops"] = fwd_flops / rec["fwd_ms"] * 1e-9
                    rec["fwd_bwd_tflops"] = 3.5 * fwd_flops / rec["fwd_bwd_ms"] * 1e-9
                    rec["memory_bytes"] = compiled_memory_bytes(fb, q, k, v)
                except Exception as exc:  # OOM or unsupported combination: recorded, not fatal
                    rec["error"] = _error(exc)
                records.append(rec)
                table.row(rec)
    return records


# ------------------------------------------------------------------------------ train mode


def _train_config(args, backend: str, intra_doc: bool, global_first_key: bool = False):
    """The training config of the benchmark (paper_120m by default) for one backend."""
    from sinks_jax.train.main import load_config

    config = load_config(args.config)
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


def _train_case(args, backend: str, sink_stats: bool, packing: str, devices) -> dict:
    """Tokens/s, step time, MFU and memory of the real jitted train step on random tokens.

    `packing`: "causal" (one document per row), or a packed intra-doc cell of the packing
    grid, "intra_bos" or "intra_fixed_bos" (the same rows; key 0 visible to every document).
    """
    from sinks_jax.train import flops, optim, sharding
    from sinks_jax.train.state import init_state
    from sinks_jax.train import step as step_lib

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
        seg = np.stack([np.asarray(_segments(micro, T, seed=i)) for i in range(k)])
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

    step_s = time_fn(run, warmup=args.warmup, iters=args.iters)
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
    )
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
    for backend in args.backends:
        cases += [(backend, False, "causal"), (backend, True, "causal")]
    if args.packed_backend:
        for packing in args.packed_modes:
            cases += [(args.packed_backend, False, packing), (args.packed_backend, True, packing)]
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
            rec = _train_case(args, backend, stats, packing, devices)
        except Exception as exc:
            rec = dict(
                mode="train",
                backend=backend,
                variant=args.variant,
                sink_stats=stats,
                packing=packing,
                error=_error(exc),
            )
        records.append(rec)
        table.row(rec)
    return records


def bench_scaling(args) -> list[dict[str, Any]]:
    records = []
    n = jax.local_device_count()
    table = Table(("devices", "micro_batch", "step_ms", "tokens_per_s", "mfu", "error"))
    for count in sorted({1, n}):
        devices = jax.local_devices()[:count]
        try:
            rec = _train_case(args, args.backends[0], True, "causal", devices)
        except Exception as exc:
            rec = dict(mode="train", devices=count, error=_error(exc))
        rec["mode"] = "scaling"
        records.append(rec)
        table.row(rec)
    if len(records) == 2 and "tokens_per_s" in records[0] and "tokens_per_s" in records[1]:
        speedup = records[1]["tokens_per_s"] / records[0]["tokens_per_s"]
        print(f"speed-up on {n} devices: {speedup:.2f}x")
        records[1]["speedup"] = speedup
    return records


def bench_compile(args) -> list[dict[str, Any]]:
    """Seconds to lower and compile the model's forward pass at several depths: with the layers
    scanned over stacked parameters it should barely grow with depth."""
    records = []
    table = Table(("num_layers", "lower_s", "compile_s"))
    shape = dict(QUICK_SHAPE if args.quick else PAPER_120M, attention=args.backends[0])
    tokens_BxT = jnp.zeros((1, args.seq_len), jnp.int32)
    for i, depth in enumerate([args.depths[0], *args.depths]):  # the first: a warm-up.
        cfg = ModelConfig(**{**shape, "num_layers": depth})
        graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
        fn = jax.jit(lambda p, t, graphdef=graphdef: forward(graphdef, p, t)[0])
        start = time.perf_counter()
        lowered = fn.lower(params, tokens_BxT)
        mid = time.perf_counter()
        lowered.compile()
        if i == 0:
            continue
        rec = dict(mode="compile", num_layers=depth, lower_s=mid - start,
                   compile_s=time.perf_counter() - mid)  # fmt: skip
        records.append(rec)
        table.row(rec)
    return records


def bench_breakdown(args) -> list[dict[str, Any]]:
    """Where a micro-step's time goes: the output head + cross-entropy alone, attention alone,
    and the whole model forward and forward+backward (the rest is the layers' matmuls and
    elementwise work)."""
    import optax

    from sinks_jax.train import flops

    shape = dict(PAPER_120M)
    B, T = args.micro_batch or 32, args.seq_len
    if args.quick:
        shape = dict(QUICK_SHAPE)
        B = 4
    backend = args.backends[0]
    cfg = ModelConfig(**{**shape, "attention": backend})
    dt = jnp.dtype(cfg.dtype)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    params = jax.jit(lambda: nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))[1])()
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, cfg.vocab_size)
    targets = jnp.roll(tokens, -1, axis=1)

    def loss(p, tokens):
        logits, _ = nnx.merge(graphdef, p)(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    h = jax.random.normal(jax.random.key(1), (B, T, cfg.d_model), dt)
    w = jax.random.normal(jax.random.key(2), (cfg.d_model, cfg.vocab_size), jnp.float32) * 0.02

    def head_loss(w, h, logits_dtype):
        logits = jnp.einsum("btd,dv->btv", h, w.astype(dt), preferred_element_type=logits_dtype)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets
        ).mean()

    H, D = cfg.num_heads, cfg.head_size
    q = jax.random.normal(jax.random.key(3), (B, T, H, D), dt)
    kv = jax.random.normal(jax.random.key(4), (B, T, cfg.kv_heads, D), dt)

    def attn_sum(q, k, v):
        out = attn_lib.attention(q, k, v, backend=backend, block_size=cfg.block_size)
        return out.out_BxTxHxD.astype(jnp.float32).sum()

    cases = {
        "model_fwd": (jax.jit(loss), (params, tokens)),
        "model_fwd_bwd": (jax.jit(jax.grad(loss)), (params, tokens)),
        "head_ce_fwd_bwd_f32_logits": (
            jax.jit(jax.grad(lambda w, h: head_loss(w, h, jnp.float32), argnums=(0, 1))),
            (w, h),
        ),
        "head_ce_fwd_bwd_bf16_logits": (
            jax.jit(jax.grad(lambda w, h: head_loss(w, h, dt), argnums=(0, 1))),
            (w, h),
        ),
        "attention_fwd_bwd_x_layers": (jax.jit(jax.grad(attn_sum, argnums=(0, 1, 2))), (q, kv, kv)),
    }
    records = []
    table = Table(("case", "B", "T", "ms", "error"))
    for name, (fn, fargs) in cases.items():
        rec = dict(mode="breakdown", case=name, backend=backend, B=B, T=T)
        try:
            ms = 1e3 * time_fn(fn, *fargs, warmup=args.warmup, iters=args.iters)
            rec["ms"] = ms * (cfg.num_layers if name.startswith("attention") else 1)
        except Exception as exc:
            rec["error"] = _error(exc)
        records.append(rec)
        table.row(rec)
    if args.profile:  # a device trace of the model's forward+backward, for xprof/TensorBoard
        fn, fargs = cases["model_fwd_bwd"]
        jax.profiler.start_trace(args.profile)
        for _ in range(3):
            jax.block_until_ready(fn(*fargs))
        jax.profiler.stop_trace()
        print(f"trace written under {args.profile}")
    fb = records[1].get("ms")
    if fb:
        tps = B * T / (fb / 1e3)
        peak = flops.peak_flops_per_device()
        mfu = flops.train_flops_per_token(cfg, T) * tps / peak if peak else None
        print(f"model fwd+bwd alone: {tps:.4g} tokens/s, MFU {mfu}")
    return records


# --------------------------------------------------------------------------- analysis mode


def bench_analysis(args) -> list[dict[str, Any]]:
    """Sink statistics (first-token attention, and attention received by every key) end to end."""
    if args.model == "llama8b":
        from sinks_jax import hf

        shape = hf.config_from_hf_dict(hf.LLAMA_3_1_8B, dtype="bfloat16").to_dict()
    else:
        shape = dict(PAPER_120M)
    if args.quick:
        shape = dict(QUICK_SHAPE)
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
                    rec["error"] = _error(exc)
                records.append(rec)
                table.row(rec)
    return records


# ------------------------------------------------------------------------------------ CLI


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool) and v > 10**6:
        return f"{v / 2**30:.2f}GiB"
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    return str(v)


COLUMN_WIDTHS = {"case": 27, "collect": 23}  # columns whose values are wider than 10.


class Table:
    """Prints records as an aligned text table: the header before the first row, then one
    row as each record arrives (long benchmarks show progress). The last column is not
    padded (it holds the error message, if any)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self.widths = [max(len(k), COLUMN_WIDTHS.get(k, 10)) for k in self.keys]
        self.started = False

    def line(self, cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], self.widths)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    def row(self, rec: dict) -> None:
        if not self.started:
            print(self.line(self.keys))
            print(self.line(["-" * w for w in self.widths]))
            self.started = True
        print(self.line([_fmt(rec.get(k)) for k in self.keys]), flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sinks-jax bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "mode", choices=("train", "attention", "analysis", "scaling", "breakdown", "compile")
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run")
    p.add_argument("--profile", default=None, help="breakdown: write a device trace here")
    p.add_argument("--out", default=None, help="write the records as JSON here")
    p.add_argument("--backends", nargs="*", default=None, help="train: none = packed cases only")
    p.add_argument("--seq-lens", nargs="+", type=int, default=None)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block-size", type=int, default=512, help="blockwise backend tile")
    # attention mode
    p.add_argument("--tokens", type=int, default=65536, help="B = tokens // T")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16")
    # train / scaling mode
    p.add_argument("--config", default="configs/paper_120m.py")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--logits-dtype", default="", help="train: override model.logits_dtype")
    p.add_argument("--variant", default="softmax", help="train: model.attention_variant")
    p.add_argument("--micro-batch", type=int, default=0, help="override micro_batch_size")
    p.add_argument("--tokens-per-step", type=int, default=0, help="override tokens_per_step")
    p.add_argument(
        "--packed-backend",
        default="pallas",
        help="backend for the packed + intra-doc case ('' to skip)",
    )
    p.add_argument(
        "--packed-modes",
        nargs="+",
        choices=("intra_bos", "intra_fixed_bos"),
        default=["intra_bos"],
        help="train: packed cells timed (intra_fixed_bos: key 0 visible to every document)",
    )
    p.add_argument("--devices", type=int, default=0, help="train mode: devices (default 1)")
    p.add_argument("--per-device-batch", type=int, default=0, help="scaling: rows per device")
    p.add_argument("--accumulation", type=int, default=1, help="scaling: micro-steps")
    p.add_argument("--depths", nargs="+", type=int, default=[2, 12, 48], help="compile mode")
    # analysis mode
    p.add_argument("--model", choices=("paper_120m", "llama8b"), default="paper_120m")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    gpu = jax.default_backend() == "gpu"
    if args.backends is None:
        args.backends = {
            "attention": ["xla", "cudnn", "pallas", "blockwise"] if gpu else ["xla", "blockwise"],
            "train": ["cudnn", "pallas"] if gpu else ["blockwise"],
            "scaling": ["cudnn"] if gpu else ["blockwise"],
            "analysis": ["cudnn"] if gpu else ["blockwise"],
            "breakdown": ["cudnn"] if gpu else ["blockwise"],
            "compile": ["cudnn"] if gpu else ["blockwise"],
        }[args.mode]
    if args.seq_lens is None:
        args.seq_lens = {"attention": [2048, 8192, 32768], "analysis": [8192, 32768, 131072]}.get(
            args.mode, [args.seq_len]
        )
    if args.quick:
        args.seq_lens = [s for s in (64, 128)]
        args.seq_len, args.iters, args.warmup, args.tokens = 64, 2, 1, 256
        args.heads, args.kv_heads, args.head_dim, args.block_size = 4, 2, 16, 32
        args.config = "configs/quickstart.py:64"
        args.tokens_per_step, args.micro_batch = 512, 8
        if not gpu:
            args.packed_backend = "blockwise"
        if args.mode == "scaling" and args.per_device_batch == 0:
            args.per_device_batch = 4
    if not gpu and args.packed_backend == "pallas":
        args.packed_backend = "blockwise"
    env = _environment()
    print(
        f"# {env['device']} x{env['device_count']}  jax {env['jax']}  flax {env['flax']}  "
        f"{env['date']}"
    )
    run = {
        "train": bench_train,
        "attention": bench_attention,
        "analysis": bench_analysis,
        "scaling": bench_scaling,
        "breakdown": bench_breakdown,
        "compile": bench_compile,
    }[args.mode]
    records = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "args": vars(args), "records": records}, f, indent=1)
        print(f"wrote {args.out}")
    return 0
