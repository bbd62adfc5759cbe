"""`sinks-jax bench`: throughput and memory of training, attention backends and sink statistics.

    sinks-jax bench train      [--config configs/paper_120m.py] [--seq-len 2048] [--backends ...]
                               [--variant sink_logit] (model.attention_variant; default softmax)
    sinks-jax bench attention  [--seq-lens 2048 8192 32768] [--backends ...]
    sinks-jax bench analysis   [--seq-lens 8192 32768 131072] [--model paper_120m|llama8b]
    sinks-jax bench scaling    (the train mode on 1 and on all local devices, same per-device batch)
    sinks-jax bench compile    [--depths 2 12 48] (compile time of the forward pass against depth)
    sinks-jax bench stream     [--window 1024 --sinks 4 --streams 64] (sink-cache reading:
                               all queries at once, token-by-token decoding, decoding memory)
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
import sys
from typing import Any

import jax

from sinks_jax import cli_args
from sinks_jax.bench.analysis import bench_analysis
from sinks_jax.bench.attention import bench_attention
from sinks_jax.bench.breakdown import bench_breakdown
from sinks_jax.bench.compile import bench_compile
from sinks_jax.bench.scaling import bench_scaling
from sinks_jax.bench.stream import bench_stream
from sinks_jax.bench.train import bench_train


def environment() -> dict[str, Any]:
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


def _parser() -> argparse.ArgumentParser:
    p = cli_args.ArgumentParser(
        prog="sinks-jax bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "mode",
        choices=("train", "attention", "analysis", "scaling", "breakdown", "compile", "stream"),
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run")
    p.add_argument(
        "--profile",
        default=None,
        help="train, breakdown: write a device trace here and record its kernels' time",
    )
    cli_args.add_out(p, "write the records as JSON here", required=False)
    p.add_argument("--backends", nargs="*", default=None, help="train: none = packed cases only")
    p.add_argument("--seq-lens", nargs="+", type=cli_args.whole(2), default=None)
    p.add_argument("--iters", type=cli_args.whole(1), default=10)
    p.add_argument("--warmup", type=cli_args.whole(0), default=2)
    p.add_argument(
        "--block-size", type=cli_args.whole(1), default=512, help="blockwise backend tile"
    )
    # attention mode
    p.add_argument("--tokens", type=cli_args.whole(1), default=65536, help="B = tokens // T")
    p.add_argument("--heads", type=cli_args.whole(1), default=12)
    p.add_argument("--kv-heads", type=cli_args.whole(1), default=1)
    p.add_argument("--head-dim", type=cli_args.whole(1), default=64)
    p.add_argument("--dtype", default="bfloat16")
    # train / scaling mode
    p.add_argument(
        "--config",
        default="configs/paper_120m.py",
        help="train config: a file, or a built-in config's name (sinks_jax/configs/)",
    )
    cli_args.add_seq_len(p, 2048, "train, breakdown, compile: tokens per row T")
    p.add_argument("--logits-dtype", default="", help="train: override model.logits_dtype")
    p.add_argument("--variant", default="softmax", help="train: model.attention_variant")
    p.add_argument(
        "--sink-stats",
        choices=("both", "on", "off"),
        default="both",
        help="train: time the step with in-step sink statistics, without, or both",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="train, scaling: config overrides, e.g. model.scan_unroll=12",
    )
    p.add_argument(
        "--micro-batch", type=cli_args.whole(0), default=0, help="override micro_batch_size"
    )
    p.add_argument(
        "--tokens-per-step", type=cli_args.whole(0), default=0, help="override tokens_per_step"
    )
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
    p.add_argument(
        "--devices", type=cli_args.whole(0), default=0, help="train mode: devices (default 1)"
    )
    p.add_argument(
        "--per-device-batch", type=cli_args.whole(0), default=0, help="scaling: rows per device"
    )
    p.add_argument(
        "--accumulation", type=cli_args.whole(1), default=1, help="scaling: micro-steps"
    )
    p.add_argument(
        "--depths", nargs="+", type=cli_args.whole(1), default=[2, 12, 48], help="compile mode"
    )
    # analysis mode
    p.add_argument("--model", choices=("paper_120m", "llama8b"), default="paper_120m")
    # stream mode (bench/stream.py)
    p.add_argument("--window", type=cli_args.whole(1), default=1024, help="stream: window W")
    p.add_argument("--sinks", type=cli_args.whole(0), default=4, help="stream: sink tokens k")
    p.add_argument("--streams", type=cli_args.whole(1), default=64, help="stream: decoded together")
    p.add_argument("--decode-steps", type=cli_args.whole(1), default=256, help="stream: steps timed")
    p.add_argument("--stream-batch", type=cli_args.whole(1), default=16, help="stream: fast streams")
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
            "stream": ["cudnn"] if gpu else ["blockwise"],
        }[args.mode]
    if args.seq_lens is None:
        args.seq_lens = {
            "attention": [2048, 8192, 32768],
            "analysis": [8192, 32768, 131072],
            "stream": [1024, 10240, 102400],
        }.get(args.mode, [args.seq_len])
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
    env = environment()
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
        "stream": bench_stream,
    }[args.mode]
    records = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "args": vars(args), "records": records}, f, indent=1)
        print(f"wrote {args.out}")
    return 0
