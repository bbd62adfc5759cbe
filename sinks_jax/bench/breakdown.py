"""`sinks-jax bench breakdown`: where a micro-step's time goes (head + cross-entropy,
attention, the whole model)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.bench import profile
from sinks_jax.bench.measure import error_line, time_fn
from sinks_jax.bench.shapes import model_shape
from sinks_jax.bench.table import Table
from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.model import attention as attn_lib


def bench_breakdown(args) -> list[dict[str, Any]]:
    """Where a micro-step's time goes: the output head + cross-entropy alone, attention alone,
    and the whole model forward and forward+backward (the rest is the layers' matmuls and
    elementwise work)."""
    import optax

    from sinks_jax.train import flops

    shape = model_shape("paper_120m", args.quick)
    B, T = (4 if args.quick else args.micro_batch or 32), args.seq_len
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
            rec["error"] = error_line(exc)
        records.append(rec)
        table.row(rec)
    if args.profile:  # a device trace of the model's forward+backward, for xprof/TensorBoard
        fn, fargs = cases["model_fwd_bwd"]
        ops = profile.trace_steps(lambda: fn(*fargs), args.profile, steps=3)
        records.append(dict(mode="breakdown", case="profile_model_fwd_bwd", B=B, T=T, **ops))
        print(f"trace written under {args.profile}; {profile.summary_line(ops)}")
    fb = records[1].get("ms")
    if fb:
        tps = B * T / (fb / 1e3)
        peak = flops.peak_flops_per_device()
        mfu = flops.train_flops_per_token(cfg, T) * tps / peak if peak else None
        print(f"model fwd+bwd alone: {tps:.4g} tokens/s, MFU {mfu}")
    return records
