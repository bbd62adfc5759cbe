"""The LSE in flash attention: its cotangent in a flash backward, and merging keys through it.

Every attention backend returns the natural-log LSE of the (scaled, soft-capped) scores beside
its output, and the LSE may enter a loss (a z-loss, the slot variants of model/variants.py, the
merge below). With d lse_i / d s_ij = A_ij, the LSE's cotangent g_i only shifts a flash
backward's row term:

    dS_ij = A_ij (dout_i . v_j - D_i),    D_i = dout_i . out_i - g_i      (`row_term`)

The Pallas kernels (model/fused.py, model/splash.py) take D_i from `row_term` in place of their
own; the cuDNN layer computes D_i from the output it is handed, so there the output is moved
instead (`fold_lse_cotangent`).

`attend_first_key_globally` turns any segment-masked kernel into one where key 0 stays visible
to every query (`global_first_key=True`), exactly, by merging key 0 into the kernel's result
through the LSE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sinks_jax.model.kv_heads import expand_kv


def row_term(out, dout, dlse, to_lse_layout=None):
    """A flash backward's row term with the LSE's cotangent g: D_i = dout_i . out_i - g_i,
    float32, in the LSE's layout.

    out, dout: [..., D]; `to_lse_layout` maps out's leading axes to dlse's (None: the same).
    With d lse_i / d s_ij = A_ij, dS_ij = A_ij (dout_i . v_j - D_i) is then the gradient of
    the output's and the LSE's cotangents together, for any g (also where dout_i = 0).
    """
    delta = jnp.sum(out.astype(jnp.float32) * dout.astype(jnp.float32), axis=-1)
    delta = delta if to_lse_layout is None else to_lse_layout(delta)
    return delta - dlse.astype(jnp.float32)


def fold_lse_cotangent(out_BxTxHxD, dout_BxTxHxD, dlse_BxHxT):
    """(`out` moved so that dout_i . out_i becomes the row term dout_i . out_i - g_i, carried
    [B, H, T]): for a backward that computes its row term from the output it is handed
    (cuDNN's); the output enters such a backward through the row term only.

    `out` moves along dout_i by -g_i / |dout_i|^2 where |dout_i|^2 > 2^-100 (`carried`); a
    query whose output cotangent is smaller keeps its out and needs its g_i elsewhere. In
    bfloat16 the moved output is rounded to 2^-9 of |out_id| + |g_i dout_id| / |dout_i|^2, so
    the row term is off by at most 2^-9 (sum_d |dout_id out_id| + |g_i|), whatever the ratio
    of g to dout.
    """
    g_BxTxHx1 = dlse_BxHxT.astype(jnp.float32).transpose(0, 2, 1)[..., None]
    do = dout_BxTxHxD.astype(jnp.float32)
    norm2_BxTxHx1 = jnp.sum(do * do, axis=-1, keepdims=True)
    carried = norm2_BxTxHx1 > 2.0**-100  # |g| / |dout| stays finite.
    inv_BxTxHx1 = jax.lax.rsqrt(jnp.where(carried, norm2_BxTxHx1, 1.0))
    shift_BxTxHx1 = jnp.where(carried, g_BxTxHx1 * inv_BxTxHx1, 0.0)
    moved = out_BxTxHxD.astype(jnp.float32) - shift_BxTxHx1 * (do * inv_BxTxHx1)
    return moved.astype(out_BxTxHxD.dtype), carried[..., 0].transpose(0, 2, 1)


def attend_first_key_globally(
    segment_attention, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, *, scale, softcap=None
):
    """Causal, segment-masked attention in which key 0 is visible to every query (exact).

    `segment_attention(q, k, v, segment_ids, scale=...) -> (out_seg, lse_seg)` is any kernel
    that masks causally and by segment (and soft-caps its scores by `softcap`, if given). A
    query outside key 0's segment gets key 0 as one extra slot, s_0 = scale * q . k_0, capped
    as the kernel caps every score (softcap * tanh(s_0 / softcap)):

        lse = logaddexp(lse_seg, s_0)
        out = exp(lse_seg - lse) * out_seg + exp(s_0 - lse) * v_0

    (the softmax over the union of the two key sets); queries of key 0's own segment already
    see it and are unchanged. The merged LSE is the LSE of the union, so sink statistics from
    it stay exact. Gradients are autodiff through the merge, and need the kernel's VJP to
    take the LSE's cotangent (every backend's does: `row_term`).
    """
    if segment_ids_BxT is None:  # one causal window: key 0 is visible already.
        return segment_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, None, scale=scale)
    out_seg_BxTxHxD, lse_seg_BxHxT = segment_attention(
        q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, scale=scale
    )
    H = q_BxTxHxD.shape[2]
    k0_BxHxD = expand_kv(k_BxTxKxD[:, 0], H, axis=1)
    v0_BxHxD = expand_kv(v_BxTxKxD[:, 0], H, axis=1).astype(jnp.float32)
    s0_BxHxT = scale * jnp.einsum(
        "bthd,bhd->bht", q_BxTxHxD, k0_BxHxD, preferred_element_type=jnp.float32
    )
    if softcap is not None:  # as attention.soft_cap (which imports this module).
        s0_BxHxT = softcap * jnp.tanh(s0_BxHxT / softcap)
    apart_Bx1xT = (segment_ids_BxT != segment_ids_BxT[:, :1])[:, None, :]
    s0_BxHxT = jnp.where(apart_Bx1xT, s0_BxHxT, -jnp.inf)  # -inf: the slot is already counted.
    lse_BxHxT = jnp.logaddexp(lse_seg_BxHxT, s0_BxHxT)
    w_seg_BxTxHx1 = jnp.exp(lse_seg_BxHxT - lse_BxHxT).transpose(0, 2, 1)[..., None]
    w0_BxTxHx1 = jnp.exp(s0_BxHxT - lse_BxHxT).transpose(0, 2, 1)[..., None]
    out = w_seg_BxTxHx1 * out_seg_BxTxHxD.astype(jnp.float32) + w0_BxTxHx1 * v0_BxHxD[:, None]
    return out.astype(q_BxTxHxD.dtype), lse_BxHxT
