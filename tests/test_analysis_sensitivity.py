"""Jacobian sensitivity against central finite differences (float64) and causality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sinks_jax import analysis


def toy_params(D, L, seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: jnp.asarray(rng.normal(size=(L, D, D)) / np.sqrt(D))
        for name in ("wq", "wk", "wv", "wm")
    }


def toy_forward(params, emb_BxTxD):
    """Tiny causal transformer: single-head softmax attention + tanh MLP, residual stream out."""
    x = emb_BxTxD
    T, D = x.shape[1], x.shape[2]
    mask = jnp.tril(jnp.ones((T, T), bool))
    hs = [x]
    for l in range(params["wq"].shape[0]):
        s = jnp.einsum("bid,bjd->bij", x @ params["wq"][l], x @ params["wk"][l]) / np.sqrt(D)
        a = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)
        x = x + a @ (x @ params["wv"][l])
        x = x + jnp.tanh(x @ params["wm"][l])
        hs.append(x)
    return jnp.stack(hs)


def finite_difference_sensitivity(params, emb_TxD, target, h=1e-5):
    """[L+1, T] Frobenius norms of d hidden[l][target] / d emb[i] by central differences."""
    T, D = emb_TxD.shape
    cols = {}
    for i in range(T):
        for d in range(D):
            e_plus, e_minus = emb_TxD.copy(), emb_TxD.copy()
            e_plus[i, d] += h
            e_minus[i, d] -= h
            fp = np.asarray(toy_forward(params, jnp.asarray(e_plus)[None]))[:, 0, target]
            fm = np.asarray(toy_forward(params, jnp.asarray(e_minus)[None]))[:, 0, target]
            cols[i, d] = (fp - fm) / (2 * h)  # [L+1, D]
    return np.stack(
        [np.sqrt(sum((cols[i, d] ** 2).sum(-1) for d in range(D))) for i in range(T)], axis=-1
    )


@pytest.mark.parametrize("chunk_size", [5, 64])
def test_jacobian_sensitivity_matches_finite_differences_float64(chunk_size):
    with jax.enable_x64(True):
        T, D, L, target = 5, 4, 2, 3
        params = toy_params(D, L)
        emb = np.random.default_rng(1).normal(size=(T, D))
        want = finite_difference_sensitivity(params, emb, target)
        got = np.asarray(
            analysis.jacobian_sensitivity(
                toy_forward, params, jnp.asarray(emb), target, chunk_size=chunk_size
            )
        )
        assert got.shape == (L + 1, T)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-8)
        # Causality: tokens after the target have exactly zero influence.
        assert (got[:, target + 1 :] == 0.0).all()
        # Layer 0 is the identity at the target.
        np.testing.assert_allclose(got[0], np.sqrt(D) * (np.arange(T) == target))
        last = np.asarray(
            analysis.jacobian_sensitivity(
                toy_forward, params, jnp.asarray(emb)[None], target, layers=[-1], chunk_size=3
            )
        )
        np.testing.assert_allclose(last[0], want[-1], rtol=1e-3, atol=1e-8)


def test_jacobian_sensitivity_jits_float32():
    T, D, L = 6, 4, 2
    params = jax.tree.map(lambda a: a.astype(jnp.float32), toy_params(D, L, seed=2))
    emb = jnp.asarray(np.random.default_rng(3).normal(size=(T, D)), jnp.float32)
    f = jax.jit(lambda p, e, t: analysis.jacobian_sensitivity(toy_forward, p, e, t, chunk_size=4))
    got = np.asarray(f(params, emb, 2))
    assert got.shape == (L + 1, T)
    assert (got[:, 3:] == 0).all() and (got[1:, :3] > 0).all()


def test_jacobian_sensitivity_from_random_directions_is_unbiased():
    """K < D random orthonormal output directions: exact at K = D, and the mean over keys of
    the squared estimate converges to the finite-difference squared norms."""
    with jax.enable_x64(True):
        T, D, L, target = 5, 8, 2, 4
        params = toy_params(D, L, seed=4)
        emb = np.random.default_rng(5).normal(size=(T, D))
        want = finite_difference_sensitivity(params, emb, target)
        e = jnp.asarray(emb)
        full = analysis.jacobian_sensitivity(toy_forward, params, e, target, num_directions=D)
        np.testing.assert_allclose(np.asarray(full), want, rtol=1e-3, atol=1e-8)

        def estimate(key):
            return analysis.jacobian_sensitivity(
                toy_forward, params, e, target, num_directions=2, key=key, chunk_size=3
            )

        keys = jax.random.split(jax.random.key(7), 400)
        sq_SxNxT = np.asarray(jax.jit(jax.vmap(estimate))(keys)) ** 2
        assert (sq_SxNxT[:, :, target + 1 :] == 0).all()  # causality holds for every estimate
        one = sq_SxNxT[0, 1:, :target + 1] / want[1:, :target + 1] ** 2
        assert 0.2 < one.mean() < 5 and not np.allclose(one, 1)  # one estimate: noisy
        mean = sq_SxNxT.mean(0)
        # 400 estimates of relative sd <= sqrt(2 / K) = 1: the mean within 5 sd (0.25).
        np.testing.assert_allclose(mean[1:, :target + 1], want[1:, :target + 1] ** 2, rtol=0.25)
        # Layer 0 is the identity at the target: ||Q^T||_F^2 * D / K = D for every draw.
        np.testing.assert_allclose(sq_SxNxT[:, 0, target], D, rtol=1e-6)  # float32 out
    with pytest.raises(ValueError, match="num_directions=0"):
        analysis.jacobian_sensitivity(toy_forward, params, e, 0, num_directions=0)
