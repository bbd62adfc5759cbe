"""The training loop: build everything from a config, resume, train, evaluate, checkpoint.

    summary = train(config, workdir)

reads as its steps: `setup` (checks, data, model, step functions; writes nothing, so a run
that cannot start leaves no workdir behind), `restore` (the newest checkpoint, if any),
`run_steps`, `evaluate` and `finish` (final checkpoint and summary.json).

Per step: one jitted update over `tokens_per_step` tokens (micro-batches scanned inside the
step). Every `sink_stats_every` steps the step variant that also returns sink statistics of
its own forward pass at full context runs instead. Every `eval_every` steps (and at the end):
validation loss on a fixed set of held-out batches, and, at T = 64 on held-out documents with
and without a leading `<bos>`, sink scores / rates and the next-token loss on the same targets
(`val_loss_bos`, `val_loss_nobos`). Metrics go to `metrics.jsonl` and TensorBoard (a resumed
run first drops the rows past its checkpoint, so each step is logged once); progress shows
loss, tokens/s and MFU (`sinks_jax.progress`). A non-finite loss or gradient stops the run
after saving the last good state. SIGTERM or Ctrl-C (SIGINT) stop it after the current step
with a checkpoint and a summary; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from sinks_jax import analysis
from sinks_jax.progress import progress
from sinks_jax.train import checkpoint as ckpt_lib
from sinks_jax.train import flops, optim, sharding, sink_eval
from sinks_jax.train import state as state_lib
from sinks_jax.train import step as step_lib
from sinks_jax.train.data import DataPipeline
from sinks_jax.train.metrics import METRICS_FILE, MetricsWriter, keep_metrics_through
from sinks_jax.train.stop import StopRequest
from sinks_jax.train.validate import ConfigError, validate_config

SUMMARY_FILE = "summary.json"

__all__ = [
    "METRICS_FILE",
    "SUMMARY_FILE",
    "MetricsWriter",
    "Run",
    "StopRequest",
    "TrainingDiverged",
    "evaluate",
    "finish",
    "keep_metrics_through",
    "restore",
    "run_steps",
    "setup",
    "train",
]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclasses.dataclass
class Run:
    """What `setup` builds: the config, data, state and step functions of one run."""

    config: ml_collections.ConfigDict
    workdir: str
    is_main: bool
    data: DataPipeline
    params: Any
    opt_state: Any
    state: state_lib.TrainState  # shardings and abstract trees (restore targets).
    train_fn: Callable
    train_stats_fn: Callable
    eval_fn: Callable
    bos_eval_fn: Callable  # (params, with_bos_NxT, text_NxT) -> sink scores and losses.
    sink_score_fn: Callable  # (params, tokens_NxT) -> [L, N, H] sink scores only.
    spread_fn: Callable  # (params, tokens_NxT, swapped_NxT) -> [L+1, N, T] relative divergence.
    batch_sharding: Any  # [k, B, T] train batches.
    eval_batch_sharding: Any  # [B, T] validation batches.
    replicated: Any
    val_batches: list[dict[str, np.ndarray]]
    sink_sets: dict[str, np.ndarray]
    schedule: Callable
    flops_per_token: float
    peak_flops: float  # of all devices; 0: unknown (no MFU).


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        out[k] = v.item() if v.ndim == 0 else v.tolist()
    return out


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Check the config and build data, sharded state and step functions; writes no file."""
    sharding.maybe_initialize_distributed()
    model_cfg = validate_config(config, platform=jax.default_backend())
    mesh = sharding.make_mesh(config.mesh)
    if model_cfg.attention == "splash":  # Mosaic kernels run per device in every jitted
        jax.set_mesh(mesh)  # function (model/shard.py), the replicated evaluations too.
    n_dev = mesh.devices.size
    k = optim.accumulation_steps(config.tokens_per_step, config.seq_len, config.micro_batch_size)
    micro_batch = config.tokens_per_step // config.seq_len // k
    if micro_batch % n_dev or micro_batch % jax.process_count():
        raise ConfigError(
            f"micro-batch of {micro_batch} sequences does not split over {n_dev} devices; "
            "make micro_batch_size (and tokens_per_step/seq_len) a multiple of the device count."
        )
    data = DataPipeline(config, micro_batch=micro_batch, accumulation=k)
    if data.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"tokenizer {config.data.tokenizer!r} has {data.vocab_size} ids but model.vocab_size="
            f"{model_cfg.vocab_size}; set --config.model.vocab_size={data.vocab_size}."
        )
    # Parameters are created directly on the mesh, sharded by the FSDP rule.
    tx = optim.make_optimizer(config.optim, config.num_steps)
    state = state_lib.init_state(model_cfg, tx, mesh, config.seed)
    repl = sharding.replicated(mesh)
    kw = {
        "param_shardings": state.param_shardings,
        "opt_shardings": state.opt_shardings,
        "batch_sharding": sharding.batch_sharding(mesh, accumulate=True),
        "replicated": repl,
        "use_segments": bool(config.data.intra_doc),
    }
    eval_batch_sharding = sharding.batch_sharding(mesh, accumulate=False)
    return Run(
        config=config,
        workdir=workdir,
        is_main=jax.process_index() == 0,
        data=data,
        params=state.params,
        opt_state=state.opt_state,
        state=dataclasses.replace(state, params=None, opt_state=None),  # the arrays are above.
        train_fn=step_lib.make_train_step(state.graphdef, tx, **kw, sink_stats=False),
        train_stats_fn=step_lib.make_train_step(state.graphdef, tx, **kw, sink_stats=True),
        eval_fn=step_lib.make_eval_step(
            state.graphdef,
            param_shardings=state.param_shardings,
            batch_sharding=eval_batch_sharding,
            replicated=repl,
            use_segments=kw["use_segments"],
        ),
        bos_eval_fn=step_lib.make_replicated_eval(
            step_lib.bos_eval,
            state.graphdef,
            param_shardings=state.param_shardings,
            replicated=repl,
        ),
        sink_score_fn=step_lib.make_replicated_eval(
            step_lib.sink_score_eval,
            state.graphdef,
            param_shardings=state.param_shardings,
            replicated=repl,
            num_token_arrays=1,
        ),
        spread_fn=step_lib.make_replicated_eval(
            step_lib.spread_eval,
            state.graphdef,
            param_shardings=state.param_shardings,
            replicated=repl,
        ),
        batch_sharding=kw["batch_sharding"],
        eval_batch_sharding=eval_batch_sharding,
        replicated=repl,
        val_batches=data.validation_batches(config.eval_batches),
        sink_sets=data.sink_eval_sequences(config.eval_sink_sequences, config.eval_sink_len),
        schedule=optim.make_schedule(config.optim, config.num_steps),
        flops_per_token=flops.train_flops_per_token(model_cfg, config.seq_len),
        peak_flops=flops.peak_flops_per_device(config.get("peak_flops_per_device", 0.0)) * n_dev,
    )


