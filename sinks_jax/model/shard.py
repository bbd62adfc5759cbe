"""Fused attention kernels under `shard_map`: each device runs the kernel on its own rows.

Pallas, cuDNN and splash kernels are custom calls that XLA's sharding propagation cannot
split: under `jit` with a batch-sharded mesh XLA would gather the activations around them
or run them on the full batch. `per_device(kernel)` wraps a kernel in `jax.shard_map` over
the batch axes of the abstract mesh in context (`jax.sharding.use_abstract_mesh`; the train
and eval steps set it, see `train/step.py:on_mesh`), so q, k, v, the segment ids, the output
and the log-sum-exp stay sharded by rows and every device runs the kernel on its own shard.
Attention never mixes rows, so this is exact. Sink statistics computed from the LSE come out
sharded the same way.

Without a mesh in context (analysis, a single device), or when the batch does not divide
the mesh's batch axes, the kernel runs as it is and XLA places it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")  # the mesh axes that split the batch (train/sharding.py).


def batch_axes(batch: int) -> tuple[str, ...]:
    """The batch axes of the mesh in context (size > 1) to split `batch` rows over: the leading
    ones while their sizes' product divides the batch (the others replicate the work); ()
    without a mesh or when none divides."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    axes, n = [], 1
    for name in (a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1):
        if batch % (n * mesh.shape[name]):
            break
        axes.append(name)
        n *= mesh.shape[name]
    return tuple(axes)


def per_device(kernel: Callable, outputs: int = 2) -> Callable:
    """`kernel(*arrays, **kw)` run per device over the batch axes: every array argument (None
    passes through) and each of its `outputs` results has the batch as its leading axis. The
    attention kernels: `kernel(q, k, v, segment_ids, **kw) -> (out, lse)`."""

    @functools.wraps(kernel)
    def run(*arrays, **kw):
        axes = batch_axes(arrays[0].shape[0])
        if not axes:
            return kernel(*arrays, **kw)
        present = [i for i, a in enumerate(arrays) if a is not None]

        def local(*shards):
            full = list(arrays)
            for i, x in zip(present, shards):
                full[i] = x
            return kernel(*full, **kw)

        rows = P(axes)
        return jax.shard_map(
            local,
            mesh=jax.sharding.get_abstract_mesh(),
            in_specs=(rows,) * len(present),
            out_specs=(rows,) * outputs,
            check_vma=False,  # custom calls and custom VJPs carry no replication types.
        )(*(arrays[i] for i in present))

    return run
