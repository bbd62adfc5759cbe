"""Model surgery: the same parameters under another backend, the residual stream as a
differentiable function of the input embeddings, and every layer's attention re-run from its
input to give the attention each key receives.

Each takes the `segment_ids` and `positions` the forward pass takes (None: one document,
positions 0..T-1), so what it computes is what `Transformer.__call__` computes for them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model.rope import layer_inv_freq
from sinks_jax.model.transformer import Transformer, default_positions


def with_backend(model: Transformer, backend: str, dtype: str | None = None) -> Transformer:
    """The same parameters under another attention backend (e.g. "xla" for full maps) and,
    optionally, another compute dtype."""
    cfg = model.config
    dtype = dtype or cfg.dtype
    if cfg.attention == backend and cfg.dtype == dtype:
        return model
    abstract = nnx.eval_shape(
        lambda: Transformer(cfg.replace(attention=backend, dtype=dtype), rngs=nnx.Rngs(0))
    )
    graphdef, _ = nnx.split(abstract)
    return nnx.merge(graphdef, nnx.state(model))


def residual_stream_fn(
    model: Transformer, segment_ids: jax.Array | None = None, positions: jax.Array | None = None
):
    """`(forward_fn, params)`: `forward_fn(params, emb_BxTxD) -> hidden [L+1, B, T, D]`, the
    model's `residual_stream` for these segment ids and positions.

    Differentiable in the embeddings (the model's own `hidden` statistic is stop-gradient).
    """
    graphdef, params = nnx.split(model)

    def forward_fn(params, emb_BxTxD):
        return nnx.merge(graphdef, params).residual_stream(emb_BxTxD, segment_ids, positions)

    return forward_fn, params


def received_attention_model(
    model: Transformer,
    hidden_Lp1xBxTxD: jax.Array,
    valid_BxT: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    positions: jax.Array | None = None,
) -> jax.Array:
    """`[L, B, H, T]` attention each key receives from the queries weighted by `valid_BxT`
    (None: every query counts once), layer by layer, from the residual stream `hidden`.

    Re-projects every layer's q, k, v from its input (`hidden[l]`) and takes the layer's own
    `Block.received_attention` (one VJP through its backend, no T x T map on fused
    backends): with `valid_BxT` None it is the `received_attn` statistic of the forward pass
    with the same segment ids and positions.
    """
    cfg = model.config
    B, T = hidden_Lp1xBxTxD.shape[1:3]
    positions = default_positions((B, T)) if positions is None else positions
    graphdef, layer_state = nnx.split(model.layers)

    def per_layer(args):
        x_BxTxD, state, local = args  # local: the layer's sliding-window flag.
        layer = nnx.merge(graphdef, state)
        q, k, v = layer.qkv(x_BxTxD, positions, layer_inv_freq(cfg, local))
        return layer.received_attention(q, k, v, segment_ids, local, valid_BxT)

    local_L = jnp.asarray(cfg.local_layers)
    return jax.lax.map(per_layer, (hidden_Lp1xBxTxD[:-1], layer_state, local_L))
