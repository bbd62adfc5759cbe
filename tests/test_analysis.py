"""Analysis functions against independent numpy / brute-force references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sinks_jax import analysis


def random_causal_maps(rng, shape_prefix, T, sink_bias=0.0):
    """Row-stochastic causal maps [..., T, T] from random logits (numpy)."""
    logits = rng.normal(size=(*shape_prefix, T, T))
    logits[..., :, 0] += sink_bias
    mask = np.tril(np.ones((T, T), bool))
    logits = np.where(mask, logits, -np.inf)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


def gu_scores_reference(attn, k):
    """Literal loops over Gu's definition: alpha_k = 1/(T-k) sum_{i=k}^{T-1} A[i, k]."""
    L, B, H, T, _ = attn.shape
    out = np.zeros((L, B, H))
    for l, b, h in itertools.product(range(L), range(B), range(H)):
        out[l, b, h] = sum(attn[l, b, h, i, k] for i in range(k, T)) / (T - k)
    return out


def sink_rate_reference(scores, eps):
    L, B, H = scores.shape
    per_seq = [
        np.mean([[scores[l, b, h] > eps for h in range(H)] for l in range(L)]) for b in range(B)
    ]
    return float(np.mean(per_seq))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sink_scores_match_gu_definition(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(3, 12))
    attn = random_causal_maps(rng, (2, 3, 4), T, sink_bias=rng.uniform(0, 4)).astype(np.float32)
    for k in sorted({0, 1, int(rng.integers(0, T))}):
        got = np.asarray(analysis.sink_scores(jnp.asarray(attn), key=k))
        np.testing.assert_allclose(
            got, gu_scores_reference(attn.astype(np.float64), k), rtol=1e-5, atol=1e-6
        )
        col = attn[..., :, k]
        np.testing.assert_allclose(
            np.asarray(analysis.sink_scores_from_column(col, key=k)),
            gu_scores_reference(attn.astype(np.float64), k),
            rtol=1e-5,
            atol=1e-6,
        )


def test_sink_scores_under_jit_with_traced_key():
    rng = np.random.default_rng(3)
    attn = random_causal_maps(rng, (1, 2, 2), 7).astype(np.float32)
    f = jax.jit(analysis.sink_scores)
    for k in (0, 4):
        np.testing.assert_allclose(np.asarray(f(attn, k)), gu_scores_reference(attn, k), rtol=1e-5)