def restore(run: Run, ckpt: ckpt_lib.Checkpointer) -> int:
    """Load the newest checkpoint into `run` (parameters, optimizer and data state); returns
    its step, or 0 when there is none. Raises CheckpointError if it does not load."""
    latest = ckpt.latest_step()
    if latest is None:
        return 0
    s = run.state
    run.params, run.opt_state, meta = ckpt.restore(
        latest,
        ckpt_lib.abstract_like(s.abstract_params, s.param_shardings),
        ckpt_lib.abstract_like(s.abstract_opt_state, s.opt_shardings),
    )
    run.data.set_state(meta["data_state"])
    if run.is_main:
        print(f"resumed from {ckpt.directory}/{latest} (step {meta['step']})")
    return int(meta["step"])


def save(run: Run, ckpt: ckpt_lib.Checkpointer, step: int) -> None:
    """Start saving the state after `step` steps (asynchronously; `ckpt.wait()` to finish)."""
    if step in ckpt.manager.all_steps():  # e.g. a periodic save just wrote this step.
        return
    meta = {
        "step": step,
        "data_state": run.data.get_state(),
        "rng": {"seed": run.config.seed},
        "config": run.config.to_dict(),
    }
    ckpt.save(step, run.params, run.opt_state, meta, force=True)


def evaluate(run: Run) -> dict[str, Any]:
    """Validation loss, and at T = eval_sink_len with and without <bos>: sink rates and scores,
    and the next-token loss on the same held-out targets (Table 2's loss column)."""
    total = count = 0.0
    for b in run.val_batches:
        s, c = run.eval_fn(run.params, sharding.global_batch(b, run.eval_batch_sharding))
        total, count = total + float(s), count + float(c)
    out: dict[str, Any] = {"val_loss": total / max(count, 1.0)}
    sets = run.sink_sets
    res = run.bos_eval_fn(
        run.params, *(jax.device_put(sets[n], run.replicated) for n in ("bos", "nobos"))
    )
    targets = sets["nobos"].shape[0] * (sets["nobos"].shape[1] - 1)
    for name in ("bos", "nobos"):
        out[f"val_loss_{name}"] = float(res[f"nll_{name}"].sum()) / targets
        scores_LxBxH = res[f"scores_{name}"]
        for eps in step_lib.SINK_EPS:
            out[f"val_sink_rate_{eps}_{name}"] = float(analysis.sink_rate(scores_LxBxH, eps))
        out[f"val_sink_score_{name}"] = float(scores_LxBxH.mean())
        out[f"val_sink_scores_{name}"] = np.asarray(scores_LxBxH.mean(axis=1)).tolist()
    return out


