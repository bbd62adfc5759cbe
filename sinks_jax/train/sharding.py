"""Device mesh and FSDP sharding rules.

The mesh has two axes: `data` (pure data parallelism: parameters replicated) and `fsdp`
(data parallelism with parameters and optimizer state sharded, gathered per layer by XLA).
Batches are split over both axes. The rule for a parameter (or optimizer-state leaf): shard
its largest axis that the `fsdp` size divides; never the stacked layer axis (so the scan over
layers slices an unsharded axis); replicate if no axis fits.

Multi-process runs (TPU pods, multi-node GPU, launch/multiprocess.sh) call
`jax.distributed.initialize()` first (see `maybe_initialize_distributed`); every process then
feeds its own slice of the global batch and `global_batch` assembles it with
`jax.make_array_from_process_local_data`. Every process runs the same steps, so a decision
that one process takes alone (stop after this step) goes through `any_process` first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sinks_jax.model.shard import BATCH_AXES  # the batch axes, declared once.
from sinks_jax.train.optim import LAYER_AXIS_KEY, key_names


def maybe_initialize_distributed() -> None:
    """Call `jax.distributed.initialize()` when launched as one of several processes.

    - `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` set (launch/local.sh):
      initialise with them explicitly;
    - `SINKS_JAX_DISTRIBUTED=1` (launch/tpu_pod.sh, launch/slurm_gpu.sbatch): let JAX detect
      the cluster (TPU VM metadata, SLURM variables);
    - otherwise (one process) do nothing.

    On CPU, collectives between processes need `jax_cpu_collectives_implementation="gloo"`
    (TCP between the processes, set up through the coordinator). jax 0.10.2 defaults to it;
    where the option is unset (None, as in older jax) it is set here, before the CPU backend
    starts. GPUs (NCCL) and TPUs ignore it.
    """
    if _distributed_is_initialized():
        return
    env = os.environ
    explicit = "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env
    if not explicit and env.get("SINKS_JAX_DISTRIBUTED", "0") != "1":
        return
    if getattr(jax.config, "jax_cpu_collectives_implementation", "") is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env.get("JAX_PROCESS_ID", "0")),
        )
    else:
        jax.distributed.initialize()


def _distributed_is_initialized() -> bool:
    return jax.distributed.is_initialized()


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process; all processes call it together (with one process:
    `flag`). A decision such as "stop after this step" (a signal reaches one host first, or
    only one) must be taken by every process alike: one that stops alone leaves the others
    waiting for it in the next collective, forever."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def make_mesh(mesh_cfg: Mapping[str, Any]) -> Mesh:
    """A `(data, fsdp)` mesh over all devices; a size of -1 takes the remaining devices."""
    n = jax.device_count()
    data, fsdp = int(mesh_cfg.get("data", -1)), int(mesh_cfg.get("fsdp", 1))
    if data == -1 and fsdp == -1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1; set one of them.")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data * fsdp != n or data < 1 or fsdp < 1:
        raise ValueError(
            f"mesh.data={data} x mesh.fsdp={fsdp} does not match the {n} devices; "
            "set one of them to -1 to use all devices."
        )
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, fsdp), ("data", "fsdp"), axis_types=auto)


def fsdp_spec(path, shape: tuple[int, ...], fsdp_size: int) -> P:
    """PartitionSpec of one parameter: its largest `fsdp`-divisible axis (not the layer axis)."""
    if fsdp_size <= 1 or len(shape) == 0:
        return P()
    skip = 1 if LAYER_AXIS_KEY in key_names(path) else 0
    candidates = [a for a in range(skip, len(shape)) if shape[a] % fsdp_size == 0]
    if not candidates:
        return P()
    axis = max(candidates, key=lambda a: (shape[a], -a))
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return P(*spec)


def tree_shardings(mesh: Mesh, tree: Any) -> Any:
    """NamedShardings for every array leaf of `tree` (params or optimizer state) by the rule."""
    fsdp_size = mesh.shape["fsdp"]

    def one(path, leaf):
        return NamedSharding(mesh, fsdp_spec(path, tuple(np.shape(leaf)), fsdp_size))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, accumulate: bool) -> NamedSharding:
    """Sharding of a `[B, T]` batch (or `[k, B, T]` with micro-batches): B over (data, fsdp)."""
    spec = P(None, BATCH_AXES) if accumulate else P(BATCH_AXES)
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Global arrays from this process's rows of the batch (all processes call it together).

    `local[name]` holds this process's share along the batch axis (axis 0, or 1 with
    micro-batches); with one process it is the whole batch.
    """
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }
