"""Attention backends against a brute-force numpy reference, and against each other."""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attn


def numpy_attention(
    q, k, v, scale, segment_ids=None, global_first_key=False, window=None, softcap=None
):
    """Brute force, float64, loops over heads: out [B,T,H,D], lse [B,H,T], probs [B,H,T,T]."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, H, D = q.shape
    K = k.shape[2]
    out = np.zeros((B, T, H, D))
    lse = np.zeros((B, H, T))
    probs = np.zeros((B, H, T, T))
    for b in range(B):
        for h in range(H):
            kh = h // (H // K)
            for i in range(T):
                allowed = []
                for j in range(i + 1):
                    same = segment_ids is None or segment_ids[b, i] == segment_ids[b, j]
                    near = window is None or i - j < window
                    if (same and near) or (global_first_key and j == 0):
                        allowed.append(j)
                s = np.array([scale * q[b, i, h] @ k[b, j, kh] for j in allowed])
                if softcap is not None:
                    s = softcap * np.tanh(s / softcap)
                m = s.max()
                lse[b, h, i] = m + np.log(np.exp(s - m).sum())
                p = np.exp(s - lse[b, h, i])
                probs[b, h, i, allowed] = p
                out[b, i, h] = p @ v[b, allowed, kh]
    return out, lse, probs


def random_qkv(seed, B, T, H, K, D, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (B, T, H, D), dtype)
    k = jax.random.normal(kk, (B, T, K, D), dtype)
    v = jax.random.normal(kv, (B, T, K, D), dtype)
    return q, k, v


def random_segments(rng, B, T, with_padding=True):
    seg = np.zeros((B, T), np.int32)
    for b in range(B):
        cuts = np.sort(rng.choice(np.arange(1, T), size=min(3, T - 1), replace=False))
        bounds = [0, *cuts, T]
        for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
            seg[b, lo:hi] = s
        if with_padding and b == 0:
            seg[b, T - 2 :] = 0  # trailing padding, segment 0
    return seg


@pytest.mark.parametrize("H,K", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("segments", [False, True])
def test_xla_matches_numpy(H, K, segments):
    B, T, D = 2, 11, 8
    q, k, v = random_qkv(0, B, T, H, K, D)
    seg = random_segments(np.random.default_rng(1), B, T) if segments else None
    res = attn.attention(
        q,
        k,
        v,
        backend="xla",
        scale=0.3,
        segment_ids=None if seg is None else jnp.asarray(seg),
        return_probs=True,
    )
    out, lse, probs = numpy_attention(q, k, v, 0.3, seg)
    np.testing.assert_allclose(res.out_BxTxHxD, out, atol=1e-5)
    np.testing.assert_allclose(res.lse_BxHxT, lse, atol=1e-5)
    np.testing.assert_allclose(res.probs_BxHxTxT, probs, atol=1e-6)


def test_rows_sum_to_one_and_mask_is_respected():
    B, T, H, K, D = 2, 13, 2, 1, 4
    q, k, v = random_qkv(3, B, T, H, K, D)
    seg = random_segments(np.random.default_rng(4), B, T)
    p = np.asarray(
        attn.attention(q, k, v, segment_ids=jnp.asarray(seg), return_probs=True).probs_BxHxTxT
    )
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    mask = np.zeros((B, T, T), bool)  # built by hand: causal and same segment
    for b in range(B):
        for i in range(T):
            for j in range(i + 1):
                mask[b, i, j] = seg[b, i] == seg[b, j]
    assert np.all(p[~np.broadcast_to(mask[:, None], p.shape)] == 0.0)
    assert np.all(p[np.broadcast_to(mask[:, None], p.shape)] > 0.0)


def test_global_first_key_keeps_key_zero_visible():
    B, T, H, D = 1, 9, 2, 4
    q, k, v = random_qkv(5, B, T, H, H, D)
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 3, 3, 3]])
    p = attn.attention(q, k, v, segment_ids=seg, global_first_key=True, return_probs=True)
    p = np.asarray(p.probs_BxHxTxT)
    assert np.all(p[..., 3:, 0] > 0)  # later segments still see key 0
    assert np.all(p[..., 3:, 1:3] == 0)  # but not the rest of segment 1
    ref = numpy_attention(q, k, v, D**-0.5, np.asarray(seg), global_first_key=True)[2]
    np.testing.assert_allclose(p, ref, atol=1e-6)


@pytest.mark.parametrize("window,softcap", [(3, None), (6, 2.0), (1, None)])
@pytest.mark.parametrize("segments,gfk", [(False, False), (True, False), (True, True)])
def test_xla_window_and_softcap_match_numpy(window, softcap, segments, gfk):
    B, T, H, K, D = 2, 11, 4, 2, 8
    q, k, v = random_qkv(2, B, T, H, K, D)
    seg = random_segments(np.random.default_rng(3), B, T) if segments else None
    res = attn.attention(
        q,
        k,
        v,
        backend="xla",
        scale=0.5,
        segment_ids=None if seg is None else jnp.asarray(seg),
        global_first_key=gfk,
        window=window,
        softcap=softcap,
        return_probs=True,
    )
    out, lse, probs = numpy_attention(q, k, v, 0.5, seg, gfk, window, softcap)
    np.testing.assert_allclose(res.out_BxTxHxD, out, atol=1e-5)
    np.testing.assert_allclose(res.lse_BxHxT, lse, atol=1e-5)
    np.testing.assert_allclose(res.probs_BxHxTxT, probs, atol=1e-6)
    # The sink statistics: exact column of the map, 0 exactly where the sink is hidden.
    for per_segment in (False, True):
        sink = attn.sink_index(None if seg is None else jnp.asarray(seg), T, B, per_segment)
        kw = dict(segment_ids=None if seg is None else jnp.asarray(seg), global_first_key=gfk)
        got = attn.sink_attention(
            q, k, res.lse_BxHxT, sink, scale=0.5, window=window, softcap=softcap, **kw
        )
        sink_np = np.asarray(sink)
        col = np.take_along_axis(probs, sink_np[:, None, :, None], axis=-1)[..., 0]
        np.testing.assert_allclose(got, col, atol=1e-6)
        seen = attn.sink_visible(sink, window=window, **kw)
        np.testing.assert_array_equal(np.asarray(seen)[:, None].repeat(H, 1), col > 0)


@pytest.mark.parametrize(
    "T,block,H,K,segments,gfk,window,softcap",
    [
        (16, 4, 4, 4, False, False, None, None),
        (23, 8, 4, 2, True, False, None, None),  # T not a multiple of the block, GQA, segments
        (19, 5, 6, 1, True, True, None, None),  # MQA, key 0 global
        (7, 16, 2, 1, False, False, None, None),  # block larger than T
        (29, 4, 4, 2, True, False, 6, None),  # window: key blocks skipped
        (26, 4, 2, 1, True, True, 5, None),  # window with key 0 global: block 0 kept
        (21, 8, 4, 4, False, False, 9, 3.0),  # window across block edges, soft-capped
        (13, 4, 2, 2, False, True, 1, 1.5),  # window of one key: only the diagonal (and key 0)
    ],
)
def test_blockwise_matches_xla(T, block, H, K, segments, gfk, window, softcap):
    B, D = 2, 8
    q, k, v = random_qkv(T, B, T, H, K, D)
    seg = jnp.asarray(random_segments(np.random.default_rng(T), B, T)) if segments else None
    kw = dict(scale=D**-0.5, segment_ids=seg, global_first_key=gfk, window=window, softcap=softcap)
    sink = attn.sink_index(seg, T, B, per_segment=True)

    def loss(backend, q, k, v):
        out = attn.attention(q, k, v, backend=backend, block_size=block, **kw).out_BxTxHxD
        return jnp.sum(out * jnp.cos(out))  # a non-trivial cotangent

    def both(backend):  # (out, lse, sink attention, gradients) of one backend
        res = attn.attention(q, k, v, backend=backend, block_size=block, **kw)
        s = attn.sink_attention(q, k, res.lse_BxHxT, sink, **kw)
        grads = jax.grad(functools.partial(loss, backend), argnums=(0, 1, 2))(q, k, v)
        return res.out_BxTxHxD, res.lse_BxHxT, s, grads

    # One compiled program per backend (eager dispatch would compile every op on its own).
    (out_r, lse_r, s_r, g_ref), (out_g, lse_g, s_g, g_got) = (
        jax.jit(functools.partial(both, b))() for b in ("xla", "blockwise")
    )
    np.testing.assert_allclose(out_g, out_r, atol=1e-5)
    np.testing.assert_allclose(lse_g, lse_r, atol=1e-5)
    np.testing.assert_allclose(s_g, s_r, atol=1e-5)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("backend", ["xla", "blockwise"])
def test_vjp_wrt_values_is_received_attention(backend):
    B, T, H, K, D = 1, 12, 4, 2, 4
    q, k, v = random_qkv(9, B, T, H, K, D)
    # Broadcast K/V to query heads so the gradient is per query head.
    k_h, v_h = jnp.repeat(k, H // K, axis=2), jnp.repeat(v, H // K, axis=2)
    _, vjp = jax.vjp(
        lambda v_: attn.attention(q, k_h, v_, backend=backend, block_size=5).out_BxTxHxD, v_h
    )
    (dv,) = vjp(jnp.ones((B, T, H, D)))
    received_BxHxT = dv[..., 0].transpose(0, 2, 1)
    probs = numpy_attention(q, k, v, D**-0.5)[2]
    np.testing.assert_allclose(received_BxHxT, probs.sum(axis=2), atol=1e-5)


def test_sink_index_per_segment():
    seg = jnp.array([[1, 1, 2, 2, 2, 3, 0, 0]])
    idx = attn.sink_index(seg, 8, 1, per_segment=True)
    np.testing.assert_array_equal(idx, [[0, 0, 2, 2, 2, 5, 6, 6]])
    np.testing.assert_array_equal(attn.sink_index(seg, 8, 1, per_segment=False), np.zeros((1, 8)))


def test_bad_inputs_raise_clear_errors():
    q, k, v = random_qkv(0, 1, 4, 3, 2, 4)
    with pytest.raises(ValueError, match="not divisible"):
        attn.attention(q, k, v)
    q, k, v = random_qkv(0, 1, 4, 2, 2, 4)
    with pytest.raises(ValueError, match="backend='xla'"):
        attn.attention(q, k, v, backend="blockwise", return_probs=True)
    with pytest.raises(ValueError, match="unknown backend"):
        attn.attention(q, k, v, backend="nope")
    with pytest.raises(ValueError, match="segment ids"):
        attn.attention(q, k, v, backend="cudnn", segment_ids=jnp.ones((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="window=0"):
        attn.attention(q, k, v, window=0)
    with pytest.raises(ValueError, match="soft-cap"):
        attn.attention(q, k, v, backend="cudnn", softcap=50.0)
    with pytest.raises(ValueError, match="sliding window"):
        attn.attention(q, k, v, backend="pallas", window=4)


def segment_kernels():
    """Segment-masked kernels without a global key 0: blockwise, and the Pallas GPU kernel run
    in interpret mode (its Python body on the CPU)."""
    from sinks_jax.model import blockwise, fused

    return {
        "blockwise": functools.partial(blockwise.blockwise_attention, block_size=8),
        "pallas_interpret": functools.partial(
            fused.pallas_gpu_attention, block_size=16, interpret=True
        ),
    }


def packed_with_lengths(lengths_per_row, T):
    seg = np.zeros((len(lengths_per_row), T), np.int32)  # 0 = trailing padding
    for b, lengths in enumerate(lengths_per_row):
        start = 0
        for s, n in enumerate(lengths, start=1):
            seg[b, start : start + n] = s
            start += n
    return jnp.asarray(seg)


@pytest.mark.parametrize("kernel", ["blockwise", "pallas_interpret"])
def test_first_key_merge_matches_xla(kernel):
    """Key 0 merged into a segment-masked kernel through the LSE equals attention with
    global_first_key=True: outputs, LSE, sink attention and gradients (GQA, segments of
    lengths 1 to 17, padding)."""
    from sinks_jax.model import fused

    B, T, H, K, D = 2, 32, 4, 2, 8
    q, k, v = random_qkv(11, B, T, H, K, D)
    seg = packed_with_lengths([[5, 1, 9, 13], [17, 2, 3, 1, 9]], T)  # row 0 ends with padding
    scale = D**-0.5
    inner = segment_kernels()[kernel]

    def merged(q, k, v):
        return fused.attend_first_key_globally(inner, q, k, v, seg, scale=scale)

    def reference(q, k, v):
        res = attn.attention(
            q, k, v, backend="xla", scale=scale, segment_ids=seg, global_first_key=True
        )
        return res.out_BxTxHxD, res.lse_BxHxT

    (out, lse), (out_ref, lse_ref) = jax.jit(merged)(q, k, v), jax.jit(reference)(q, k, v)
    # float32 throughout: both sides sum at most T terms of size O(1); 1e-5 is ~100 ulps.
    np.testing.assert_allclose(out, out_ref, atol=1e-5)
    np.testing.assert_allclose(lse, lse_ref, atol=1e-5)
    for per_segment in (False, True):
        sink = attn.sink_index(seg, T, B, per_segment=per_segment)
        kw = dict(scale=scale, segment_ids=seg, global_first_key=True)
        np.testing.assert_allclose(
            attn.sink_attention(q, k, lse, sink, **kw),
            attn.sink_attention(q, k, lse_ref, sink, **kw),
            atol=1e-6,
        )

    def loss(fn, q, k, v):  # non-trivial cotangents for the output and for the LSE
        o, l = fn(q, k, v)
        return jnp.sum(o * jnp.cos(o)) + jnp.sum(jnp.sin(l))

    g = jax.jit(jax.grad(functools.partial(loss, merged), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.jit(jax.grad(functools.partial(loss, reference), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_expand_kv_gives_query_head_h_the_kv_head_h_over_group():
    from sinks_jax.model.kv_heads import expand_kv

    x_BxTxKxD = np.random.default_rng(0).normal(size=(2, 3, 2, 4)).astype(np.float32)
    got = np.asarray(expand_kv(jnp.asarray(x_BxTxKxD), 6))
    for h in range(6):  # H=6, K=2: heads 0-2 read K/V head 0, heads 3-5 K/V head 1.
        np.testing.assert_array_equal(got[:, :, h], x_BxTxKxD[:, :, h // 3])
    got_K = np.asarray(expand_kv(jnp.asarray(x_BxTxKxD[:, 0]), 4, axis=1))  # [B, K, D]
    np.testing.assert_array_equal(got_K, x_BxTxKxD[:, 0][:, [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="num_heads=5"):
        expand_kv(jnp.asarray(x_BxTxKxD), 5)
