"""A `Transformer` holding a checkpoint's weights: built one parameter at a time on the host
from a weight plan and placed on the devices with a simple FSDP rule (the largest axis the
device count divides, never the stacked layer axis)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sinks_jax import progress as progress_lib
from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.pretrained.plans import weight_plan


def _fsdp_spec(shape: tuple[int, ...], n: int, per_layer: bool) -> PartitionSpec:
    """Largest axis that n divides, never the stacked layer axis; else replicate."""
    skip = 1 if per_layer else 0
    axes = [a for a in range(skip, len(shape)) if n > 1 and shape[a] % n == 0]
    if not axes:
        return PartitionSpec()
    axis = max(axes, key=lambda a: (shape[a], -a))
    return PartitionSpec(*[("fsdp" if a == axis else None) for a in range(len(shape))])


def _build(plan_entry, tensors: Any, num_layers: int, dtype: np.dtype) -> np.ndarray:
    per_layer, templates, convert = plan_entry
    layers = range(num_layers) if per_layer else [0]
    out = [
        np.asarray(convert(*[tensors.get(t.format(i=i)) for t in templates]), dtype=dtype)
        for i in layers
    ]
    return np.stack(out) if per_layer else out[0]


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def load_params(
    model_type: str,
    cfg: ModelConfig,
    tensors: Any,
    mesh: Mesh | None = None,
    progress: bool = True,
) -> Transformer:
    """A `Transformer` of `cfg` holding the checkpoint's weights, sharded over `mesh`.

    `mesh` needs an axis named "fsdp" (None: a 1-D "fsdp" mesh over all devices when there
    are several, else the default device). Parameters are built one at a time on the host.
    """
    plan = weight_plan(cfg, model_type, tensors.names)
    if mesh is None and jax.device_count() > 1:
        auto = (jax.sharding.AxisType.Auto,)  # sharding propagated by XLA, as in training.
        mesh = jax.make_mesh((jax.device_count(),), ("fsdp",), axis_types=auto)
    n = 1 if mesh is None else mesh.shape["fsdp"]
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(state)
    leaves = jax.tree_util.tree_flatten_with_path(pure)[0]
    unplanned = sorted("/".join(_path_names(p)) for p, _ in leaves if _path_names(p) not in plan)
    if unplanned:
        raise ValueError(f"{model_type}: no checkpoint weights for parameters {unplanned}.")

    it = progress_lib.progress(leaves, desc="loading weights", disable=not progress)
    new_leaves = []
    for path, leaf in it:
        key = _path_names(path)
        host = _build(plan[key], tensors, cfg.num_layers, np.dtype(leaf.dtype))
        if host.shape != tuple(leaf.shape):
            raise ValueError(
                f"{'/'.join(key)}: checkpoint gives shape {host.shape}, the config "
                f"expects {tuple(leaf.shape)}; config.json does not match the weights."
            )
        if mesh is None:
            new_leaves.append(jax.device_put(host))
        else:
            sharding = NamedSharding(mesh, _fsdp_spec(host.shape, n, plan[key][0]))
            new_leaves.append(
                jax.make_array_from_callback(host.shape, sharding, lambda idx, h=host: h[idx])
            )
        del host
    treedef = jax.tree_util.tree_structure(pure)
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, new_leaves))
    return nnx.merge(graphdef, state)
