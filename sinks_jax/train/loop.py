"""The training loop: build everything from a config, resume, train, evaluate, checkpoint.

    summary = train(config, workdir)

Per step: one jitted update over `tokens_per_step` tokens (micro-batches scanned inside the
step). Every `sink_stats_every` steps the step variant that also returns sink statistics of
its own forward pass at full context runs instead. Every `eval_every` steps (and at the end):
validation loss on a fixed set of held-out batches, and, at T = 64 on held-out documents with
and without a leading `<bos>`, sink scores / rates and the next-token loss on the same targets
(`val_loss_bos`, `val_loss_nobos`). Metrics go to `metrics.jsonl` and TensorBoard; a tqdm bar
shows loss, tokens/s and MFU. A non-finite loss or gradient stops the run after saving the
last good state; SIGTERM saves and exits cleanly.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from sinks_jax import analysis
from sinks_jax.model import ModelConfig
from sinks_jax.train import checkpoint as ckpt_lib
from sinks_jax.train import flops, optim, sharding
from sinks_jax.train import state as state_lib
from sinks_jax.train import step as step_lib
from sinks_jax.train.data import DataPipeline

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.file = open(os.path.join(workdir, METRICS_FILE), "a")  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(workdir, "tb"))
        except ImportError:  # TensorBoard output is optional.
            self.tb = None

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **record}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        out[k] = v.item() if v.ndim == 0 else v.tolist()
    return out


def validate_config(config: ml_collections.ConfigDict, model_cfg: ModelConfig) -> None:
    """Cross-field checks that the individual dataclasses cannot do."""
    if (
        config.data.packing == "fixed_bos"
        and config.data.intra_doc
        and not model_cfg.global_first_key
    ):
        raise ValueError(
            "data.packing='fixed_bos' with data.intra_doc=True needs model.global_first_key=True "
            "(the fixed <bos> at position 0 must stay visible to every document); set "
            "--config.model.global_first_key=True."
        )
    if model_cfg.attention == "cudnn" and config.data.intra_doc:
        raise ValueError(
            "model.attention='cudnn' has no segment masking; with data.intra_doc=True use "
            "model.attention='pallas' or 'blockwise'."
        )


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train (or resume) the run described by `config` in `workdir`; returns the summary.

    The summary (also written to WORKDIR/summary.json once `num_steps` is reached) holds the
    final validation loss and sink rates. Raises TrainingDiverged on NaN/Inf (after saving
    the last good state) and CheckpointError if the newest checkpoint cannot be restored.
    """
    sharding.maybe_initialize_distributed()
    is_main = jax.process_index() == 0
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    validate_config(config, model_cfg)
    mesh = sharding.make_mesh(config.mesh)
    n_dev = mesh.devices.size
    k = optim.accumulation_steps(config.tokens_per_step, config.seq_len, config.micro_batch_size)
    micro_batch = config.tokens_per_step // config.seq_len // k
    if micro_batch % n_dev or micro_batch % jax.process_count():
        raise ValueError(
            f"micro-batch of {micro_batch} sequences does not split over {n_dev} devices; "
            "make micro_batch_size (and tokens_per_step/seq_len) a multiple of the device count."
        )

    data = DataPipeline(config, micro_batch=micro_batch, accumulation=k)
    if data.vocab_size > model_cfg.vocab_size:
        raise ValueError(
            f"tokenizer {config.data.tokenizer!r} has {data.vocab_size} ids but "
            f"model.vocab_size={model_cfg.vocab_size}; set --config.model.vocab_size={data.vocab_size}."
        )
    run_config = config.to_dict()
    ckpt_lib.write_run_config(workdir, run_config)

    # Parameters are created directly on the mesh, sharded by the FSDP rule.
    tx = optim.make_optimizer(config.optim, config.num_steps)
    state = state_lib.init_state(model_cfg, tx, mesh, config.seed)
    graphdef, params, opt_state = state.graphdef, state.params, state.opt_state
    p_shard, o_shard = state.param_shardings, state.opt_shardings
    abs_params, abs_opt = state.abstract_params, state.abstract_opt_state
    repl = sharding.replicated(mesh)

    ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        params, opt_state, meta = ckpt.restore(
            latest,
            ckpt_lib.abstract_like(abs_params, p_shard),
            ckpt_lib.abstract_like(abs_opt, o_shard),
        )
        data.set_state(meta["data_state"])
        start = int(meta["step"])
        if is_main:
            print(f"resumed from {ckpt.directory}/{latest} (step {start})")

    use_segments = bool(config.data.intra_doc)
    kw = {
        "param_shardings": p_shard,
        "opt_shardings": o_shard,
        "batch_sharding": sharding.batch_sharding(mesh, accumulate=True),
        "replicated": repl,
        "use_segments": use_segments,
    }
    train_fn = step_lib.make_train_step(graphdef, tx, **kw, sink_stats=False)
    train_stats_fn = step_lib.make_train_step(graphdef, tx, **kw, sink_stats=True)
    eval_fn = step_lib.make_eval_step(
        graphdef,
        param_shardings=p_shard,
        batch_sharding=sharding.batch_sharding(mesh, accumulate=False),
        replicated=repl,
        use_segments=use_segments,
    )
    bos_eval_fn = step_lib.make_bos_eval(graphdef, param_shardings=p_shard, replicated=repl)
    val_batches = data.validation_batches(config.eval_batches)
    sink_sets = data.sink_eval_sequences(config.eval_sink_sequences, config.eval_sink_len)
    batch_sh = sharding.batch_sharding(mesh, accumulate=False)

    def evaluate() -> dict[str, Any]:
        total = count = 0.0
        for b in val_batches:
            s, c = eval_fn(params, sharding.global_batch(b, batch_sh))
            total, count = total + float(s), count + float(c)
        out: dict[str, Any] = {"val_loss": total / max(count, 1.0)}
        res = bos_eval_fn(params, *(jax.device_put(sink_sets[n], repl) for n in ("bos", "nobos")))
        targets = sink_sets["nobos"].shape[0] * (sink_sets["nobos"].shape[1] - 1)
        for name in ("bos", "nobos"):
            # Table 2's loss column: the same held-out targets with and without <bos>.
            out[f"val_loss_{name}"] = float(res[f"nll_{name}"].sum()) / targets
            scores_LxBxH = res[f"scores_{name}"]
            for eps in step_lib.SINK_EPS:
                out[f"val_sink_rate_{eps}_{name}"] = float(analysis.sink_rate(scores_LxBxH, eps))
            out[f"val_sink_score_{name}"] = float(scores_LxBxH.mean())
            out[f"val_sink_scores_{name}"] = np.asarray(scores_LxBxH.mean(axis=1)).tolist()
        return out

    flops_per_token = flops.train_flops_per_token(model_cfg, config.seq_len)
    peak = flops.peak_flops_per_device(config.get("peak_flops_per_device", 0.0)) * n_dev
    schedule = optim.make_schedule(config.optim, config.num_steps)
    writer = MetricsWriter(workdir, enabled=is_main)
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    previous_handler = signal.signal(signal.SIGTERM, on_signal)

    def save(step: int, force: bool) -> None:
        if step in ckpt.manager.all_steps():  # e.g. a periodic save just wrote this step.
            return
        meta = {
            "step": step,
            "data_state": data.get_state(),
            "rng": {"seed": config.seed},
            "config": run_config,
        }
        ckpt.save(step, params, opt_state, meta, force=force)

    summary: dict[str, Any] = {}
    bar = tqdm(
        total=config.num_steps, initial=start, disable=not is_main, desc="train", dynamic_ncols=True
    )
    last_time, step = time.perf_counter(), start
    try:
        while step < config.num_steps:
            batch = sharding.global_batch(data.next_train(), kw["batch_sharding"])
            with_stats = config.sink_stats_every > 0 and (step + 1) % config.sink_stats_every == 0
            fn = train_stats_fn if with_stats else train_fn
            params, opt_state, metrics = fn(params, opt_state, batch)
            metrics = _scalars(jax.device_get(metrics))
            if not metrics.pop("finite"):
                save(step, force=True)
                ckpt.wait()
                raise TrainingDiverged(
                    f"non-finite loss ({metrics['loss']}) or gradient norm "
                    f"({metrics['grad_norm']}) at step {step + 1}; the last good state (step "
                    f"{step}) is saved in {ckpt.directory}. Lower optim.lr, raise "
                    "optim.warmup_steps, or check the data."
                )
            step += 1
            now = time.perf_counter()
            tokens_per_s = config.tokens_per_step / max(now - last_time, 1e-9)
            last_time = now
            record = {**metrics, "lr": float(schedule(step - 1)), "tokens_per_s": tokens_per_s}
            if peak > 0:
                record["mfu"] = tokens_per_s * flops_per_token / peak
            postfix = {"loss": f"{metrics['loss']:.3f}", "tok/s": f"{tokens_per_s:,.0f}"}
            if "mfu" in record:
                postfix["mfu"] = f"{record['mfu']:.1%}"
            if step % config.eval_every == 0 or step == config.num_steps:
                record.update(evaluate())
                postfix["val"] = f"{record['val_loss']:.3f}"
                postfix["sink@.3"] = f"{record['val_sink_rate_0.3_bos']:.0%}"
                last_time = time.perf_counter()  # evaluation time is not training throughput.
            if step % config.log_every == 0 or "val_loss" in record or with_stats:
                writer.write(step, record)
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if step % config.checkpoint_every == 0 or step == config.num_steps:
                save(step, force=True)
            if stop["signal"] is not None or ckpt.manager.reached_preemption(step):
                save(step, force=True)
                ckpt.wait()
                if is_main:
                    bar.write(
                        f"stopped by signal at step {step}; checkpoint saved, rerun to resume."
                    )
                return {"status": "preempted", "step": step}
        summary_path = os.path.join(workdir, SUMMARY_FILE)
        if step == start and os.path.exists(summary_path):  # already finished earlier.
            with open(summary_path) as f:
                summary = json.load(f)
        else:
            final = record if step > start else evaluate()
            summary = {"status": "finished", "step": step}
            summary.update(
                {k: v for k, v in final.items() if k.startswith("val_") and "scores" not in k}
            )
            ckpt.wait()
            if is_main:
                with open(summary_path, "w") as f:
                    json.dump(summary, f, indent=2)
    finally:
        bar.close()
        ckpt.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous_handler)
    return summary
