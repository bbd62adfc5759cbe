"""Received attention (sinks_jax.model.received) against float64 numpy column sums of
brute-force causal attention maps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sinks_jax.model import attention
from sinks_jax.model.received import received_attention


def numpy_attention_probs(q, k):
    """[B,T,H,D] x [B,T,K,D] -> probs [B,H,T,T] float64, causal, scaled by 1/sqrt(D); query
    head h reads K/V head h // (H // K) (written as an index, not the code under test)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    T, H, D = q.shape[1:]
    kk = k[:, :, np.arange(H) // (H // k.shape[2])]
    s = np.einsum("bihd,bjhd->bhij", q, kk) / np.sqrt(D)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def jax_causal_attention(q, k, v):
    """Plain explicit causal attention with H == K (received_attention broadcasts K/V)."""
    T, D = q.shape[1], q.shape[3]
    s = jnp.einsum("bihd,bjhd->bhij", q, k) / jnp.sqrt(D).astype(q.dtype)
    s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -jnp.inf)
    return jnp.einsum("bhij,bjhd->bihd", jax.nn.softmax(s, axis=-1), v)


def qkv(rng, B, T, H, K, D):
    return tuple(rng.normal(size=(B, T, n, D)).astype(np.float32) for n in (H, K, K))


# Column sums over <= 16 queries of float32 maps whose rows sum to 1: rounding ~1e-6.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("H,K", [(4, 1), (4, 2), (2, 2)])
def test_received_attention_matches_column_sums_with_gqa(H, K):
    rng = np.random.default_rng(H * 10 + K)
    q, k, v = qkv(rng, 2, 11, H, K, 8)
    probs_BxHxTxT = numpy_attention_probs(q, k)
    got = received_attention(q, k, v, jax_causal_attention)
    np.testing.assert_allclose(np.asarray(got), probs_BxHxTxT.sum(axis=-2), **TOL)
    # Weighted queries (e.g. padding excluded): sum_i w[i] A[i, k].
    w_BxT = (rng.uniform(size=(2, 11)) > 0.3).astype(np.float32)
    got_w = received_attention(q, k, v, jax_causal_attention, w_BxT)
    want_w = np.einsum("bhik,bi->bhk", probs_BxHxTxT, w_BxT)
    np.testing.assert_allclose(np.asarray(got_w), want_w, **TOL)


@pytest.mark.parametrize("backend", ["xla", "blockwise"])
def test_received_attention_through_model_backends(backend):
    q, k, v = qkv(np.random.default_rng(7), 1, 16, 4, 2, 8)
    fn = functools.partial(attention.attention, backend=backend, block_size=4)
    got = received_attention(q, k, v, fn)  # attention returns a named tuple.
    np.testing.assert_allclose(np.asarray(got), numpy_attention_probs(q, k).sum(-2), **TOL)


def test_analysis_names_are_the_model_computation_per_layer():
    """`analysis.received_attention` (one VJP per layer) equals the column sums of explicit
    maps (`analysis.received_attention_from_probs`) for every layer."""
    from sinks_jax import analysis

    L, B, T, H, K, D = 2, 2, 12, 4, 2, 8
    kq, kk, kv = jax.random.split(jax.random.key(7), 3)
    q = jax.random.normal(kq, (L, B, T, H, D))
    k = jax.random.normal(kk, (L, B, T, K, D))
    v = jax.random.normal(kv, (L, B, T, K, D))
    fn = functools.partial(attention.attention, backend="xla")
    got = analysis.received_attention(q, k, v, fn)
    probs = jnp.stack(
        [attention.attention(q[i], k[i], v[i], return_probs=True).probs_BxHxTxT for i in range(L)]
    )
    np.testing.assert_allclose(got, analysis.received_attention_from_probs(probs), atol=1e-5)
