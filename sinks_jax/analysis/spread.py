"""Perturbation spread: how far a one-token change travels through layers and positions.

Run a prompt and a copy with one token swapped (same tokenised length, so positions stay
aligned), collect both residual streams `hidden [L+1, B, T, D]` (embeddings first), and take
`||v_j^(l) - v'_j^(l)||_2` for every layer l and position j. Causality makes every position
before the swap exactly zero.

With and without `<bos>`: run the text with a leading `<bos>` (length n+1) and without it
(length n). The with-`<bos>` divergence has one extra leading position; drop it with
`drop_prefix(div, 1)` so both maps are indexed by the same text tokens before comparing.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def swap_token(tokens_BxT: Array, position: int | Array, new_token: int | Array) -> Array:
    """Copy of `tokens_BxT` with column `position` set to `new_token` in every sequence."""
    return tokens_BxT.at[:, position].set(jnp.asarray(new_token, tokens_BxT.dtype))


def swap_span(tokens_T: list[int], old: list[int], new: list[int]) -> tuple[list[int], int]:
    """Replace the first occurrence of token span `old` by `new` (same length) in a token list.

    Returns `(swapped_tokens, position_of_first_changed_token)`. Raises if `old` is absent or
    the two spans differ in length (positions after the swap would no longer align).
    """
    if len(old) != len(new):
        raise ValueError(
            f"swap spans differ in tokenised length ({len(old)} vs {len(new)} "
            f"tokens: {old} vs {new}); pick a replacement of the same length."
        )
    for start in range(len(tokens_T) - len(old) + 1):
        if list(tokens_T[start : start + len(old)]) == list(old):
            swapped = list(tokens_T[:start]) + list(new) + list(tokens_T[start + len(old) :])
            changed = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
            return swapped, start + (changed[0] if changed else 0)
    raise ValueError(f"token span {old} does not occur in the {len(tokens_T)} prompt tokens.")


def perturbation_divergence(hidden_a: Array, hidden_b: Array) -> Array:
    """`[L+1, B, T]`: `||hidden_a - hidden_b||_2` over the feature axis, in float32.

    Args:
      hidden_a, hidden_b: residual streams `[L+1, B, T, D]` of the original and the
        perturbed tokens (same shape).
    """
    if hidden_a.shape != hidden_b.shape:
        raise ValueError(
            f"hidden shapes differ: {hidden_a.shape} vs {hidden_b.shape}; both "
            "runs need the same number of tokens (swap same-length spans)."
        )
    diff = hidden_a.astype(jnp.float32) - hidden_b.astype(jnp.float32)
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def drop_prefix(values_xT: Array, n: int = 1) -> Array:
    """Drop the first `n` positions of the last axis (e.g. the `<bos>` column)."""
    return values_xT[..., n:]


def relative_divergence(div_Lp1xBxT: Array, hidden_Lp1xBxTxD: Array) -> Array:
    """`[L+1, B, T]`: divergence divided by the unperturbed norm `||v_j^(l)||` (0 where it is 0)."""
    norm = jnp.linalg.norm(hidden_Lp1xBxTxD.astype(jnp.float32), axis=-1)
    return jnp.where(norm > 0, div_Lp1xBxT / jnp.where(norm > 0, norm, 1.0), 0.0)


def spread_ratio(
    div_with_LxT, div_without_LxT, start: int, seed: int = 0, num_resamples: int = 1000,
    level: float = 0.95,
):
    """Per layer, the mean spread over text positions `start..T-1` with `<bos>` divided by the
    mean without it, and a percentile bootstrap interval over those positions (paired: each
    resample draws the same positions for both reads). numpy in, numpy out: `(ratio_L, low_L,
    high_L)`, NaN where the spread without `<bos>` is 0 (the embeddings' row).

    Args:
      div_with_LxT, div_without_LxT: spread maps indexed by the same text tokens (drop the
        `<bos>` column first, `drop_prefix`).
      start: the first position after the swap (the change reaches it only through attention).

    The positions of one prompt are not independent draws, so the interval says how much the
    ratio varies along this prompt, not across prompts.
    """
    a = np.asarray(div_with_LxT, np.float64)[:, start:]
    b = np.asarray(div_without_LxT, np.float64)[:, start:]
    if a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(f"spread_ratio: maps {a.shape} and {b.shape} after position {start} "
                         "must have the same shape and at least one position.")
    rng = np.random.default_rng(seed)
    weights_RxN = np.zeros((num_resamples, a.shape[1]))
    draws = rng.integers(0, a.shape[1], size=(num_resamples, a.shape[1]))
    np.add.at(weights_RxN, (np.arange(num_resamples)[:, None], draws), 1.0)

    def ratio(num, den):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    ratio_L = ratio(a.mean(axis=1), b.mean(axis=1))
    resampled_RxL = ratio(weights_RxN @ a.T, weights_RxN @ b.T)  # the weights' sums cancel
    tail = 100 * (1.0 - level) / 2.0
    with warnings.catch_warnings():  # a layer where every resample is NaN stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low_L, high_L = np.nanpercentile(resampled_RxL, [tail, 100 - tail], axis=0)
    return ratio_L, low_L, high_L
