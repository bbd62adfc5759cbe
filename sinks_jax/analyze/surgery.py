"""Model surgery the measurements need: the same parameters under another backend, the
residual stream as a differentiable function of the input embeddings, and a re-run of every
layer's attention from its input.

These are model functions that reach into the decoder's internals (`Block.qkv`, the RoPE
frequencies) with default positions and no segment ids; they belong in `sinks_jax.model`,
where they can honour positions and segment ids. They are kept apart here until they move.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax import analysis
from sinks_jax.model import Transformer
from sinks_jax.model.transformer import layer_inv_freq


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


def residual_stream_fn(model: Transformer):
    """`(forward_fn, params)`: `forward_fn(params, emb_BxTxD) -> hidden [L+1, B, T, D]`.

    Differentiable in the embeddings (the model's own `hidden` statistic is stop-gradient).
    """
    graphdef, params = nnx.split(model)

    def forward_fn(params, emb_BxTxD):
        return nnx.merge(graphdef, params).residual_stream(emb_BxTxD)

    return forward_fn, params


def received_attention_model(
    model: Transformer, hidden_Lp1xBxTxD: jax.Array, valid_BxT: jax.Array
) -> jax.Array:
    """`[L, B, H, T]` attention each key receives from the valid queries, layer by layer.

    Recomputes every layer's q, k, v from its input (`hidden[l]`) and takes one VJP through
    the model's own attention backend, so no T x T map is built on fused backends.
    """
    cfg = model.config
    B, T = valid_BxT.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    graphdef, layer_state = nnx.split(model.layers)

    def per_layer(args):
        x_BxTxD, state, local = args  # local: the layer's sliding-window flag.
        layer = nnx.merge(graphdef, state)
        q, k, v = layer.qkv(x_BxTxD, positions, layer_inv_freq(cfg, local))

        def attend(q, k, v):  # the layer's own attention (window, soft-cap, backend).
            return layer.attend(q, k, v, None, local)

        return analysis.received_attention_from_qkv(q, k, v, attend, valid_BxT)

    local_L = jnp.asarray(cfg.local_layers)
    return jax.lax.map(per_layer, (hidden_Lp1xBxTxD[:-1], layer_state, local_L))