def sink_scores(run: Run, tokens_NxT: np.ndarray) -> jax.Array:
    """`[L, N, H]` Gu's sink score of key 0 on plain (one document per row) sequences."""
    return run.sink_score_fn(run.params, jax.device_put(tokens_NxT, run.replicated))


def window_losses(run: Run) -> dict[str, np.ndarray]:
    """`{"bos": [N], "nobos": [N]}`: each held-out window's mean next-token loss (nats) on the
    same T - 1 targets, read with `<bos>` and text only (kept in sink_scores.npz)."""
    sets = run.sink_sets
    res = run.bos_eval_fn(
        run.params, *(jax.device_put(sets[n], run.replicated) for n in ("bos", "nobos"))
    )
    targets = sets["nobos"].shape[1] - 1
    return {n: np.asarray(jax.device_get(res[f"nll_{n}"]), np.float64) / targets
            for n in ("bos", "nobos")}  # fmt: skip


def spread_divergence(run: Run, tokens_NxT: np.ndarray, swapped_NxT: np.ndarray) -> np.ndarray:
    """`[L+1, N, T]` relative divergence of the residual stream, tokens read as swapped."""
    put = functools.partial(jax.device_put, device=run.replicated)
    return np.asarray(jax.device_get(run.spread_fn(run.params, put(tokens_NxT), put(swapped_NxT))))


