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

import functools

import jax
import jax.numpy as jnp

from sinks_jax.analysis import bootstrap

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
      query_mask_BxT: optional bool or 0/1 `[B, T]` (or `[L, B, T]`, one mask per layer, as
        `sinks_jax.model.sink_query_mask` gives for local layers): the queries that count, e.g. the real
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
    if query_mask_BxT is not None:  # [B, T], or [L, B, T] (per layer: local windows)
        counted = (counted & query_mask_BxT.astype(bool))[..., None, :]  # [(L,) B, 1, T]
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


def sink_profile(
    scores_LxBxH: Array,
    eps: float | Array,
    key: Array,
    num_resamples: int = 1000,
    level: float = 0.95,
    clusters=None,
) -> dict[str, Array]:
    """The sink rate with percentile bootstrap intervals, per layer and head.

    Sequences (axis 1) are resampled with replacement, or, with `clusters` (one id per
    sequence: the document it was cut from), whole documents are (the cluster bootstrap);
    every statistic below is a mean over sequences and uses the same resamples (see
    `sinks_jax.analysis.bootstrap`).

    Args:
      scores_LxBxH: per-sequence sink scores from `sink_scores` / `sink_scores_from_column`.
      eps: threshold (Gu et al.: 0.3; the paper's Table 1: 0.8).
      key: PRNG key of the resampling (the same key gives the same intervals).
      num_resamples: R, bootstrap resamples.
      level: coverage of the intervals (0.95: the 2.5 % and 97.5 % quantiles).
      clusters: `[B]` document ids (None: sequences are independent).

    Returns a dict of float32 arrays; `*_low`/`*_high` are the interval of the statistic:
      `rate`, `rate_low`, `rate_high`: scalars, the sink rate (as `sink_rate`);
      `layer_rate`, `layer_low`, `layer_high`: `[L]`, fraction of the layer's heads that are
        sinks (as `sink_rate_per_layer`);
      `head_rate`, `head_low`, `head_high`: `[L, H]`, fraction of sequences on which the
        head is a sink (as `sink_rate_per_head`);
      `score`, `score_low`, `score_high`: scalars, mean alpha over sequences, layers, heads;
      `head_score`: `[L, H]` mean alpha per head; `max_head_score`: its maximum;
      `num_sequences`: B; `num_documents`: the clusters resampled (B without `clusters`).

    Jitted (one compilation per shape, `num_resamples`, number of documents and `level`).
    """
    index_B, num_docs = bootstrap.cluster_index(clusters, scores_LxBxH.shape[1])
    return _sink_profile(scores_LxBxH, eps, key, index_B, num_resamples, num_docs, level)


@functools.partial(jax.jit, static_argnames=("num_resamples", "num_docs", "level"))
def _sink_profile(scores_LxBxH, eps, key, index_B, num_resamples, num_docs, level):
    B = scores_LxBxH.shape[1]
    scores_BxLxH = jnp.moveaxis(scores_LxBxH.astype(jnp.float32), 1, 0)
    sink_BxLxH = sink_indicator(scores_BxLxH, eps)
    counts_RxB = bootstrap.cluster_resample_counts(key, num_resamples, index_B, num_docs)
    head_RxLxH = bootstrap.bootstrap_means(sink_BxLxH, counts_RxB)
    score_RxLxH = bootstrap.bootstrap_means(scores_BxLxH, counts_RxB)
    out: dict[str, Array] = {}
    for name, resampled, value in (
        ("rate", head_RxLxH.mean(axis=(1, 2)), sink_BxLxH.mean()),
        ("layer", head_RxLxH.mean(axis=2), sink_BxLxH.mean(axis=(0, 2))),
        ("head", head_RxLxH, sink_BxLxH.mean(axis=0)),
        ("score", score_RxLxH.mean(axis=(1, 2)), scores_BxLxH.mean()),
    ):
        out[name if name in ("rate", "score") else f"{name}_rate"] = value
        out[f"{name}_low"], out[f"{name}_high"] = bootstrap.percentile_interval(resampled, level)
    out["head_score"] = scores_BxLxH.mean(axis=0)
    out["max_head_score"] = out["head_score"].max()
    out["num_sequences"] = jnp.asarray(B, jnp.float32)
    out["num_documents"] = jnp.asarray(num_docs, jnp.float32)
    return out
