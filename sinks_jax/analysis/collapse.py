"""Rank collapse and representational collapse of the residual stream.

Rank collapse: tokens converge to their mean, `||V - 1 mu^T||_F / ||V||_F -> 0`.
Representational collapse: the last token's representation stops depending on the input's
tail, measured either between the last two tokens of one sequence, or between a sequence and
the same sequence with its last token repeated once more.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def rank_collapse(hidden_Lp1xBxTxD: Array) -> Array:
    """`[L+1, B]`: `||V - 1 mu^T||_F / ||V||_F` with `V` the `[T, D]` token matrix, `mu` its mean row.

    0 means every token holds the same vector; values near 1 mean the mean is negligible.
    """
    V = hidden_Lp1xBxTxD.astype(jnp.float32)
    centred = V - jnp.mean(V, axis=-2, keepdims=True)
    num = jnp.sqrt(jnp.sum(centred * centred, axis=(-2, -1)))
    den = jnp.sqrt(jnp.sum(V * V, axis=(-2, -1)))
    return num / jnp.where(den > 0, den, 1.0)


def representational_collapse(hidden_Lp1xBxTxD: Array) -> Array:
    """`[L+1, B]`: `||v_{T-1} - v_{T-2}||_2`, the distance between the last two tokens."""
    V = hidden_Lp1xBxTxD.astype(jnp.float32)
    return jnp.linalg.norm(V[..., -1, :] - V[..., -2, :], axis=-1)


def repeat_last_token(tokens_BxT: Array) -> Array:
    """`[B, T+1]`: the sequence with its last token appended once more (for the 2024 form)."""
    return jnp.concatenate([tokens_BxT, tokens_BxT[:, -1:]], axis=1)


def representational_collapse_repeat(
    hidden_Lp1xBxTxD: Array, hidden_rep_Lp1xBxT1xD: Array
) -> Array:
    """`[L+1, B]`: last-token distance between a sequence and itself with the last token repeated.

    Args:
      hidden_Lp1xBxTxD: residual stream of `tokens`.
      hidden_rep_Lp1xBxT1xD: residual stream of `repeat_last_token(tokens)` (T+1 positions).
    """
    a = hidden_Lp1xBxTxD[..., -1, :].astype(jnp.float32)
    b = hidden_rep_Lp1xBxT1xD[..., -1, :].astype(jnp.float32)
    return jnp.linalg.norm(a - b, axis=-1)
