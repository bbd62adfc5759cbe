"""The slot variants on cuDNN with one backward over the merged row (no merge to differentiate).

sink_logit, softmax_plus_one and kv_bias add one slot (logit l_i, value u, possibly 0) to every
softmax row; `variants.merge_slot` merges it into the kernel's (o, lse) exactly. Differentiating
that merge costs passes over [B, T, H, D] on top of the kernel's backward (the output's
rescaling, the LSE's cotangent folded into the output). They are not needed: with the merged
row's weights P'_ij = exp(s_ij - lse'_i) and its output o', the gradient of the scores is that
of one softmax over the keys and the slot,

    dS_ij = P'_ij (dout_i . v_j - D_i)            (the keys j)
    dl_i  = m_i (dout_i . u - D_i) + c_i m_i      (the slot, m_i = P'_i,slot its mass)
    du    = sum_i m_i dout_i
    D_i   = dout_i . o'_i - g_i + c_i m_i

for cotangents dout, g (of lse') and c (of the mass). The first line is what cuDNN's own
backward computes when handed (o', lse') in place of (o, lse): its weights exp(s_ij - lse') are
P'_ij and its row term is dout_i . o'_i, so the kernel's one backward serves the merged row, and
the rest is a reduction over dout (the row term, with the LSE's and the mass's cotangents moved
into it as `fused` does for the plain kernel). In training g = c = 0 (the statistics are
stop-gradient), so nothing is folded.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sinks_jax.model import fused
from sinks_jax.model.flash_lse import row_term
from sinks_jax.model.variants import merge_slot

SymbolicZero = jax.custom_derivatives.SymbolicZero


def cudnn_slot_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, logit_BxHxT, value_BxHxD=None, *,
                         scale, window=None):  # fmt: skip
    """(out', lse' float32, slot mass float32 [B, H, T]) of causal cuDNN attention with one
    slot per row (logit [B, H, T]; value [B, H, D], one per row so that `shard.per_device`
    splits it with the batch, or None), as `variants.merge_slot` of `fused.cudnn_attention`'s
    result, with the backward above. Needs the cuDNN layer (`fused.cudnn_layer_ok()`); the
    caller checks the inputs as `fused.cudnn_attention` does."""
    has_value = value_BxHxD is not None
    B, _, H, D = q_BxTxHxD.shape
    value = value_BxHxD if has_value else jnp.zeros((B, H, D), jnp.float32)
    return _slot_mha(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, logit_BxHxT.astype(jnp.float32),
                     value.astype(jnp.float32), float(scale), window, has_value)  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _slot_mha(q, k, v, logit, value, scale, window, has_value):
    return _forward(q, k, v, logit, value, scale, window, has_value)[0]


def _forward(q, k, v, logit, value, scale, window, has_value):
    (o, lse), _ = fused.cudnn_forward(q, k, v, scale, window)
    out, lse_merged, mass = merge_slot(o, lse, logit, value[:, None] if has_value else None)
    return (out, lse_merged, mass), (q, k, v, out, lse_merged, mass, value)


def _fwd(q, k, v, logit, value, scale, window, has_value):  # CustomVJPPrimal (symbolic_zeros)
    primals = (x.value for x in (q, k, v, logit, value))
    return _forward(*primals, scale, window, has_value)


def _bwd(scale, window, has_value, res, cotangents):
    q, k, v, out, lse, mass_BxHxT, value_BxHxD = res
    dout, dlse, dmass = cotangents
    # The LSE's and the mass's cotangents as one shift of the row term: g_i - c_i m_i.
    g = None if isinstance(dlse, SymbolicZero) else dlse.astype(jnp.float32)
    if not isinstance(dmass, SymbolicZero):
        shift = -dmass.astype(jnp.float32) * mass_BxHxT
        g = shift if g is None else g + shift
    no_out = isinstance(dout, SymbolicZero)
    if g is not None:  # folded into the output the layer is handed (`fused.cudnn_backward`)
        dq, dk, dv = fused.cudnn_backward(scale, window, (q, k, v, out, lse), (dout, g))
    elif not no_out:
        dq, dk, dv = fused.cudnn_layer_backward(scale, window, q, k, v, out, lse, dout)
    else:
        dq, dk, dv = jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v)
    # The slot: dl_i = m_i (dout_i . u - D_i) + c_i m_i, du = sum_i m_i dout_i.
    g_BxHxT = jnp.zeros_like(mass_BxHxT) if g is None else g
    dvalue = jnp.zeros_like(value_BxHxD)
    if no_out:
        dlogit = mass_BxHxT * g_BxHxT
    else:
        to_bht = lambda x_BxTxH: x_BxTxH.transpose(0, 2, 1)  # noqa: E731
        slot_term_BxHxT = -row_term(out, dout, g_BxHxT, to_bht)
        if has_value:
            do = dout.astype(jnp.float32)
            slot_term_BxHxT += to_bht(jnp.einsum("bthd,bhd->bth", do, value_BxHxD))
            dvalue = jnp.einsum("bht,bthd->bhd", mass_BxHxT, do)
        dlogit = mass_BxHxT * slot_term_BxHxT
    if not isinstance(dmass, SymbolicZero):
        dlogit = dlogit + dmass.astype(jnp.float32) * mass_BxHxT
    return dq, dk, dv, dlogit, dvalue


_slot_mha.defvjp(_fwd, _bwd, symbolic_zeros=True)