def test_functions_vmap_over_an_extra_axis():
    rng = np.random.default_rng(4)
    attn_NxLxBxHxTxT = random_causal_maps(rng, (3, 2, 1, 2), 6).astype(np.float32)
    got = jax.vmap(lambda a: analysis.sink_scores(a, key=2))(attn_NxLxBxHxTxT)
    for n in range(3):
        np.testing.assert_allclose(
            np.asarray(got[n]), gu_scores_reference(attn_NxLxBxHxTxT[n], 2), rtol=1e-5
        )
    bounds = jax.vmap(analysis.path_bound)(attn_NxLxBxHxTxT)
    np.testing.assert_allclose(
        np.asarray(bounds[1]), np.asarray(analysis.path_bound(attn_NxLxBxHxTxT[1])), rtol=1e-6
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_sink_rate_matches_per_sequence_reference(seed):
    rng = np.random.default_rng(seed)
    attn = random_causal_maps(rng, (3, 5, 4), 9, sink_bias=2.0)
    scores = gu_scores_reference(attn, 0)
    for eps in (0.3, 0.5, 0.8):
        assert float(analysis.sink_rate(jnp.asarray(scores), eps)) == pytest.approx(
            sink_rate_reference(scores, eps), abs=1e-6
        )
        per_layer = np.asarray(analysis.sink_rate_per_layer(jnp.asarray(scores), eps))
        np.testing.assert_allclose(per_layer, (scores > eps).mean(axis=(1, 2)), atol=1e-6)


def test_sink_rate_thresholds_each_sequence_not_the_average():
    # One layer, one head, two sequences with scores 0.9 and 0.1: per sequence, one of two
    # is a sink (50 %); the sequence-averaged score 0.5 is below eps = 0.8 (0 %).
    scores = jnp.asarray([[[0.9], [0.1]]])  # [L=1, B=2, H=1]
    assert float(analysis.sink_rate(scores, 0.8)) == pytest.approx(0.5)
    averaged_first = float(jnp.mean(jnp.mean(scores, axis=1) > 0.8))
    assert averaged_first == 0.0
    # And the other way round: average 0.35 > 0.3 (100 %), per sequence 0.6 and 0.1 (50 %).
    scores = jnp.asarray([[[0.6], [0.1]]])
    assert float(analysis.sink_rate(scores, 0.3)) == pytest.approx(0.5)


# ------------------------------------------------------------------ path bound


def brute_force_path_sum(abar_LxTxT, j, i):
    """Sum over explicit causal paths i = p0 <= p1 <= ... <= pL = j of prod abar[l][p_{l+1}, p_l]."""
    L, T, _ = abar_LxTxT.shape
    total = 0.0
    for mids in itertools.product(range(T), repeat=L - 1):
        path = (i, *mids, j)
        if any(path[s + 1] < path[s] for s in range(L)):
            continue  # causal: information only flows forward
        total += np.prod([abar_LxTxT[l, path[l + 1], path[l]] for l in range(L)])
    return total


def test_path_bound_matches_brute_force_enumeration():
    rng = np.random.default_rng(0)
    L, B, H, T = 3, 2, 2, 4
    attn = random_causal_maps(rng, (L, B, H), T)
    got = np.asarray(analysis.path_bound(jnp.asarray(attn, jnp.float32)))
    per_layer = np.asarray(analysis.path_bound(jnp.asarray(attn, jnp.float32), per_layer=True))
    for b in range(B):
        abar = attn[:, b].sum(axis=1) + np.eye(T)
        for j, i in itertools.product(range(T), range(T)):
            want = brute_force_path_sum(abar, j, i) if i <= j else 0.0
            assert got[b, j, i] == pytest.approx(want, rel=1e-5, abs=1e-6)
            assert per_layer[-1, b, j, i] == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert per_layer[1, b, 3, 1] == pytest.approx(abar[0, 3, 1], rel=1e-6)
    np.testing.assert_array_equal(per_layer[0, 0], np.eye(T))


# ------------------------------------------------------------------ spread, collapse, misc


def toy_causal_stream(tokens_BxT, L=3, D=5, seed=0):
    """A small causal network in jax (prefix means + tanh), residual stream [L+1, B, T, D]."""
    key = jax.random.PRNGKey(seed)
    emb = jax.random.normal(key, (50, D))
    Ws = jax.random.normal(jax.random.PRNGKey(seed + 1), (L, D, D)) / np.sqrt(D)
    x = emb[tokens_BxT]
    T = tokens_BxT.shape[1]
    hs = [x]
    for l in range(L):
        prefix_mean = jnp.cumsum(x, axis=1) / jnp.arange(1, T + 1)[None, :, None]
        x = x + jnp.tanh(prefix_mean @ Ws[l])
        hs.append(x)
    return jnp.stack(hs)


def test_perturbation_divergence_zero_before_swap_and_matches_numpy():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50, size=(2, 9)), jnp.int32)
    pos = 4
    swapped = analysis.swap_token(tokens, pos, 49)
    assert (np.asarray(swapped)[:, pos] == 49).all()
    np.testing.assert_array_equal(np.asarray(swapped)[:, :pos], np.asarray(tokens)[:, :pos])
    ha, hb = toy_causal_stream(tokens), toy_causal_stream(swapped)
    div = np.asarray(analysis.perturbation_divergence(ha, hb))
    assert div.shape == (4, 2, 9)
    assert (div[:, :, :pos] == 0.0).all()
    assert (div[1:, :, pos:] > 0).all()
    want = np.sqrt(((np.asarray(ha, np.float64) - np.asarray(hb, np.float64)) ** 2).sum(-1))
    np.testing.assert_allclose(div, want, rtol=1e-5, atol=1e-6)
    assert analysis.drop_prefix(div, 1).shape == (4, 2, 8)
    with pytest.raises(ValueError, match="same number of tokens"):
        analysis.perturbation_divergence(ha, ha[:, :, :-1])


