"""Flash-style attention in pure JAX: online softmax over key blocks, any platform.

Memory is O(block^2 * heads) per step instead of O(T^2): the T x T map is never built, in the
forward or in the backward pass (a custom VJP recomputes each block's weights from the saved
LSE, as flash attention does). Causality is exploited: a query block visits only the key
blocks at or before it, so the work is about half of the full square. A sliding window is
exploited too: key blocks wholly outside it are skipped (block 0 is still visited when key 0 is
global), so a local layer costs O(T * window), not O(T^2).

The LSE output is differentiable too: d lse_i / d s_ij = A[i, j], so its cotangent g_i only
shifts the backward pass's row term, delta_i = dout_i . out_i - g_i (used by the exact merge of
an extra key in `fused.attend_first_key_globally`).

`sigmoid_bias` b ([B, T], one per query) switches to sigmoid attention (`variants`, "sigmoid"):
weights sigmoid(s_ij + b_i) with no row normalisation, summed over the same key blocks; the "lse" is then the log of each
row's total weight, and the backward pass uses dS_ij = A_ij (1 - A_ij) (dout_i . v_j +
dlse_i / total_i), the same loops with `delta_i = -dlse_i * exp(-lse_i)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_NEG = -1e30  # finite "minus infinity": keeps exp() and max() NaN-free on masked blocks.


def _layout(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, block):
    """Pads T to a multiple of `block` and moves heads first: q [B,K,G,Tp,D], k/v [B,K,Tp,D]."""
    B, T, H, D = q_BxTxHxD.shape
    K = k_BxTxKxD.shape[2]
    pad = (-T) % block
    padT = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    q = padT(q_BxTxHxD).reshape(B, T + pad, K, H // K, D).transpose(0, 2, 3, 1, 4)
    k = padT(k_BxTxKxD).transpose(0, 2, 1, 3)
    v = padT(v_BxTxKxD).transpose(0, 2, 1, 3)
    seg = jnp.pad(seg_BxT, [(0, 0), (0, pad)], constant_values=-1)
    return q, k, v, seg


def _mask(qi, kj, seg, block, global_first_key, window):
    """[B, 1, 1, bq, bk] visibility of key block kj to query block qi."""
    qidx = qi * block + jnp.arange(block)
    kidx = kj * block + jnp.arange(block)
    seg_q = jax.lax.dynamic_slice_in_dim(seg, qi * block, block, axis=1)
    seg_k = jax.lax.dynamic_slice_in_dim(seg, kj * block, block, axis=1)
    visible = (seg_q[:, :, None] == seg_k[:, None, :]) & (kidx[None, :] <= qidx[:, None])[None]
    if window is not None:
        visible = visible & (qidx[:, None] - kidx[None, :] < window)[None]
    if global_first_key:
        visible = visible | (kidx == 0)[None, None, :]
    return visible[:, None, None]


def _key_blocks(qi, block, global_first_key, window):
    """Key blocks query block qi visits: the loop counter c runs over [start, qi] and stands
    for block `where(c < first, 0, c)`, where `first` is the first block inside the window;
    start = first - 1 adds block 0 when key 0 is global and outside the window."""
    if window is None:
        return 0, 0
    first = jnp.maximum(0, (qi * block - window + 1) // block)
    start = jnp.maximum(0, first - 1) if global_first_key else first
    return start, first


def _query_blocks_end(kj, n, block, global_first_key, window):
    """One past the last query block that sees key block kj (the window's far edge)."""
    if window is None:
        return n
    end = jnp.minimum(n, (kj * block + block + window - 2) // block + 1)
    return jnp.where(kj == 0, n, end) if global_first_key else end


def _scores(q_blk, k_blk, scale, softcap):
    """Scaled (and soft-capped) float32 scores of a query block against a key block."""
    s = jnp.einsum("bkgqd,bkcd->bkgqc", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
    return s if softcap is None else softcap * jnp.tanh(s / softcap)


def _block(x, i, block, axis):
    return jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=axis)


def _forward(q, k, v, seg, bias, scale, block, global_first_key, window, softcap, sigmoid):
    """q [B,K,G,Tp,D], k/v [B,K,Tp,D] -> out [B,K,G,Tp,D] (f32), lse [B,K,G,Tp] (f32)."""
    B, K, G, Tp, D = q.shape
    n = Tp // block

    def one_query_block(qi):
        q_blk = _block(q, qi, block, 3)
        b_blk = None if bias is None else _block(bias, qi, block, 1)[:, None, None, :, None]

        start, first = _key_blocks(qi, block, global_first_key, window)

        def body(c, carry):
            m, l, acc = carry
            kj = jnp.where(c < first, 0, c)
            s = _scores(q_blk, _block(k, kj, block, 2), scale, softcap)
            visible = _mask(qi, kj, seg, block, global_first_key, window)
            if not sigmoid:
                m_new = jnp.maximum(m, jnp.max(jnp.where(visible, s, _NEG), axis=-1))
                p = jnp.where(visible, jnp.exp(s - m_new[..., None]), 0.0)
                corr = jnp.exp(m - m_new)
            else:  # no running max: the weights are not normalised.
                m_new, corr = m, jnp.ones_like(m)
                p = jnp.where(visible, jax.nn.sigmoid(s + b_blk), 0.0)
            l = l * corr + p.sum(-1)
            acc = acc * corr[..., None] + jnp.einsum(
                "bkgqc,bkcd->bkgqd",
                p.astype(v.dtype),
                _block(v, kj, block, 2),
                preferred_element_type=jnp.float32,
            )
            return m_new, l, acc

        init = (
            jnp.full((B, K, G, block), _NEG, jnp.float32),
            jnp.zeros((B, K, G, block), jnp.float32),
            jnp.zeros((B, K, G, block, D), jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(start, qi + 1, body, init)  # causal: none after qi.
        l = jnp.where(l == 0.0, 1.0, l)  # padded rows only; real rows always see their diagonal.
        if sigmoid:
            return acc, jnp.log(l)
        return acc / l[..., None], m + jnp.log(l)

    out_n, lse_n = jax.lax.map(one_query_block, jnp.arange(n))
    # [n, B, K, G, block, ...] -> [B, K, G, Tp, ...]
    out = jnp.moveaxis(out_n, 0, 3).reshape(B, K, G, Tp, D)
    lse = jnp.moveaxis(lse_n, 0, 3).reshape(B, K, G, Tp)
    return out, lse


def _backward(
    q, k, v, seg, bias, out, lse, dout, dlse, scale, block, global_first_key, window, softcap,
    sigmoid,
):
    """Flash-attention backward: dq, dk, dv recomputing each block's weights from the LSE.

    dS_ij = A_ij (dout_i . v_j - delta_i) with delta_i = dout_i . out_i - dlse_i: the LSE's
    cotangent adds dlse_i * A_ij, which is a shift of delta.
    """
    B, K, G, Tp, D = q.shape
    n = Tp // block
    if not sigmoid:
        delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B,K,G,Tp]
        delta = delta - dlse.astype(jnp.float32)
    else:  # d lse_i / d A_ij = 1 / total_i = exp(-lse_i).
        delta = -dlse.astype(jnp.float32) * jnp.exp(-lse)

    def probs_and_ds(qi, kj):
        q_blk = _block(q, qi, block, 3)
        k_blk, v_blk = _block(k, kj, block, 2), _block(v, kj, block, 2)
        do_blk = _block(dout, qi, block, 3)
        s = _scores(q_blk, k_blk, scale, softcap)
        visible = _mask(qi, kj, seg, block, global_first_key, window)
        dp = jnp.einsum("bkgqd,bkcd->bkgqc", do_blk, v_blk, preferred_element_type=jnp.float32)
        if not sigmoid:
            p = jnp.where(visible, jnp.exp(s - _block(lse, qi, block, 3)[..., None]), 0.0)
            ds = p * (dp - _block(delta, qi, block, 3)[..., None])
        else:
            b_blk = _block(bias, qi, block, 1)[:, None, None, :, None]
            p = jnp.where(visible, jax.nn.sigmoid(s + b_blk), 0.0)
            ds = p * (1.0 - p) * (dp - _block(delta, qi, block, 3)[..., None])
        if softcap is not None:  # d(cap tanh(x / cap))/dx = 1 - tanh^2 = 1 - (s / cap)^2.
            ds = ds * (1.0 - (s / softcap) ** 2)
        return q_blk, k_blk, do_blk, p, ds

    def dkv_for_key_block(kj):
        def body(qi, carry):
            dk, dv = carry
            q_blk, _, do_blk, p, ds = probs_and_ds(qi, kj)
            dv = dv + jnp.einsum("bkgqc,bkgqd->bkcd", p, do_blk.astype(jnp.float32))
            dk = dk + jnp.einsum("bkgqc,bkgqd->bkcd", ds, q_blk.astype(jnp.float32)) * scale
            return dk, dv

        zeros = jnp.zeros((B, K, block, D), jnp.float32)
        end = _query_blocks_end(kj, n, block, global_first_key, window)
        return jax.lax.fori_loop(kj, end, body, (zeros, zeros))  # causal: none before kj.

    def dq_for_query_block(qi):
        start, first = _key_blocks(qi, block, global_first_key, window)

        def body(c, dq):
            _, k_blk, _, _, ds = probs_and_ds(qi, jnp.where(c < first, 0, c))
            return dq + jnp.einsum("bkgqc,bkcd->bkgqd", ds, k_blk.astype(jnp.float32)) * scale

        dq0 = jnp.zeros((B, K, G, block, D), jnp.float32)
        return jax.lax.fori_loop(start, qi + 1, body, dq0)

    dk_n, dv_n = jax.lax.map(dkv_for_key_block, jnp.arange(n))
    dq_n = jax.lax.map(dq_for_query_block, jnp.arange(n))
    dk = jnp.moveaxis(dk_n, 0, 2).reshape(B, K, Tp, D)
    dv = jnp.moveaxis(dv_n, 0, 2).reshape(B, K, Tp, D)
    dq = jnp.moveaxis(dq_n, 0, 3).reshape(B, K, G, Tp, D)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9, 10))
def _attend(q, k, v, seg, bias, scale, block, global_first_key, window, softcap, sigmoid):
    return _forward(q, k, v, seg, bias, scale, block, global_first_key, window, softcap, sigmoid)


def _attend_fwd(q, k, v, seg, bias, scale, block, global_first_key, window, softcap, sigmoid):
    statics = (scale, block, global_first_key, window, softcap, sigmoid)
    out, lse = _forward(q, k, v, seg, bias, *statics)
    return (out, lse), (q, k, v, seg, bias, out, lse)


def _attend_bwd(scale, block, global_first_key, window, softcap, sigmoid, res, cotangents):
    q, k, v, seg, bias, out, lse = res
    dout, dlse = cotangents
    statics = (scale, block, global_first_key, window, softcap, sigmoid)
    dq, dk, dv = _backward(q, k, v, seg, bias, out, lse, dout, dlse, *statics)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_attend.defvjp(_attend_fwd, _attend_bwd)


def blockwise_attention(
    q_BxTxHxD: jax.Array,
    k_BxTxKxD: jax.Array,
    v_BxTxKxD: jax.Array,
    segment_ids_BxT: jax.Array | None = None,
    *,
    scale: float,
    global_first_key: bool = False,
    window: int | None = None,
    softcap: float | None = None,
    block_size: int = 512,
    sigmoid_bias: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Causal flash-style attention. Returns out [B,T,H,D] (q's dtype), lse [B,H,T] float32.

    `window`: query i sees keys i - window < j <= i only; `softcap`: scores are soft-capped;
    `sigmoid_bias` [B or 1, T]: sigmoid attention with that bias per query (lse: the log of
    each row's total weight).
    """
    B, T, H, D = q_BxTxHxD.shape
    block = min(block_size, T)
    seg = (
        jnp.zeros((B, T), jnp.int32)
        if segment_ids_BxT is None
        else segment_ids_BxT.astype(jnp.int32)
    )
    q, k, v, seg = _layout(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg, block)
    window = None if window is None else int(window)
    softcap = None if softcap is None else float(softcap)
    bias = None
    if sigmoid_bias is not None:
        bias_BxT = jnp.broadcast_to(sigmoid_bias.astype(jnp.float32), (B, T))
        bias = jnp.pad(bias_BxT, [(0, 0), (0, q.shape[3] - T)])
    statics = (float(scale), int(block), bool(global_first_key), window, softcap, bias is not None)
    out, lse = _attend(q, k, v, seg, bias, *statics)
    out_BxTxHxD = out.transpose(0, 3, 1, 2, 4).reshape(B, -1, H, D)[:, :T].astype(q_BxTxHxD.dtype)
    lse_BxHxT = lse.reshape(B, H, -1)[:, :, :T]
    return out_BxTxHxD, lse_BxHxT
