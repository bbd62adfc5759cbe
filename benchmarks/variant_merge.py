"""What each no-op variant adds to one layer's attention, forward + backward, and the gate's and
the kv_bias score's formulation before and after their rework, side by side.

    python benchmarks/variant_merge.py [--out FILE.json]     # on a GPU (cuDNN)
    python benchmarks/variant_merge.py --quick               # CPU smoke run (blockwise)

Shapes: one layer of the reduced-scale reproduction model (configs/repro.py: d_model 512, 8
query heads, 1 KV head, head dim 64, bf16) on 64 rows of T = 2048. Each case is the VJP of a
loss of the layer's attention output (after the variant's merge or gate), median of `--iters`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from sinks_jax.bench.measure import error_line, time_fn  # noqa: E402
from sinks_jax.model import attention as attn  # noqa: E402
from sinks_jax.model import variants  # noqa: E402


def reference_gate(o, x, w, b):
    """The gate before its own VJP: plain autodiff (float32 logits' cotangent into the
    weight and input matmuls)."""
    logits = jnp.einsum("btd,dhe->bthe", x, w, preferred_element_type=jnp.float32)
    g = jax.nn.sigmoid(logits + b.astype(jnp.float32))
    return (o.astype(jnp.float32) * g).astype(o.dtype), 1.0 - g.mean(-1).transpose(0, 2, 1)


def reference_kv_slot(out, lse, q, key, value, *, scale):
    """kv_bias's merge before: the slot score from float32 copies of q and k_b."""
    H = q.shape[2]
    key_HxD = jnp.repeat(key.astype(jnp.float32), H // key.shape[0], axis=0)
    value_HxD = jnp.repeat(value.astype(jnp.float32), H // key.shape[0], axis=0)
    s = scale * jnp.einsum("bthd,hd->bht", q.astype(jnp.float32), key_HxD)
    return variants.merge_slot(out, lse, s, value_HxD[None, None])


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    gpu = jax.default_backend() == "gpu" and not args.quick
    B, T, H, K, D, DM = (64, 2048, 8, 1, 64, 512) if not args.quick else (2, 64, 8, 1, 16, 64)
    backend = "cudnn" if gpu else "blockwise"
    dt = jnp.bfloat16 if gpu else jnp.float32
    ks = jax.random.split(jax.random.key(0), 10)
    q = jax.random.normal(ks[0], (B, T, H, D), dt)
    k = jax.random.normal(ks[1], (B, T, K, D), dt)
    v = jax.random.normal(ks[2], (B, T, K, D), dt)
    x = jax.random.normal(ks[3], (B, T, DM), dt)
    w = (jax.random.normal(ks[4], (DM, H, D)) * 0.02).astype(dt)
    bg = jnp.zeros((H, D), dt)
    logit = jax.random.normal(ks[5], (H,))
    key = jax.random.normal(ks[6], (K, D), dt)
    value = jax.random.normal(ks[7], (K, D), dt)
    dout = jax.random.normal(ks[8], (B, T, H, D), dt)
    scale = D**-0.5

    def base(q, k, v):
        res = attn.attention(q, k, v, backend=backend, scale=scale)
        return res.out_BxTxHxD, res.lse_BxHxT

    cases = {
        "softmax": lambda q, k, v, x, w, bg, logit, key, value: base(q, k, v)[0],
        "softmax_plus_one": lambda q, k, v, *_: variants.null_slot(*base(q, k, v))[0],
        "sink_logit": lambda q, k, v, x, w, bg, logit, *_: variants.null_slot(
            *base(q, k, v), logit)[0],  # fmt: skip
        "kv_bias (before)": lambda q, k, v, x, w, bg, logit, key, value: reference_kv_slot(
            *base(q, k, v), q, key, value, scale=scale)[0],  # fmt: skip
        "kv_bias (now)": lambda q, k, v, x, w, bg, logit, key, value: variants.kv_slot(
            *base(q, k, v), q, key, value, scale=scale)[0],  # fmt: skip
        "gated (before)": lambda q, k, v, x, w, bg, *_: reference_gate(
            base(q, k, v)[0], x, w, bg)[0],  # fmt: skip
        "gated (now)": lambda q, k, v, x, w, bg, *_: variants.gate(base(q, k, v)[0], x, w, bg)[0],
    }
    operands = (q, k, v, x, w, bg, logit, key, value)
    records, base_ms = [], None
    for name, f in cases.items():
        rec = {"case": name, "backend": backend, "B": B, "T": T}

        def fwd_bwd(*a, f=f):
            out, vjp = jax.vjp(f, *a)
            return vjp(dout)

        try:
            rec["fwd_ms"] = 1e3 * time_fn(jax.jit(f), *operands, warmup=args.warmup,
                                          iters=args.iters)  # fmt: skip
            rec["fwd_bwd_ms"] = 1e3 * time_fn(jax.jit(fwd_bwd), *operands, warmup=args.warmup,
                                              iters=args.iters)  # fmt: skip
            base_ms = rec["fwd_bwd_ms"] if name == "softmax" else base_ms
            rec["extra_ms"] = rec["fwd_bwd_ms"] - base_ms if base_ms else None
        except Exception as exc:
            rec["error"] = error_line(exc)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    dev = jax.devices()[0]
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"device": dev.device_kind, "jax": jax.__version__, "records": records}, fh,
                      indent=1)  # fmt: skip
    print(f"\n{dev.device_kind}, jax {jax.__version__}, {backend}: B={B} T={T} H={H} K={K} D={D}")
    print(f"{'case':<20}{'fwd ms':>9}{'f+b ms':>9}{'extra ms':>10}")
    for r in records:
        extra = r.get("extra_ms")
        extra = float("nan") if extra is None else extra
        fwd, fwd_bwd = r.get("fwd_ms", float("nan")), r.get("fwd_bwd_ms", float("nan"))
        print(f"{r['case']:<20}{fwd:>9.3f}{fwd_bwd:>9.3f}{extra:>10.3f}  {r.get('error', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
