"""Value norms and approximate no-op scores.

A head whose attention sits on a token with a tiny value vector adds almost nothing to the
residual stream: an approximate no-op. `value_norms` come from the model
(`collect=("value_norms",)`, `||W_V x_j||` per query head) or from `value_norms` below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def value_norms(v_BxTxHxD: Array) -> Array:
    """`[B, H, T]`: `||v_j||_2` per head and token from one layer's value vectors."""
    return jnp.linalg.norm(v_BxTxHxD.astype(jnp.float32), axis=-1).transpose(0, 2, 1)


def sink_value_ratio(value_norms_LxBxHxT: Array, key: int = 0) -> Array:
    """`[L, B, H]`: `||v_key||` divided by the mean value norm of the other tokens.

    Below 1 the sink token carries a smaller value than the rest.
    """
    vn = value_norms_LxBxHxT.astype(jnp.float32)
    T = vn.shape[-1]
    others = (jnp.sum(vn, axis=-1) - vn[..., key]) / max(T - 1, 1)
    return vn[..., key] / jnp.where(others > 0, others, 1.0)


def noop_score(attn_LxBxHxTxT: Array, value_norms_LxBxHxT: Array) -> Array:
    """`[L, B, H, T]`: how little each head writes at each query, relative to uniform mixing.

    `sum_j A[i, j] ||v_j|| / mean_{j <= i} ||v_j||`: the triangle-inequality bound on the head's
    output norm at query i, divided by the bound under uniform causal attention. Values well
    below 1 mean the head attends to small-norm values (an approximate no-op); 1 is uniform.
    """
    A = attn_LxBxHxTxT.astype(jnp.float32)
    vn = value_norms_LxBxHxT.astype(jnp.float32)
    T = vn.shape[-1]
    written = jnp.einsum("...ij,...j->...i", A, vn)
    uniform = jnp.cumsum(vn, axis=-1) / jnp.arange(1, T + 1, dtype=jnp.float32)
    return written / jnp.where(uniform > 0, uniform, 1.0)
