"""The fused sigmoid-attention kernels (model/sigmoid_kernel.py): checked against the xla path
for every tile setting, then timed against softmax on cuDNN and on Pallas.

    python benchmarks/sigmoid_kernel.py [--out FILE.json]      # on a GPU
    python benchmarks/sigmoid_kernel.py --quick                # CPU smoke run (interpret mode)

Shapes default to the reduced-scale reproduction model's attention (configs/repro.py: 8 query
heads, 1 KV head, head dim 64, bf16) at T = 2048 with 64 rows (2^17 tokens per call), causal
and with packed segments (4 documents a row). Checks: relative L2 error of the output and of
dq, dk, dv against the xla path on the same bf16 inputs (T = 2048, 2 rows, segments with key
0 global, and a window), the largest LSE difference, and a float32 run. Times: median of
`--iters` calls after `--warmup`, forward and forward + backward (VJP of the output).
The last lines are a table; `--out` writes every record.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from sinks_jax.bench.measure import error_line, packed_segments, time_fn  # noqa: E402
from sinks_jax.model import attention as attn  # noqa: E402
from sinks_jax.model import sigmoid_kernel as sk  # noqa: E402

TILES = {
    "default": sk.SigmoidBlocks(),
    "stages3": sk.SigmoidBlocks(num_stages=3),
    "approx": sk.SigmoidBlocks(approx=True),
    "wide_bwd": sk.SigmoidBlocks(dq_q=128, dq_k=32, dkv_q=32, dkv_k=128, num_stages=3),
    "wide_bwd_approx": sk.SigmoidBlocks(dq_q=128, dq_k=32, dkv_q=32, dkv_k=128, num_stages=3,
                                        approx=True),  # fmt: skip
    "big": sk.SigmoidBlocks(fwd_q=128, fwd_k=128, dq_q=128, dq_k=64, dkv_q=64, dkv_k=128,
                            num_warps=8),  # fmt: skip
}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, interpret mode (CPU)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--tokens", type=int, default=2**17, help="rows = tokens // T")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--tiles", nargs="+", default=list(TILES), choices=list(TILES))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def inputs(B, T, H, K, D, dtype, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    return (
        jax.random.normal(ks[0], (B, T, H, D), dtype),
        jax.random.normal(ks[1], (B, T, K, D), dtype),
        jax.random.normal(ks[2], (B, T, K, D), dtype),
        jax.random.normal(ks[3], (B, T, H, D), dtype),
    )


def sigmoid_fn(blocks, interpret, seg=None, gfk=False, window=None):
    def f(q, k, v):
        return sk.sigmoid_attention(
            q, k, v, seg, scale=q.shape[-1] ** -0.5, visible_count=attn.visible_count,
            global_first_key=gfk, window=window, blocks=blocks, interpret=interpret,
        )  # fmt: skip

    return f


def xla_fn(seg=None, gfk=False, window=None):
    def f(q, k, v):
        res = attn.attention(q, k, v, backend="xla", variant="sigmoid", segment_ids=seg,
                             global_first_key=gfk, window=window)  # fmt: skip
        return res.out_BxTxHxD, res.lse_BxHxT

    return f


def vjp_all(f, q, k, v, do):
    (out, lse), vjp = jax.vjp(f, q, k, v)
    return (out, lse, *vjp((do, jnp.zeros_like(lse))))


def rel(a, b):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def check(name, blocks, args, interpret):
    """Errors against the xla path: bf16 under three mask layouts, and float32 (causal)."""
    T = 64 if args.quick else min(args.seq_len, 2048)
    H, K, D = args.heads, args.kv_heads, args.head_dim
    rec = {"tiles": name, "check_T": T}
    seg = packed_segments(2, T, seed=1)
    layouts = {"causal": {}, "segments+gfk": dict(seg=seg, gfk=True),
               "segments+window": dict(seg=seg, window=T // 4)}  # fmt: skip
    worst = 0.0
    for lname, kw in layouts.items():
        q, k, v, do = inputs(2, T, H, K, D, jnp.bfloat16, seed=2)
        got = jax.jit(functools.partial(vjp_all, sigmoid_fn(blocks, interpret, **kw)))(q, k, v, do)
        ref = jax.jit(functools.partial(vjp_all, xla_fn(**kw)))(q, k, v, do)
        errs = {
            "out": rel(got[0], ref[0]),
            "lse_abs": float(jnp.abs(got[1] - ref[1]).max()),
            **{f"d{n}": rel(g, r) for n, g, r in zip("qkv", got[2:], ref[2:])},
        }
        rec[lname] = errs
        worst = max(worst, errs["out"], errs["dq"], errs["dk"], errs["dv"], errs["lse_abs"])
    q, k, v, do = inputs(2, T, H, K, D, jnp.float32, seed=3)
    got = jax.jit(functools.partial(vjp_all, sigmoid_fn(blocks, interpret)))(q, k, v, do)
    ref = jax.jit(functools.partial(vjp_all, xla_fn()))(q, k, v, do)
    rec["float32"] = max(rel(g, r) for g, r in zip((got[0], *got[2:]), (ref[0], *ref[2:])))
    rec["check_ok"] = bool(worst < 2e-2 and rec["float32"] < 1e-3)
    rec["worst_bf16"] = worst
    return rec


def time_case(label, fwd, args, q, k, v, do):
    """Median forward and forward + backward milliseconds of `fwd(q, k, v) -> out`."""
    B, T, H, D = q.shape
    flops = 4.0 * B * H * T * T * D / 2  # causal: half the square.
    rec = {"case": label, "B": B, "T": T}

    def fwd_bwd(q, k, v):
        out, vjp = jax.vjp(fwd, q, k, v)
        return vjp(do)

    try:
        it = dict(warmup=args.warmup, iters=args.iters)
        rec["fwd_ms"] = 1e3 * time_fn(jax.jit(fwd), q, k, v, **it)
        rec["fwd_bwd_ms"] = 1e3 * time_fn(jax.jit(fwd_bwd), q, k, v, **it)
        rec["fwd_tflops"] = flops / rec["fwd_ms"] * 1e-9
        rec["fwd_bwd_tflops"] = 3.5 * flops / rec["fwd_bwd_ms"] * 1e-9
    except Exception as exc:
        rec["error"] = error_line(exc)
    return rec


def main(argv):
    args = parse(argv)
    interpret = args.quick or jax.default_backend() != "gpu"
    if args.quick:
        args.seq_len, args.tokens, args.iters, args.warmup = 64, 128, 1, 0
        args.tiles = args.tiles[:1]
    dev = jax.devices()[0]
    env = {"device": dev.device_kind, "jax": jax.__version__, "platform": dev.platform}
    print(env, flush=True)
    records = []
    for name in args.tiles:
        blocks = TILES[name]
        if args.quick:
            blocks = dataclasses.replace(blocks, fwd_q=16, fwd_k=16, dq_q=16, dq_k=16,
                                         dkv_q=16, dkv_k=16)  # fmt: skip
        try:
            rec = check(name, blocks, args, interpret)
        except Exception as exc:
            rec = {"tiles": name, "error": error_line(exc), "check_ok": False}
        print(json.dumps(rec), flush=True)
        records.append({"mode": "check", **rec})

    T, H, K, D = args.seq_len, args.heads, args.kv_heads, args.head_dim
    B = max(1, args.tokens // T)
    q, k, v, do = inputs(B, T, H, K, D, jnp.bfloat16)
    timed = []
    for segmented in (False, True):
        seg = packed_segments(B, T) if segmented else None
        cases = {}
        if not interpret:
            if not segmented:
                cases["softmax cudnn"] = lambda q, k, v: attn.attention(
                    q, k, v, backend="cudnn").out_BxTxHxD  # fmt: skip
            cases["softmax pallas"] = lambda q, k, v, seg=seg: attn.attention(
                q, k, v, backend="pallas", segment_ids=seg).out_BxTxHxD  # fmt: skip
        cases["sigmoid blockwise"] = lambda q, k, v, seg=seg: attn.attention(
            q, k, v, backend="blockwise", variant="sigmoid", segment_ids=seg
        ).out_BxTxHxD
        for name in args.tiles:
            blocks = TILES[name]
            if args.quick:
                blocks = dataclasses.replace(blocks, fwd_q=16, fwd_k=16, dq_q=16, dq_k=16,
                                             dkv_q=16, dkv_k=16)  # fmt: skip
            f = sigmoid_fn(blocks, interpret, seg)
            cases[f"sigmoid pallas {name}"] = lambda q, k, v, f=f: f(q, k, v)[0]
        for label, fn in cases.items():
            rec = time_case(label, fn, args, q, k, v, do)
            rec["segments"] = segmented
            print(json.dumps(rec), flush=True)
            timed.append(rec)
    records += [{"mode": "time", **r} for r in timed]
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "records": records}, f, indent=1)

    print(f"\n{env['device']}, jax {env['jax']}: B={B} T={T} H={H} K={K} D={D} bf16")
    print(f"{'tiles':<18}{'check':>7}{'worst bf16':>12}{'float32':>10}")
    for r in records:
        if r["mode"] == "check":
            nan = float("nan")
            print(f"{r['tiles']:<18}{r.get('check_ok')!s:>7}"
                  f"{r.get('worst_bf16', nan):>12.2e}{r.get('float32', nan):>10.2e}"
                  f"  {r.get('error', '')}")  # fmt: skip
    print(f"{'case':<32}{'seg':>6}{'fwd ms':>10}{'f+b ms':>10}{'fwd TF':>8}{'f+b TF':>8}")
    for r in timed:
        print(f"{r['case']:<32}{str(r['segments']):>6}{r.get('fwd_ms', float('nan')):>10.3f}"
              f"{r.get('fwd_bwd_ms', float('nan')):>10.3f}{r.get('fwd_tflops', float('nan')):>8.1f}"
              f"{r.get('fwd_bwd_tflops', float('nan')):>8.1f}  {r.get('error', '')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
