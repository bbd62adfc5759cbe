"""Percentile bootstrap over items (sequences), as pure functions of a PRNG key.

A bootstrap resample draws N items with replacement from N; it is stored as *counts*
`[R, N]` (how often each item was drawn in each of R resamples), so the resampled means of
any number of per-item statistics are one matrix product, `counts @ values / N`, and
several statistics share the same resamples (their intervals are consistent with each
other). The interval at `level` is the percentile interval: the `(1 - level) / 2` and
`(1 + level) / 2` quantiles of the resampled means (linear interpolation).

The items are assumed exchangeable: windows cut from the same document are correlated, so
intervals over such windows are somewhat narrower than intervals over documents would be.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def resample_counts(key: Array, num_resamples: int, num_items: int) -> Array:
    """`[R, N]` float32: times item n is drawn in resample r (each row sums to N)."""
    idx_RxN = jax.random.randint(key, (num_resamples, num_items), 0, num_items)
    rows_Rx1 = jnp.arange(num_resamples)[:, None]
    return jnp.zeros((num_resamples, num_items), jnp.float32).at[rows_Rx1, idx_RxN].add(1.0)


def bootstrap_means(values_NxK: Array, counts_RxN: Array) -> Array:
    """`[R, ...]`: the mean over items of `values` (items on axis 0) in every resample."""
    n = values_NxK.shape[0]
    flat_NxK = values_NxK.reshape(n, -1).astype(jnp.float32)
    means_RxK = counts_RxN @ flat_NxK / n
    return means_RxK.reshape(counts_RxN.shape[:1] + values_NxK.shape[1:])


def percentile_interval(means_Rx: Array, level: float = 0.95) -> tuple[Array, Array]:
    """(low, high) `[...]`: the percentile interval of resampled means `[R, ...]`."""
    tail = (1.0 - level) / 2.0
    low, high = jnp.quantile(means_Rx, jnp.array([tail, 1.0 - tail]), axis=0)
    return low, high


@functools.partial(jax.jit, static_argnames=("num_resamples", "level"))
def bootstrap_interval(
    values_NxK: Array, key: Array, num_resamples: int = 1000, level: float = 0.95
) -> tuple[Array, Array, Array]:
    """(mean, low, high), each `[...]`: the mean over items (axis 0) of `values` and its
    percentile bootstrap interval at `level` from `num_resamples` resamples of the items."""
    counts_RxN = resample_counts(key, num_resamples, values_NxK.shape[0])
    low, high = percentile_interval(bootstrap_means(values_NxK, counts_RxN), level)
    return jnp.mean(values_NxK.astype(jnp.float32), axis=0), low, high
