"""Entropy of attention rows (explicit maps only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def attention_entropy(attn_LxBxHxTxT: Array) -> Array:
    """`[L, B, H, T]`: `-sum_j A[i, j] log A[i, j]` per query, in nats (0 log 0 = 0).

    A sink head has entropy near 0; uniform causal attention gives `log(i + 1)` at query i.
    """
    A = attn_LxBxHxTxT.astype(jnp.float32)
    safe = jnp.where(A > 0, A, 1.0)
    return -jnp.sum(jnp.where(A > 0, A * jnp.log(safe), 0.0), axis=-1)
