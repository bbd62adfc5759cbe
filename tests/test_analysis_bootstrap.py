"""Bootstrap intervals and sink profiles against numpy brute force (exact enumeration)."""

import itertools

import jax
import numpy as np
import pytest

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


# ----------------------------------------------------------------- over documents (clusters)


def exact_cluster_bootstrap_means(values_N, clusters_N):
    """Every one of the G**G equally likely draws of G clusters from G, enumerated: the mean
    over the drawn clusters' items (each cluster counted as often as it is drawn)."""
    ids = np.unique(clusters_N)
    sums = np.array([values_N[clusters_N == g].sum() for g in ids])
    sizes = np.array([(clusters_N == g).sum() for g in ids], float)
    idx = np.array(list(itertools.product(range(len(ids)), repeat=len(ids))))
    return sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)


def test_cluster_bootstrap_matches_exact_enumeration_jax_and_numpy():
    # 9 windows from 5 documents of unequal sizes (ids need not be 0..G-1): 5**5 = 3125
    # equally likely resamples of documents.
    values_N = np.array([0.3, 0.5, -1.2, 2.5, 2.9, 2.1, 0.7, 4.1, 3.0])
    clusters_N = np.array([7, 7, 3, 11, 11, 11, 5, 20, 20])
    exact = exact_cluster_bootstrap_means(values_N, clusters_N)
    R, delta = 40_000, 0.006  # as in the item bootstrap test above: 7.5 standard errors.
    got_jax = analysis.bootstrap_interval(values_N, jax.random.key(0), R, clusters=clusters_N)
    got_np = bootstrap.cluster_interval(values_N, clusters_N, np.random.default_rng(0), R)
    for mean, low, high in (got_jax, got_np):
        np.testing.assert_allclose(mean, values_N.mean(), rtol=1e-6)
        for got, p in ((low, 0.025), (high, 0.975)):
            lo, hi = np.quantile(exact, [p - delta, p + delta], method="inverted_cdf")
            assert lo <= float(got) <= hi, (p, float(got), lo, hi)
    # The resampled means themselves: a cluster-count matrix against a numpy loop.
    index, g = bootstrap.cluster_index(clusters_N)
    counts = np.asarray(bootstrap.cluster_resample_counts(jax.random.key(3), 200, index, g))
    assert g == 5 and counts.shape == (200, 9)
    for row in counts:  # every window of a document gets the document's count
        for d in np.unique(clusters_N):
            assert len(set(row[clusters_N == d])) == 1
        assert sum(row[clusters_N == d][0] for d in np.unique(clusters_N)) == 5


def test_singleton_clusters_are_the_item_bootstrap_draw_for_draw():
    values_N = np.random.default_rng(1).normal(size=12)
    a = analysis.bootstrap_interval(values_N, jax.random.key(4), 500)
    b = analysis.bootstrap_interval(values_N, jax.random.key(4), 500, clusters=np.arange(12) * 3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    scores = np.random.default_rng(2).uniform(0, 0.6, size=(2, 12, 3)).astype(np.float32)
    p1 = analysis.sink_profile(scores, 0.3, jax.random.key(0), num_resamples=300)
    p2 = analysis.sink_profile(scores, 0.3, jax.random.key(0), num_resamples=300,
                               clusters=np.arange(12))
    for k in ("rate_low", "rate_high", "layer_low", "head_high", "score_low"):
        np.testing.assert_array_equal(np.asarray(p1[k]), np.asarray(p2[k]))
    assert float(p1["num_documents"]) == 12


def test_sink_profile_over_documents_matches_exact_enumeration():
    # 6 windows in 3 documents; per-window rates (2 layers x 2 heads) 1, 1 | 0, 0, 0 | 0.5:
    # documents hold rate sums 2, 0, 0.5 over sizes 2, 3, 1.
    L, H = 2, 2
    per_window = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.5])
    clusters = np.array([0, 0, 1, 1, 1, 2])
    scores = np.full((L, 6, H), 0.1, np.float32)
    scores[:, :2] = 0.9
    scores[0, 5] = 0.9  # half the heads of window 5
    prof = analysis.sink_profile(scores, 0.3, jax.random.key(0), num_resamples=40_000,
                                 clusters=clusters)
    exact = exact_cluster_bootstrap_means(per_window, clusters)  # 27 draws
    assert float(prof["num_documents"]) == 3
    np.testing.assert_allclose(prof["rate"], per_window.mean(), rtol=1e-6)
    # Exact quantiles, with the Monte Carlo slack of +-0.006 in probability.
    for got, p in ((prof["rate_low"], 0.025), (prof["rate_high"], 0.975)):
        lo, hi = np.quantile(exact, [p - 0.006, p + 0.006], method="inverted_cdf")
        assert lo - 1e-6 <= float(got) <= hi + 1e-6, (p, float(got), lo, hi)


