"""Percentile bootstrap intervals: over items (windows), over documents, over seeds then documents.

Every scheme stores a resample as *weights* over the N items: `w[r, n]` is how often item n
enters resample r, and a resampled mean is `sum_n w[r, n] x[n] / sum_n w[r, n]`. So the
resampled means of any number of per-item statistics are one matrix product, and several
statistics share the same resamples (their intervals are consistent with each other). The
interval at `level` is the percentile interval: the `(1 - level) / 2` and `(1 + level) / 2`
quantiles of the resampled means (linear interpolation).

- **Items** (`resample_counts`): N items drawn with replacement from N; `w` = the counts.
  Right when the items are independent.
- **Documents** (`cluster_resample_counts`, the cluster bootstrap): items carry a cluster id
  (the document a held-out window was cut from); the G clusters are drawn with replacement,
  G from G, and every item of a drawn cluster comes along, so `w[r, n]` = how often item n's
  cluster was drawn and the resampled mean is the mean over the drawn documents' windows
  (each document as often as it was drawn). Windows of one document are correlated; this
  resamples the unit that was sampled. With one item per cluster it is the item bootstrap,
  draw for draw (same key, same counts).
- **Seeds, then documents** (`hierarchical_resamples`, numpy): for comparisons between
  configurations trained with several seeds, each evaluated on the same held-out windows.
  Each resample first draws, for every configuration, its seeds with replacement (S from S);
  then one draw of documents, shared by every run of the resample, so that differences stay
  paired over documents. A configuration's value is the mean over its drawn seeds. With S
  seeds the plain bootstrap of a mean has variance `(S - 1) / S` times the usual `s^2 / S`
  (half of it at S = 2), so each run's deviation from its configuration's mean is first
  scaled by `sqrt(S / (S - 1))`. A configuration with one run has no seed spread of its own:
  it takes a normal shift with the standard deviation passed as `single_seed_sd` (e.g.
  `pooled_seed_sd` of the configurations that do have several seeds), or none.

The jax functions (`resample_counts`, `cluster_resample_counts`, `bootstrap_means`,
`bootstrap_interval`) are pure functions of a PRNG key; the numpy ones (`np_*`,
`hierarchical_resamples`, ...) take a `numpy.random.Generator` and serve the offline analysis
of finished runs (`results/analysis.py`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

Z_975 = 1.959963984540054  # standard normal quantiles: two-sided 5 % test ...
Z_80 = 0.8416212335729143  # ... with 80 % power.


def cluster_index(clusters_N, num_items: int | None = None) -> tuple[np.ndarray, int]:
    """`(index_N, G)`: each item's cluster as 0..G-1 (in sorted order of the ids) and the
    number of clusters. `clusters_N=None`: every item is its own cluster (`num_items` items)."""
    if clusters_N is None:
        if num_items is None:
            raise ValueError("cluster_index: pass the cluster ids or the number of items.")
        return np.arange(num_items, dtype=np.int32), int(num_items)
    ids = np.asarray(clusters_N).reshape(-1)
    if num_items is not None and ids.size != num_items:
        raise ValueError(f"{ids.size} cluster ids for {num_items} items; pass one id per item.")
    uniq, index = np.unique(ids, return_inverse=True)
    return index.astype(np.int32), int(uniq.size)


def resample_counts(key: Array, num_resamples: int, num_items: int) -> Array:
    """`[R, N]` float32: times item n is drawn in resample r (each row sums to N)."""
    idx_RxN = jax.random.randint(key, (num_resamples, num_items), 0, num_items)
    rows_Rx1 = jnp.arange(num_resamples)[:, None]
    return jnp.zeros((num_resamples, num_items), jnp.float32).at[rows_Rx1, idx_RxN].add(1.0)


def cluster_resample_counts(
    key: Array, num_resamples: int, index_N: Array, num_clusters: int
) -> Array:
    """`[R, N]` float32: times item n's cluster is drawn in resample r (G clusters drawn with
    replacement from G; `index_N` from `cluster_index`). Singleton clusters (`index_N =
    arange(N)`) give exactly `resample_counts(key, R, N)`."""
    per_cluster_RxG = resample_counts(key, num_resamples, num_clusters)
    return per_cluster_RxG[:, jnp.asarray(index_N)]


def bootstrap_means(values_NxK: Array, counts_RxN: Array) -> Array:
    """`[R, ...]`: the weighted mean over items (axis 0) of `values` in every resample, with
    the resample's weights `counts_RxN` (item or cluster counts)."""
    n = values_NxK.shape[0]
    flat_NxK = values_NxK.reshape(n, -1).astype(jnp.float32)
    total_Rx1 = jnp.maximum(counts_RxN.sum(axis=1, keepdims=True), 1e-30)
    means_RxK = counts_RxN @ flat_NxK / total_Rx1
    return means_RxK.reshape(counts_RxN.shape[:1] + values_NxK.shape[1:])


