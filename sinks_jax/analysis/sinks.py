"""Sink scores and sink rates (Gu et al., ICLR 2025), as pure array functions.

Attention maps are causal and row-stochastic: `attn[..., i, j]` is the weight query `i` puts on
key `j`, zero for `j > i`. The sink score of key `k` is the mean attention it receives from
the queries that can see it (queries `k..T-1`, query `k` itself included):

    alpha_k = 1/(T-k) * sum_{i=k}^{T-1} attn[i, k]

The sink rate at threshold `eps` thresholds every sequence's own scores (the indicator
`alpha > eps` per sequence, layer and head), averages over layers and heads, then over
sequences. It is a fraction in [0, 1]; multiply by 100 for the paper's percentages.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sink_scores(attn_LxBxHxTxT: Array, key: int | Array = 0) -> Array:
    """Gu's sink score of key `key` for every layer, sequence and head.

    Args:
      attn_LxBxHxTxT: causal attention probabilities (any leading axes work; the last two are
        query, key).
      key: the key position k (0-based; may be traced). Queries before k are ignored even if
        the map holds non-zero weights there.

    Returns:
      `[L, B, H]` (the leading axes of the input): mean over queries `i >= k` of `attn[i, k]`.
    """
    column = jnp.take(attn_LxBxHxTxT, key, axis=-1).astype(jnp.float32)  # [..., T] over queries
    return sink_scores_from_column(column, key=key)


def sink_scores_from_column(
    sink_attn_LxBxHxT: Array, key: int | Array = 0, query_mask_BxT: Array | None = None
) -> Array:
    """Sink scores from the attention each query pays to the sink key (no T x T map needed).

    Args:
      sink_attn_LxBxHxT: `sink_attn[..., i]` = attention query `i` pays to its sink key, as
        the model's `collect=("sink_attn",)` returns it (any leading axes before `[B, H, T]`
        work when no mask is given).
      key: the position of that key; queries `i < key` are excluded.
      query_mask_BxT: optional bool or 0/1 `[B, T]`: the queries that count, e.g. the real
        (non-padding) queries that can see their sink key. Under intra-document masking the
        queries of other documents cannot see key 0; counting them would halve a perfect sink
        in the first of two equal documents.

    Returns:
      `[L, B, H]`: the mean of `sink_attn[..., i]` over the counted queries `i >= key`
      (without a mask: `1/(T-key) * sum_{i>=key} sink_attn[..., i]`, Gu's alpha_key); 0 for a
      sequence with no counted query.
    """
    col = sink_attn_LxBxHxT.astype(jnp.float32)
    counted = jnp.arange(col.shape[-1]) >= key  # [T]
    if query_mask_BxT is not None:
        counted = (counted & query_mask_BxT.astype(bool))[:, None, :]  # [B, 1, T]
    total = jnp.sum(jnp.where(counted, col, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(counted, axis=-1), 1).astype(jnp.float32)


def sink_indicator(scores_LxBxH: Array, eps: float | Array) -> Array:
    """`[L, B, H]` float 0/1: whether head (l, h) is a sink on sequence b (`alpha > eps`)."""
    return (scores_LxBxH > eps).astype(jnp.float32)


def sink_rate(scores_LxBxH: Array, eps: float | Array) -> Array:
    """Fraction of (layer, head) pairs that are sinks, per sequence, then averaged over sequences.

    Args:
      scores_LxBxH: per-sequence sink scores from `sink_scores`.
      eps: threshold (Gu et al.: 0.3; the paper's Table 1: 0.8).

    Returns:
      scalar in [0, 1].
    """
    per_seq_B = jnp.mean(sink_indicator(scores_LxBxH, eps), axis=(0, 2))
    return jnp.mean(per_seq_B)


def sink_rate_per_layer(scores_LxBxH: Array, eps: float | Array) -> Array:
    """`[L]`: for each layer, the fraction of heads that are sinks, averaged over sequences."""
    return jnp.mean(sink_indicator(scores_LxBxH, eps), axis=(1, 2))


def sink_rate_per_head(scores_LxBxH: Array, eps: float | Array) -> Array:
    """`[L, H]`: for each (layer, head), the fraction of sequences on which it is a sink."""
    return jnp.mean(sink_indicator(scores_LxBxH, eps), axis=1)