def test_cluster_bootstrap_covers_the_mean_of_clustered_data_and_the_item_bootstrap_does_not():
    """Synthetic documents with a strong document effect (intra-class correlation 0.5, 30
    documents x 8 windows): the 95 % interval over documents covers the true mean at about
    the nominal rate, the interval over windows far less often (fixed seed)."""
    rng = np.random.default_rng(0)
    G, m, sims, R = 30, 8, 300, 1000
    clusters = np.repeat(np.arange(G), m)
    cover = {"documents": 0, "windows": 0}
    for _ in range(sims):
        x = (rng.normal(size=G)[clusters] + rng.normal(size=G * m))  # true mean 0
        w_doc = bootstrap.np_resample_weights(rng, R, clusters)
        w_win = bootstrap.np_resample_weights(rng, R, None, G * m)
        for name, w in (("documents", w_doc), ("windows", w_win)):
            low, high = bootstrap.np_interval(bootstrap.np_weighted_means(x, w))
            cover[name] += low <= 0.0 <= high
    rate = {k: v / sims for k, v in cover.items()}
    # Percentile intervals from 30 clusters run a little short of 95 %; 300 simulations give
    # a standard error of about 0.015.
    assert 0.88 <= rate["documents"] <= 0.99, rate
    # Design effect 1 + (m - 1) 0.5 = 4.5: the window interval is ~sqrt(4.5) = 2.1x too
    # narrow, covering about P(|Z| < 1.96 / 2.1) = 0.65.
    assert rate["windows"] <= 0.78, rate


# ------------------------------------------------------------ over seeds, then documents


def test_hierarchical_resamples_match_exact_enumeration():
    # Two configurations on the same 3 windows (3 documents): A has 2 seeds, B has 3. Every
    # resample draws A's seeds (2**2), B's seeds (3**3) and one set of documents (3**3),
    # all equally likely: 2916 outcomes, enumerated with the seed deviations inflated by
    # sqrt(S / (S - 1)).
    A = np.array([[1.0, 2.0, 4.0], [2.0, 2.5, 3.0]])
    B = np.array([[0.0, 1.0, 0.5], [0.5, 0.0, 1.5], [1.0, 2.0, 0.0]])
    inflate = lambda V: V.mean(0) + np.sqrt(len(V) / (len(V) - 1)) * (V - V.mean(0))  # noqa: E731
    Ai, Bi = inflate(A), inflate(B)
    diffs = []
    for sa in itertools.product(range(2), repeat=2):
        for sb in itertools.product(range(3), repeat=3):
            per_window = Ai[list(sa)].mean(0) - Bi[list(sb)].mean(0)
            for docs in itertools.product(range(3), repeat=3):
                diffs.append(per_window[list(docs)].mean())
    diffs = np.array(diffs)
    out = bootstrap.hierarchical_resamples([A, B], np.arange(3), np.random.default_rng(0), 60_000)
    got = out[0] - out[1]
    np.testing.assert_allclose(got.mean(), diffs.mean(), atol=0.01)
    np.testing.assert_allclose(got.std(), diffs.std(), rtol=0.02)
    for p in (0.025, 0.975):
        lo, hi = np.quantile(diffs, [p - 0.005, p + 0.005], method="inverted_cdf")
        q = np.quantile(got, p)
        assert lo - 1e-9 <= q <= hi + 1e-9, (p, q, lo, hi)


