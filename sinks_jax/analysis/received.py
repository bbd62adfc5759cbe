"""Received attention (the attention each key receives), as analysis functions.

The computation is written once, in the model room (`sinks_jax.model.received`: one VJP
through any attention kernel, O(T d) memory), where the decoder's `received_attn` statistic
uses it; this module gives it its analysis names and adds the per-layer map and the
explicit-map form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sinks_jax.model.kv_heads import expand_kv as broadcast_kv_heads  # noqa: F401 (public name)
from sinks_jax.model.received import AttendFn
from sinks_jax.model.received import received_attention as received_attention_from_qkv

Array = jax.Array


def received_attention(
    q_LxBxTxHxD: Array, k_LxBxTxKxD: Array, v_LxBxTxKxD: Array, attend_fn: AttendFn
) -> Array:
    """`[L, B, H, T]`: `received_attention_from_qkv` for every layer (one layer in memory at a
    time)."""
    return jax.lax.map(
        lambda qkv: received_attention_from_qkv(*qkv, attend_fn),
        (q_LxBxTxHxD, k_LxBxTxKxD, v_LxBxTxKxD),
    )


def received_attention_from_probs(attn_LxBxHxTxT: Array) -> Array:
    """`[L, B, H, T]`: the same quantity from explicit maps (column sums over queries)."""
    return jnp.sum(attn_LxBxHxTxT.astype(jnp.float32), axis=-2)
