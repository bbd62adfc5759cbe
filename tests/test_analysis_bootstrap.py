"""Bootstrap intervals and sink profiles against numpy brute force (exact enumeration)."""

import itertools

import jax
import numpy as np

from sinks_jax import analysis
from sinks_jax.analysis import bootstrap


def exact_bootstrap_means(values_N):
    """Every one of the N**N equally likely resamples (ordered draws), enumerated."""
    n = len(values_N)
    idx = np.array(list(itertools.product(range(n), repeat=n)))
    return values_N[idx].mean(axis=1)


def test_bootstrap_means_match_numpy_resampling_loop():
    rng = np.random.default_rng(0)
    values_NxK = rng.normal(size=(7, 3))
    idx_RxN = rng.integers(0, 7, size=(50, 7))
    counts_RxN = np.stack([np.bincount(i, minlength=7) for i in idx_RxN]).astype(np.float32)
    got = bootstrap.bootstrap_means(values_NxK, counts_RxN)
    want = np.stack([values_NxK[i].mean(axis=0) for i in idx_RxN])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # float32 sums of 7 terms.
    counts = bootstrap.resample_counts(jax.random.key(1), 100, 7)
    assert counts.shape == (100, 7) and np.all(np.asarray(counts).sum(axis=1) == 7)


def test_bootstrap_interval_matches_exact_enumeration():
    # N = 5 values: the exact bootstrap distribution has 5**5 = 3125 equally likely means.
    values_N = np.array([0.3, -1.2, 2.5, 0.7, 4.1])
    exact = exact_bootstrap_means(values_N)
    R = 40_000
    mean, low, high = analysis.bootstrap_interval(values_N, jax.random.key(0), R, level=0.95)
    np.testing.assert_allclose(mean, values_N.mean(), rtol=1e-6)
    # A Monte Carlo quantile at p lies between the exact quantiles at p -/+ delta unless the
    # empirical CDF is off by more than delta: with R = 40k its standard error at p = 0.025
    # is sqrt(p (1 - p) / R) = 0.0008, so delta = 0.006 is 7.5 standard errors.
    delta = 0.006
    for got, p in ((low, 0.025), (high, 0.975)):
        lo, hi = np.quantile(exact, [p - delta, p + delta], method="inverted_cdf")
        assert lo <= float(got) <= hi, (p, float(got), lo, hi)
    # Same key, same interval; the interval shrinks with more items of the same spread.
    again = analysis.bootstrap_interval(values_N, jax.random.key(0), R, level=0.95)
    assert float(again[1]) == float(low) and float(again[2]) == float(high)


def test_sink_profile_known_case_and_numpy_reference():
    # 5 sequences, 2 layers x 3 heads. Sequences 3 and 4: every head is a sink; sequences
    # 0-2: none. Per-sequence rates are [0, 0, 0, 1, 1], so the resampled rate is
    # Binomial(5, 0.4) / 5: P(0) = 0.078 > 0.025 and P(<= 3) = 0.913 < 0.975 <= P(<= 4), so
    # the exact 95 % percentile interval is [0, 0.8].
    B, L, H = 5, 2, 3
    rng = np.random.default_rng(0)
    scores_LxBxH = rng.uniform(0.0, 0.25, size=(L, B, H)).astype(np.float32)
    scores_LxBxH[:, 3:] = rng.uniform(0.5, 0.9, size=(L, 2, H))
    prof = analysis.sink_profile(scores_LxBxH, 0.3, jax.random.key(0), num_resamples=20_000)
    exact = exact_bootstrap_means(np.array([0.0, 0, 0, 1, 1]))
    np.testing.assert_allclose(np.quantile(exact, [0.025, 0.975], method="inverted_cdf"), [0, 0.8])
    np.testing.assert_allclose([prof["rate"], prof["rate_low"], prof["rate_high"]], [0.4, 0.0, 0.8],
                               atol=1e-6)
    # Point estimates against numpy loops over sequences, layers and heads.
    ind = scores_LxBxH > 0.3
    np.testing.assert_allclose(prof["layer_rate"], [ind[l].mean() for l in range(L)], rtol=1e-6)
    np.testing.assert_allclose(prof["head_rate"], ind.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(prof["head_score"], scores_LxBxH.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(prof["max_head_score"], scores_LxBxH.mean(axis=1).max(), rtol=1e-6)
    np.testing.assert_allclose(prof["rate"], analysis.sink_rate(scores_LxBxH, 0.3), rtol=1e-6)
    # Mean alpha: interval against the exact enumeration of the per-sequence means.
    per_seq = scores_LxBxH.mean(axis=(0, 2)).astype(np.float64)
    exact = exact_bootstrap_means(per_seq)
    for got, p in ((prof["score_low"], 0.025), (prof["score_high"], 0.975)):
        lo, hi = np.quantile(exact, [p - 0.008, p + 0.008], method="inverted_cdf")  # 7 s.e.
        assert lo - 1e-6 <= float(got) <= hi + 1e-6, (p, float(got), lo, hi)
    assert prof["layer_low"].shape == (L,) and prof["head_high"].shape == (L, H)
    assert np.all(prof["head_low"] <= prof["head_rate"])
    assert np.all(prof["head_rate"] <= prof["head_high"])
    assert float(prof["num_sequences"]) == B