def run_steps(
    run: Run, ckpt: ckpt_lib.Checkpointer, writer: MetricsWriter, start: int, stop: StopRequest
) -> tuple[int, dict[str, Any]]:
    """Train from step `start` to num_steps, or until a stop is requested; returns the step
    reached and its metrics record."""
    c = run.config
    bar = progress(
        total=c.num_steps,
        initial=start,
        disable=not run.is_main,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    step, record, last_time = start, {}, time.perf_counter()
    with bar:
        while step < c.num_steps:
            batch = sharding.global_batch(run.data.next_train(), run.batch_sharding)
            with_stats = c.sink_stats_every > 0 and (step + 1) % c.sink_stats_every == 0
            fn = run.train_stats_fn if with_stats else run.train_fn
            run.params, run.opt_state, metrics = fn(run.params, run.opt_state, batch)
            metrics = _scalars(jax.device_get(metrics))
            if not metrics.pop("finite"):
                save(run, ckpt, step)
                ckpt.wait()
                raise TrainingDiverged(
                    f"non-finite loss ({metrics['loss']}) or gradient norm "
                    f"({metrics['grad_norm']}) at step {step + 1}; the last good state (step "
                    f"{step}) is saved in {ckpt.directory}. Lower optim.lr, raise "
                    "optim.warmup_steps, or check the data."
                )
            step += 1
            now = time.perf_counter()
            tokens_per_s = c.tokens_per_step / max(now - last_time, 1e-9)
            last_time = now
            record = {**metrics, "lr": float(run.schedule(step - 1)), "tokens_per_s": tokens_per_s}
            postfix = {"loss": f"{metrics['loss']:.3f}", "tok/s": f"{tokens_per_s:,.0f}"}
            if run.peak_flops > 0:
                record["mfu"] = tokens_per_s * run.flops_per_token / run.peak_flops
                postfix["mfu"] = f"{record['mfu']:.1%}"
            if step % c.eval_every == 0 or step == c.num_steps:
                record.update(evaluate(run))
                postfix["val"] = f"{record['val_loss']:.3f}"
                postfix["sink@.3"] = f"{record['val_sink_rate_0.3_bos']:.0%}"
                last_time = time.perf_counter()  # evaluation time is not training throughput.
            if step % c.log_every == 0 or "val_loss" in record or with_stats:
                writer.write(step, record)
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if step % c.checkpoint_every == 0 or step == c.num_steps:
                save(run, ckpt, step)
            stopping = sharding.any_process(stop.signal is not None)  # the same on every process.
            if stopping or ckpt.manager.reached_preemption(step):
                break
    return step, record


def _write_summary(run: Run, summary: dict[str, Any]) -> None:
    if run.is_main:
        with open(os.path.join(run.workdir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)


def finish(
    run: Run,
    ckpt: ckpt_lib.Checkpointer,
    start: int,
    step: int,
    record: dict[str, Any],
    stopped_by: str | None,
) -> dict[str, Any]:
    """Save the last state and write summary.json: the final evaluation, or, for a run
    stopped early, the step and checkpoint to resume from."""
    c = run.config
    if step < c.num_steps:  # stopped by a signal (or the orbax preemption sync).
        save(run, ckpt, step)
        ckpt.wait()
        stopped_by = stopped_by or "SIGTERM"
        summary = {
            "status": "interrupted" if stopped_by == "SIGINT" else "preempted",
            "step": step,
            "signal": stopped_by,
            "checkpoint": os.path.join(ckpt.directory, str(step)),
        }
        _write_summary(run, summary)
        if run.is_main:
            print(
                f"stopped by {stopped_by} at step {step} of {c.num_steps}: saved checkpoint "
                f"{summary['checkpoint']} and {os.path.join(run.workdir, SUMMARY_FILE)}; "
                "run the same command again to resume from it.",
                file=sys.stderr,
            )
        return summary
    summary_path = os.path.join(run.workdir, SUMMARY_FILE)
    if step == start and os.path.exists(summary_path):  # finished earlier?
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("status") == "finished":
            return summary
    final = record if "val_loss" in record else evaluate(run)
    summary = {"status": "finished", "step": step}
    summary.update({k: v for k, v in final.items() if k.startswith("val_") and "scores" not in k})
    resamples = run.config.get("eval_bootstrap", 1000)
    losses = window_losses(run)
    summary["sink_profile"] = sink_eval.final_sink_profiles(
        functools.partial(sink_scores, run),
        run.sink_sets,
        out_dir=run.workdir if run.is_main else None,
        num_resamples=resamples,
        window_loss=losses,
    )
    summary["window_loss"] = sink_eval.final_window_losses(losses, run.sink_sets, resamples)
    summary["perturbation_spread"] = sink_eval.final_perturbation_spread(
        functools.partial(spread_divergence, run), run.sink_sets, num_resamples=resamples
    )
    ckpt.wait()
    _write_summary(run, summary)
    return summary


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train (or resume) the run described by `config` in `workdir`; returns the summary.

    The summary (also written to WORKDIR/summary.json) holds the final validation loss and
    sink rates once `num_steps` is reached, or the status "interrupted" (Ctrl-C) or
    "preempted" (SIGTERM) and the step saved. Raises ConfigError for a config that cannot
    run (before writing anything), TrainingDiverged on NaN/Inf (after saving the last good
    state) and CheckpointError if the newest checkpoint cannot be restored.
    """
    run = setup(config, workdir)
    ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    writer = None
    try:
        start = restore(run, ckpt)
        ckpt_lib.write_run_config(workdir, config.to_dict())
        writer = MetricsWriter(workdir, enabled=run.is_main, after_step=start)
        with StopRequest() as stop:
            step, record = run_steps(run, ckpt, writer, start, stop)
            return finish(run, ckpt, start, step, record, stop.signal)
    finally:
        ckpt.close()
        if writer is not None:
            writer.close()