def test_swap_span():
    toks, pos = analysis.swap_span([5, 1, 2, 3, 1, 2], [1, 2], [1, 9])
    assert toks == [5, 1, 9, 3, 1, 2] and pos == 2
    with pytest.raises(ValueError, match="same length"):
        analysis.swap_span([1, 2, 3], [2], [4, 5])
    with pytest.raises(ValueError, match="does not occur"):
        analysis.swap_span([1, 2, 3], [7], [4])


def test_collapse_measures_against_numpy():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 2, 6, 4)).astype(np.float32)
    h[1, 0] = h[1, 0, :1]  # all tokens identical: full rank collapse
    rc = np.asarray(analysis.rank_collapse(jnp.asarray(h)))
    for l, b in itertools.product(range(3), range(2)):
        V = h[l, b].astype(np.float64)
        want = np.linalg.norm(V - V.mean(0)) / np.linalg.norm(V)
        assert rc[l, b] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert rc[1, 0] == pytest.approx(0.0, abs=1e-6)
    rep = np.asarray(analysis.representational_collapse(jnp.asarray(h)))
    np.testing.assert_allclose(
        rep, np.linalg.norm(h[..., -1, :] - h[..., -2, :], axis=-1), rtol=1e-5
    )
    tokens = jnp.asarray([[3, 4, 5]])
    np.testing.assert_array_equal(np.asarray(analysis.repeat_last_token(tokens)), [[3, 4, 5, 5]])
    h2 = rng.normal(size=(3, 2, 7, 4)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(analysis.representational_collapse_repeat(h, h2)),
        np.linalg.norm(h[..., -1, :] - h2[..., -1, :], axis=-1),
        rtol=1e-5,
    )


def test_attention_entropy_and_value_measures():
    rng = np.random.default_rng(2)
    attn = random_causal_maps(rng, (2, 1, 3), 5)
    ent = np.asarray(analysis.attention_entropy(jnp.asarray(attn, jnp.float32)))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = -np.nansum(np.where(attn > 0, attn * np.log(attn), 0.0), axis=-1)
    np.testing.assert_allclose(ent, want, rtol=1e-5, atol=1e-6)
    uniform = np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None]
    np.testing.assert_allclose(
        np.asarray(analysis.attention_entropy(uniform[None, None, None])),
        np.log(np.arange(1, 6))[None, None, None],
        rtol=1e-5,
        atol=1e-6,
    )

    v = rng.normal(size=(1, 5, 3, 4)).astype(np.float32)
    vn = np.asarray(analysis.value_norms(jnp.asarray(v)))
    np.testing.assert_allclose(vn, np.linalg.norm(v, axis=-1).transpose(0, 2, 1), rtol=1e-6)
    vn_L = np.abs(rng.normal(size=(2, 1, 3, 5))).astype(np.float32) + 0.1
    ratio = np.asarray(analysis.sink_value_ratio(jnp.asarray(vn_L)))
    np.testing.assert_allclose(ratio, vn_L[..., 0] / vn_L[..., 1:].mean(-1), rtol=1e-5)
    noop = np.asarray(analysis.noop_score(jnp.asarray(attn, jnp.float32), jnp.asarray(vn_L)))
    for l, h, i in itertools.product(range(2), range(3), range(5)):
        row = attn[l, 0, h, i, : i + 1]
        vals = vn_L[l, 0, h, : i + 1]
        assert noop[l, 0, h, i] == pytest.approx((row * vals).sum() / vals.mean(), rel=1e-5)
    np.testing.assert_allclose(
        np.asarray(
            analysis.noop_score(
                jnp.asarray(uniform[None, None, None], jnp.float32), jnp.asarray(vn_L[:1, :, :1])
            )
        ),
        1.0,
        rtol=1e-5,
    )


def test_sink_scores_from_column_with_query_mask_matches_numpy():
    rng = np.random.default_rng(7)
    col = rng.random((2, 3, 4, 9)).astype(np.float32)  # [L, B, H, T]
    mask = rng.random((3, 9)) > 0.4
    mask[2] = False  # a sequence with no counted query scores 0.
    for key in (0, 2):
        got = np.asarray(analysis.sink_scores_from_column(col, key=key, query_mask_BxT=mask))
        want = np.zeros((2, 3, 4))
        for b in range(3):
            idx = [i for i in range(9) if i >= key and mask[b, i]]
            if idx:
                want[:, b] = col[:, b][..., idx].mean(-1)
        np.testing.assert_allclose(got, want, rtol=1e-6)
