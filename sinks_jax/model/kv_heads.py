"""Grouped-query attention's K/V broadcast: query head h reads K/V head h // (H // K)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expand_kv(x: jax.Array, num_heads: int, axis: int = 2) -> jax.Array:
    """`x` with its K/V-head axis (`axis`, of size K) repeated to `num_heads` query heads, each
    K/V head once for each of the H // K query heads it serves."""
    K = x.shape[axis]
    if num_heads % K:
        raise ValueError(
            f"num_heads={num_heads} is not a multiple of the {K} K/V heads; "
            "use a query head count divisible by the K/V head count."
        )
    return x if num_heads == K else jnp.repeat(x, num_heads // K, axis=axis)