def percentile_interval(means_Rx: Array, level: float = 0.95) -> tuple[Array, Array]:
    """(low, high) `[...]`: the percentile interval of resampled means `[R, ...]`."""
    tail = (1.0 - level) / 2.0
    low, high = jnp.quantile(means_Rx, jnp.array([tail, 1.0 - tail]), axis=0)
    return low, high


@functools.partial(jax.jit, static_argnames=("num_resamples", "num_clusters", "level"))
def _interval(values_NxK, key, index_N, num_resamples, num_clusters, level):
    counts_RxN = cluster_resample_counts(key, num_resamples, index_N, num_clusters)
    low, high = percentile_interval(bootstrap_means(values_NxK, counts_RxN), level)
    return jnp.mean(values_NxK.astype(jnp.float32), axis=0), low, high


def bootstrap_interval(
    values_NxK: Array,
    key: Array,
    num_resamples: int = 1000,
    level: float = 0.95,
    clusters=None,
) -> tuple[Array, Array, Array]:
    """(mean, low, high), each `[...]`: the mean over items (axis 0) of `values` and its
    percentile bootstrap interval at `level` from `num_resamples` resamples, of the items
    (`clusters=None`) or of their clusters (`clusters`: one id per item, e.g. the document
    each window comes from). Jitted per shape, R, number of clusters and level."""
    index_N, num_clusters = cluster_index(clusters, values_NxK.shape[0])
    return _interval(values_NxK, key, index_N, num_resamples, num_clusters, level)


# ---------------------------------------------------------------- numpy: offline analysis


def np_resample_weights(
    rng: np.random.Generator, num_resamples: int, clusters_N=None, num_items: int | None = None
) -> np.ndarray:
    """`[R, N]` float64 weights of a bootstrap over items (`clusters_N=None`) or clusters."""
    index_N, g = cluster_index(clusters_N, num_items)
    draws_RxG = rng.integers(0, g, size=(num_resamples, g))
    per_cluster_RxG = np.zeros((num_resamples, g))
    np.add.at(per_cluster_RxG, (np.arange(num_resamples)[:, None], draws_RxG), 1.0)
    return per_cluster_RxG[:, index_N]


def np_weighted_means(values_NxK: np.ndarray, weights_RxN: np.ndarray) -> np.ndarray:
    """`[R, ...]` weighted means over items (axis 0), one per resample."""
    v = np.asarray(values_NxK, np.float64)
    flat = v.reshape(v.shape[0], -1)
    out = weights_RxN @ flat / weights_RxN.sum(axis=1, keepdims=True)
    return out.reshape((weights_RxN.shape[0],) + v.shape[1:])


def np_interval(resampled_Rx: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): percentile interval of resampled statistics `[R, ...]`."""
    tail = 100 * (1.0 - level) / 2.0
    low, high = np.percentile(resampled_Rx, [tail, 100 - tail], axis=0)
    return low, high


def cluster_interval(
    values_NxK, clusters_N, rng: np.random.Generator, num_resamples: int = 10_000,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high): mean over items and its bootstrap interval over clusters (numpy;
    `clusters_N=None`: over items)."""
    v = np.asarray(values_NxK, np.float64)
    w = np_resample_weights(rng, num_resamples, clusters_N, v.shape[0])
    low, high = np_interval(np_weighted_means(v, w), level)
    return v.mean(axis=0), low, high


def seed_inflation(num_seeds: int) -> float:
    """`sqrt(S / (S - 1))`: the scale of each run's deviation from its configuration's mean
    that makes the bootstrap variance of an S-seed mean equal `s^2 / S` (1 for S = 1)."""
    return math.sqrt(num_seeds / (num_seeds - 1)) if num_seeds > 1 else 1.0


