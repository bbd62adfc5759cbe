"""Checkpoints: an orbax `CheckpointManager` over `WORKDIR/checkpoints`, plus `load_model`.

Each checkpoint step holds three items, saved together (asynchronously) with the `args=` API:

    params     StandardSave   the model parameters (a nested dict of arrays)
    opt_state  StandardSave   the optax state
    meta       JsonSave       {"step", "data_state" (the loader's iterator state), "rng",
                               "config" (the run config as a dict)}

`WORKDIR/config.json` holds the run config (model config and tokenizer spec included), so a
workdir is self-describing: `load_model(workdir)` rebuilds the model from it.

A checkpoint that exists but does not restore raises `CheckpointError`; the loop never falls
back to an older one or to a fresh start silently.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """The newest checkpoint of a workdir exists but cannot be restored."""


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with the target shardings, for restoring straight onto the mesh."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


class Checkpointer:
    """Save / restore the training state of one workdir (keep-last-N, async)."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self, step: int, params: Any, opt_state: Any, meta: dict, *, force: bool = False
    ) -> bool:
        """Start saving `step` (returns at once when async; `wait()` blocks until written)."""
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=force,
        )

    def restore(
        self, step: int, abstract_params: Any, abstract_opt_state: Any
    ) -> tuple[Any, Any, dict]:
        """(params, opt_state, meta) of `step`, placed by the shardings of the abstract trees."""
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params),
                    opt_state=ocp.args.StandardRestore(abstract_opt_state),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # orbax raises many types; all mean "this checkpoint is bad".
            raise CheckpointError(
                f"checkpoint {os.path.join(self.directory, str(step))} exists but does not "
                f"restore ({type(e).__name__}; SINKS_JAX_DEBUG=1 shows orbax's error). "
                "Refusing to start from scratch: delete that folder to resume from an older "
                "step, or use a new --workdir."
            ) from e
        return out["params"], out["opt_state"], dict(out["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def write_run_config(workdir: str, config: dict) -> None:
    """Write `WORKDIR/config.json` (only process 0 writes)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_run_config(workdir: str) -> dict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir!r} is not a training workdir "
            "(run `sinks-jax train --workdir DIR` first)."
        )
    with open(path) as f:
        return json.load(f)


def load_model(workdir: str, step: int | None = None) -> tuple[Transformer, dict]:
    """The trained model of a workdir and its run config.

    Args:
      workdir: a directory written by `sinks-jax train`.
      step: checkpoint step to load; None loads the newest.

    Returns:
      (model, run_config): an NNX `Transformer` with the checkpoint's parameters on the
      default device, and the run config dict (keys `model`, `data`, ... as in configs/).
    """
    run_config = read_run_config(workdir)
    cfg = ModelConfig.from_dict(run_config["model"])
    abstract_model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        nnx.to_pure_dict(abstract_state),
    )
    ckpt = Checkpointer(workdir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first.")
    try:
        params = ckpt.manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
        )["params"]
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {os.path.join(ckpt.directory, str(step))} does not restore "
            f"({type(e).__name__}; SINKS_JAX_DEBUG=1 shows orbax's error); delete that "
            "folder to load the previous checkpoint."
        ) from e
    finally:
        ckpt.close()
    return nnx.merge(graphdef, params), run_config
