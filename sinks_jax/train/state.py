"""The training state on a mesh: parameters and optimizer state created already sharded."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.train import sharding


@dataclasses.dataclass
class TrainState:
    """Everything a step needs besides the batch; `abstract_*` describe shapes for restores."""

    graphdef: nnx.GraphDef
    params: dict[str, Any]  # pure dict of parameter arrays (nnx.to_pure_dict)
    opt_state: Any
    param_shardings: Any
    opt_shardings: Any
    abstract_params: Any
    abstract_opt_state: Any


def init_state(
    model_cfg: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh, seed: int
) -> TrainState:
    """Initialises the model and optimizer directly on `mesh`, sharded by the FSDP rule (no
    full copy on one device first)."""
    abstract_model = nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    abs_params = nnx.to_pure_dict(abstract_state)
    p_shard = sharding.tree_shardings(mesh, abs_params)
    abs_opt = jax.eval_shape(tx.init, abs_params)
    o_shard = sharding.tree_shardings(mesh, abs_opt)

    def init_params():
        return nnx.to_pure_dict(nnx.split(Transformer(model_cfg, rngs=nnx.Rngs(seed)))[1])

    params = jax.jit(init_params, out_shardings=p_shard)()
    opt_state = jax.jit(tx.init, in_shardings=(p_shard,), out_shardings=o_shard)(params)
    return TrainState(graphdef, params, opt_state, p_shard, o_shard, abs_params, abs_opt)