def hierarchical_resamples(
    groups: Sequence[np.ndarray],
    clusters_N,
    rng: np.random.Generator,
    num_resamples: int = 10_000,
    single_seed_sd: float | Sequence[float | None] | None = None,
    inflate: bool = True,
) -> np.ndarray:
    """`[num_groups, R]`: each configuration's resampled value (mean over windows of the mean
    over its drawn seeds), seeds then documents (see the module docstring).

    Args:
      groups: one array per configuration, `[S_g, N]` (or `[N]` for one run): a per-window
        statistic of each of its S_g runs, every run on the same N windows.
      clusters_N: the document of each window (None: windows are resampled one by one).
      single_seed_sd: the seed standard deviation given to a configuration with one run (a
        float for all, or one per group; None: no seed term for it).
      inflate: scale run deviations by `seed_inflation(S)` (see the module docstring).
    Differences between rows of the result (`out[a] - out[b]`) are paired over documents and
    use the same draws, so any combination of configurations gets its interval from them.
    """
    runs = [np.atleast_2d(np.asarray(g, np.float64)) for g in groups]
    n = runs[0].shape[1]
    if any(r.shape[1] != n for r in runs):
        raise ValueError("hierarchical_resamples: every run must be scored on the same windows.")
    sds = single_seed_sd
    if not isinstance(sds, (list, tuple)):
        sds = [sds] * len(runs)
    w_RxN = np_resample_weights(rng, num_resamples, clusters_N, n)
    w_RxN = w_RxN / w_RxN.sum(axis=1, keepdims=True)
    out = np.empty((len(runs), num_resamples))
    for g, (v_SxN, sd) in enumerate(zip(runs, sds)):
        s = v_SxN.shape[0]
        if s == 1:
            out[g] = w_RxN @ v_SxN[0]
            if sd:
                out[g] += rng.normal(0.0, float(sd), size=num_resamples)
            continue
        mean_N = v_SxN.mean(axis=0)
        c = seed_inflation(s) if inflate else 1.0
        dev_SxN = mean_N + c * (v_SxN - mean_N)
        draws_RxS = rng.integers(0, s, size=(num_resamples, s))
        seed_w_RxS = np.zeros((num_resamples, s))
        np.add.at(seed_w_RxS, (np.arange(num_resamples)[:, None], draws_RxS), 1.0 / s)
        # sum_n w[r, n] sum_s sw[r, s] dev[s, n] = sum_s sw[r, s] (dev @ w[r]^T)[s]
        out[g] = np.einsum("rs,rs->r", seed_w_RxS, w_RxN @ dev_SxN.T)
    return out


def pooled_seed_sd(groups: Sequence[np.ndarray]) -> tuple[float | None, int]:
    """`(sd, degrees of freedom)`: the pooled standard deviation between runs of one
    configuration, from every group of run-level values with at least two runs
    (`sum_g sum_s (x_gs - mean_g)^2 / sum_g (S_g - 1)`); `(None, 0)` if no group has two."""
    ss, df = 0.0, 0
    for g in groups:
        x = np.asarray(g, np.float64).reshape(-1)
        if x.size >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            df += x.size - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def detectable_difference(
    seed_sd: float,
    seeds_a: int,
    seeds_b: int,
    document_se: float = 0.0,
    seed_sd_b: float | None = None,
) -> float:
    """The smallest true difference between two configurations' means that a two-sided 5 %
    test detects with 80 % power, given the seed standard deviation, the seeds of each
    configuration and the standard error from the documents:
    `(z_0.975 + z_0.8) * sqrt(sd_a^2 / S_a + sd_b^2 / S_b + document_se^2)`, with
    `sd_a = seed_sd` and `sd_b = seed_sd_b` (default: the same). `seeds_b=0`: a comparison of
    one configuration with a fixed value (e.g. a difference between two reads of one model
    against 0)."""
    sd_b = seed_sd if seed_sd_b is None else seed_sd_b
    var = seed_sd**2 / seeds_a + (sd_b**2 / seeds_b if seeds_b else 0.0) + document_se**2
    return (Z_975 + Z_80) * math.sqrt(var)


VERDICTS = ("reproduced", "not reproduced", "unresolved")


def verdict(low: float, high: float) -> str:
    """The rule for a claim written as `Q > 0` (Q signed the way the paper predicts), from
    Q's seed-aware 95 % interval: `reproduced` if it lies above 0, `not reproduced` if it
    lies below 0, `unresolved` if it contains 0."""
    if low > 0:
        return "reproduced"
    if high < 0:
        return "not reproduced"
    return "unresolved"