def test_hierarchical_seed_stage_has_the_analytic_variance():
    """With one document (no document term), the resampled value of an S-seed configuration
    has variance s^2 / S (the inflation makes the plain bootstrap's (S-1)/S factor go away);
    a one-run configuration with `single_seed_sd` has variance sd^2; without it, none."""
    rng = np.random.default_rng(0)
    runs = np.array([[1.0], [4.0], [2.0]])  # 3 seeds, 1 window
    one = np.array([[5.0]])
    out = bootstrap.hierarchical_resamples([runs, one, one], None, rng, 200_000,
                                           single_seed_sd=[None, 0.7, None])
    s2 = runs.var(ddof=1)
    np.testing.assert_allclose(out[0].var(), s2 / 3, rtol=0.02)
    np.testing.assert_allclose(out[1].std(), 0.7, rtol=0.02)
    np.testing.assert_allclose(out[1].mean(), 5.0, atol=0.01)
    assert np.all(out[2] == 5.0)
    plain = bootstrap.hierarchical_resamples([runs], None, rng, 200_000, inflate=False)
    np.testing.assert_allclose(plain[0].var(), s2 / 3 * 2 / 3, rtol=0.02)


def test_pooled_seed_sd_detectable_difference_and_verdict():
    sd, df = bootstrap.pooled_seed_sd([[1.0, 3.0], [2.0, 2.0, 5.0], [7.0]])
    # sums of squares 2 and 6 over 1 + 2 degrees of freedom
    assert df == 3 and sd == pytest.approx(np.sqrt(8 / 3))
    assert bootstrap.pooled_seed_sd([[1.0], [2.0]]) == (None, 0)
    # (1.96 + 0.84) * sqrt(1 * (1/2 + 1/2) + 0) = 2.80
    assert bootstrap.detectable_difference(1.0, 2, 2) == pytest.approx(2.8016, abs=1e-4)
    assert bootstrap.detectable_difference(1.0, 3, 3, 0.5) == pytest.approx(
        2.8016 * np.sqrt(2 / 3 + 0.25), abs=1e-4)
    # one configuration against a fixed value; two configurations with their own seed sd
    assert bootstrap.detectable_difference(1.0, 2, 0) == pytest.approx(
        2.8016 * np.sqrt(0.5), abs=1e-4)
    assert bootstrap.detectable_difference(1.0, 1, 4, seed_sd_b=2.0) == pytest.approx(
        2.8016 * np.sqrt(1 + 1), abs=1e-4)
    assert bootstrap.verdict(0.1, 2.0) == "reproduced"
    assert bootstrap.verdict(-2.0, -0.1) == "not reproduced"
    assert bootstrap.verdict(-0.1, 2.0) == "unresolved"


def test_detectable_difference_is_detected_with_80_percent_power_by_simulation():
    """Two configurations x 3 seeds, a true difference equal to the detectable difference
    (known seed sd, no document term): a z-test at 5 % detects it in about 80 % of trials."""
    rng = np.random.default_rng(0)
    sd, S, trials = 1.5, 3, 20_000
    delta = bootstrap.detectable_difference(sd, S, S)
    a = rng.normal(delta, sd, size=(trials, S)).mean(1)
    b = rng.normal(0.0, sd, size=(trials, S)).mean(1)
    z = (a - b) / (sd * np.sqrt(2 / S))
    assert abs(np.mean(np.abs(z) > bootstrap.Z_975) - 0.80) < 0.015
