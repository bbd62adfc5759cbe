"""Step time of one train step layout: one process driving every local device, or one of the
processes that launch/multiprocess.sh starts (process 0 writes the result).

    python launch/step_time.py --out one.json                       # one process, all GPUs
    bash launch/multiprocess.sh -n 2 --one-gpu-each -- python launch/step_time.py --out two.json
    python launch/step_time.py --compare one.json two.json

The step is the training loop's (`make_train_step`, batches assembled by `global_batch` from
each process's rows, metrics fetched to the host and the stop decision agreed by
`any_process` every step) on the same global batch of random tokens in every layout, so the
first loss agrees between layouts. The model defaults to configs' `small` preset (bf16, cuDNN
on a GPU; float32 and blockwise on a CPU). Needs neither grain nor ml_collections.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OPTIM = {
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup_steps": 1,
    "b1": 0.9,
    "b2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "clip_norm": 1.0,
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=259)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=64, help="rows per step, over all processes")
    p.add_argument("--attention", default=None, help="default: cudnn on a GPU, else blockwise")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, else float32")
    p.add_argument("--fsdp", type=int, default=1, help="mesh.fsdp (mesh.data takes the rest)")
    p.add_argument("--steps", type=int, default=50, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    p.add_argument("--out", help="JSON file for the result (written by process 0)")
    p.add_argument("--compare", nargs=2, metavar="JSON", help="print two results side by side")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np

    from sinks_jax.model import ModelConfig
    from sinks_jax.train import optim, sharding
    from sinks_jax.train import state as state_lib
    from sinks_jax.train import step as step_lib

    sharding.maybe_initialize_distributed()
    gpu = jax.default_backend() == "gpu"
    cfg = ModelConfig(
        vocab_size=args.vocab,
        num_layers=args.layers,
        d_model=args.d_model,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        d_ff=args.d_ff,
        dtype=args.dtype or ("bfloat16" if gpu else "float32"),
        attention=args.attention or ("cudnn" if gpu else "blockwise"),
    )
    mesh = sharding.make_mesh({"data": -1, "fsdp": args.fsdp})
    n_proc, me = jax.process_count(), jax.process_index()
    if args.batch % jax.device_count():
        raise SystemExit(
            f"--batch {args.batch} does not split over {jax.device_count()} "
            "devices; pass a multiple of the device count."
        )
    steps = args.warmup + args.steps
    tx = optim.make_optimizer(OPTIM, steps)
    state = state_lib.init_state(cfg, tx, mesh, seed=0)
    b_shard = sharding.batch_sharding(mesh, accumulate=True)
    fn = step_lib.make_train_step(
        state.graphdef,
        tx,
        param_shardings=state.param_shardings,
        opt_shardings=state.opt_shardings,
        batch_sharding=b_shard,
        replicated=sharding.replicated(mesh),
        use_segments=False,
        sink_stats=False,
    )
    # The same global batch in every layout; this process keeps its rows.
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, (1, args.batch, args.seq_len + 1), dtype=np.int32)
    rows = slice(me * args.batch // n_proc, (me + 1) * args.batch // n_proc)
    shape = (1, args.batch // n_proc, args.seq_len)
    local = {
        "tokens": ids[:, rows, :-1],
        "targets": ids[:, rows, 1:],
        "segment_ids": np.ones(shape, np.int32),
        "positions": np.broadcast_to(np.arange(args.seq_len, dtype=np.int32), shape).copy(),
        "loss_mask": np.ones(shape, np.int32),
    }
    params, opt_state = state.params, state.opt_state
    times, agree, losses = [], [], []
    for i in range(steps):
        t0 = time.perf_counter()
        batch = sharding.global_batch(local, b_shard)
        params, opt_state, metrics = fn(params, opt_state, batch)
        losses.append(float(jax.device_get(metrics["loss"])))
        t1 = time.perf_counter()
        sharding.any_process(False)
        t2 = time.perf_counter()
        if i >= args.warmup:
            times.append(t2 - t0)
            agree.append(t2 - t1)
    step_s = np.asarray(times)
    return {
        "processes": n_proc,
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "mesh": dict(mesh.shape),
        "model": cfg.to_dict(),
        "seq_len": args.seq_len,
        "batch": args.batch,
        "steps_timed": len(times),
        "step_s_median": float(np.median(step_s)),
        "step_s_p10": float(np.percentile(step_s, 10)),
        "step_s_p90": float(np.percentile(step_s, 90)),
        "tokens_per_s": args.batch * args.seq_len / float(np.median(step_s)),
        "any_process_s_median": float(np.median(agree)),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def compare(paths: list[str]) -> None:
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    keys = (
        "processes",
        "devices",
        "device_kind",
        "step_s_median",
        "step_s_p10",
        "step_s_p90",
        "tokens_per_s",
        "any_process_s_median",
        "first_loss",
        "last_loss",
    )
    print(f"{'':22}" + "".join(f"{os.path.basename(p):>24}" for p in paths))
    for k in keys:
        cells = [r[k] for r in results]
        fmt = (lambda v: f"{v:>24.4g}") if isinstance(cells[0], float) else (lambda v: f"{v!s:>24}")
        print(f"{k:22}" + "".join(fmt(v) for v in cells))
    a, b = (r["step_s_median"] for r in results)
    print(f"step time {os.path.basename(paths[1])} / {os.path.basename(paths[0])}: {b / a:.3f}")


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.compare:
        compare(args.compare)
        return 0
    result = measure(args)
    import jax

    if jax.process_index() == 0:
        print(json.dumps(result))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
