"""`sinks-jax bench attention`: forward and forward+backward time, TFLOP/s and memory of each
attention backend, causal and with packed segments, at several context lengths."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sinks_jax.bench.measure import compiled_memory_bytes, error_line, packed_segments, time_fn
from sinks_jax.bench.table import Table
from sinks_jax.model import attention as attn_lib


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
                seg = packed_segments(B, T) if segmented else None

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
                    rec["error"] = error_line(exc)
                records.append(rec)
                table.row(rec)
    return records
