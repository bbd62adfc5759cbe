"""Attention variants that give a head a no-op without spending a token on it (pure functions).

`ModelConfig.attention_variant` picks one; `sinks_jax.model.attention.attention` applies it
after the backend, so every backend keeps its kernel, its masks (causal, segments, windows,
`global_first_key`) and its `(out, lse)` contract. With o and lse the backend's output and
natural-log LSE over the visible keys (shapes as in `attention`):

  softmax           the baseline: out = o.
  sink_logit        a learned logit s_h per head joins every softmax row as an extra slot with
                    no value (gpt-oss's attention sinks). Exactly, from (o, lse) alone:
                        lse' = logaddexp(lse, s_h)    out = o * sigmoid(lse - s_h)
                        slot mass = sigmoid(s_h - lse)
                    s_h starts at 0 (the parameter `sink_logit` [H]): the model then starts as
                    softmax_plus_one, whose slot takes 1 / (1 + sum_j exp(s_j)); at
                    initialisation (scores near 0) about 1 / (t + 2) for query t, so only the
                    first few queries park much, and the rest of the row starts as softmax.
  softmax_plus_one  the same slot with s_h fixed at 0 (Miller's "softmax + 1"; no parameter).
  kv_bias           a learned key/value pair per kv head, seen by every query (Gu et al.'s
                    key/value bias): s_b = scale * q . k_b (soft-capped like the others),
                        lse' = logaddexp(lse, s_b)
                        out  = sigmoid(lse - s_b) * o + sigmoid(s_b - lse) * v_b
                    The slot has no position (no RoPE). k_b and v_b (`bk_slot`, `bv_slot`
                    [K, hd]) start at 0: the same start as softmax_plus_one.
  gated             out = o * sigmoid(x W_g + b_g), x the layer's normed input, one gate per
                    head and head dim (Qiu et al. 2025), applied before the output projection
                    (`Block`; `gate` below). W_g = 0 and b_g = 0 at initialisation: every gate
                    starts at 0.5, where the sigmoid's slope is steepest (gradients to b_g
                    and W_g are largest) and no head or dimension is preferred; the factor 1/2
                    on the attention output is the same as a smaller init of W_O.
  sigmoid           no row normalisation: A_ij = sigmoid(s_ij + b_i) on the visible keys,
                    out_i = sum_j A_ij v_j, with b_i = -log n_i, n_i the number of keys query i
                    sees (Ramapuram et al.'s b = -log n, with n counted per query rather than
                    as the call's length: a query's output then does not depend on how many
                    tokens follow it, so a prefix, generation one token at a time and the
                    evaluation at T = 64 compute the function trained at T = 2048; under causal
                    masking the sum of the weights starts near n_i sigmoid(-log n_i) ~ 1).
                    Its own path in the `xla` and `blockwise` backends and its own fused
                    kernels on `pallas` (model/sigmoid_kernel.py; `backends.Capabilities.
                    sigmoid`); the returned "lse" is the natural log of the row's total mass,
                    log sum_j A_ij (differentiable like every backend's LSE).

Where the no-op mass went (`noop_mass` [B, H, T], collected per layer): the slot's share for
sink_logit, softmax_plus_one and kv_bias; 1 - the mean gate over the head dim for gated (the
fraction of the head's output the gate switches off); 1 - sum_j A_ij for sigmoid (negative
when a row's weights sum past 1); 0 for softmax.

The sink score is one definition across variants: the weight the sink key's value gets in the
head's output, before any gate. For the softmax variants that is the attention to the sink key
in the full row, slot included, exp(s_i0 - lse'), so the returned LSE is lse' (and `lse`
statistics are those of the full row); for sigmoid it is sigmoid(s_i0 + b_i); for gated the
ungated attention A_i0 (the gate's share is in `noop_mass`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sinks_jax.model.kv_heads import expand_kv

VARIANTS = ("softmax", "sink_logit", "softmax_plus_one", "gated", "kv_bias", "sigmoid")
SLOT_VARIANTS = ("sink_logit", "softmax_plus_one", "kv_bias")  # merged through the LSE.


class Slot(NamedTuple):
    """A variant's learned parameters for `attention` (None where the variant has none)."""

    logit_H: jax.Array | None = None  # sink_logit: s_h.
    key_KxD: jax.Array | None = None  # kv_bias: k_b.
    value_KxD: jax.Array | None = None  # kv_bias: v_b.


def sigmoid_bias(visible_keys_BxT: jax.Array) -> jax.Array:
    """b_i = -log n_i of sigmoid attention, n_i the keys query i sees (float32 [B or 1, T])."""
    return -jnp.log(visible_keys_BxT.astype(jnp.float32))


def merge_slot(out_BxTxHxD, lse_BxHxT, slot_logit_BxHxT, slot_value_BxTxHxD=None):
    """One extra softmax slot (logit, optional value) merged into (out, lse), exactly.

    Returns (out in out's dtype, lse' = logaddexp(lse, logit) float32, slot mass [B,H,T]).
    sigmoid(lse - logit) = exp(lse - lse') is the keys' share, sigmoid(logit - lse) the slot's.
    """
    lse = lse_BxHxT.astype(jnp.float32)
    logit = slot_logit_BxHxT.astype(jnp.float32)
    keys_BxTxHx1 = jax.nn.sigmoid(lse - logit).transpose(0, 2, 1)[..., None]
    mass_BxHxT = jax.nn.sigmoid(logit - lse)
    out = keys_BxTxHx1 * out_BxTxHxD.astype(jnp.float32)
    if slot_value_BxTxHxD is not None:
        out = out + mass_BxHxT.transpose(0, 2, 1)[..., None] * slot_value_BxTxHxD
    return out.astype(out_BxTxHxD.dtype), jnp.logaddexp(lse, logit), mass_BxHxT


def null_slot(out_BxTxHxD, lse_BxHxT, logit_H=None):
    """sink_logit (logit_H [H]) or softmax_plus_one (None: logit 0): a slot with no value."""
    return merge_slot(out_BxTxHxD, lse_BxHxT, null_logit(lse_BxHxT.shape, logit_H))


def null_logit(shape_BxHxT, logit_H=None):
    """The slot logit of sink_logit (logit_H [H]) or softmax_plus_one (None: 0), [B, H, T]."""
    B, H, T = shape_BxHxT
    logit = jnp.zeros((H,), jnp.float32) if logit_H is None else logit_H.astype(jnp.float32)
    return jnp.broadcast_to(logit[None, :, None], (B, H, T))


def kv_slot(out_BxTxHxD, lse_BxHxT, q_BxTxHxD, key_KxD, value_KxD, *, scale, softcap=None):
    """kv_bias: a learned key/value pair per kv head, visible to every query."""
    value_HxD = expand_kv(value_KxD.astype(jnp.float32), q_BxTxHxD.shape[2], axis=0)
    s_BxHxT = kv_logit(q_BxTxHxD, key_KxD, scale=scale, softcap=softcap)
    return merge_slot(out_BxTxHxD, lse_BxHxT, s_BxHxT, value_HxD[None, None])


def kv_logit(q_BxTxHxD, key_KxD, *, scale, softcap=None):
    """kv_bias's slot logit s_b = scale * q . k_b (soft-capped), float32 [B, H, T]; k_b is
    taken in q's dtype (the layer passes both in its compute dtype)."""
    # The score in float32 from q's own dtype (no float32 copy of q): the products of two bf16
    # numbers are exact in float32, so this is the float32 dot of the upcast inputs.
    key_HxD = expand_kv(key_KxD.astype(q_BxTxHxD.dtype), q_BxTxHxD.shape[2], axis=0)
    s_BxHxT = scale * jnp.einsum(
        "bthd,hd->bht", q_BxTxHxD, key_HxD, preferred_element_type=jnp.float32
    )
    if softcap is not None:
        s_BxHxT = softcap * jnp.tanh(s_BxHxT / softcap)
    return s_BxHxT


def gate(out_BxTxHxD, x_BxTxD, w_DxHxE, b_HxE):
    """gated: out * sigmoid(x W + b) per head and head dim. Returns (out, 1 - mean gate
    [B, H, T] float32), the second being the share of the output switched off.

    The logits are float32 (x W accumulated in float32, plus b); the forward is one matmul and
    one elementwise pass. The VJP (`_gate_bwd`) is autodiff's, except that the logits'
    cotangent enters the two backward matmuls in x's dtype (as a bf16 einsum's own backward
    does), so with bf16 compute they run as bf16 matmuls rather than as float32 ones over
    upcast copies of x and W; with float32 compute it is autodiff's to rounding.
    """
    return _gate(out_BxTxHxD, x_BxTxD, w_DxHxE, b_HxE)


def _gate_logits(x_BxTxD, w_DxHxE):
    return jnp.einsum("btd,dhe->bthe", x_BxTxD, w_DxHxE, preferred_element_type=jnp.float32)


def _gate_apply(out_BxTxHxD, logits_BxTxHxE, b_HxE):
    g_BxTxHxE = jax.nn.sigmoid(logits_BxTxHxE + b_HxE.astype(jnp.float32))
    out = (out_BxTxHxD.astype(jnp.float32) * g_BxTxHxE).astype(out_BxTxHxD.dtype)
    return out, 1.0 - g_BxTxHxE.mean(-1).transpose(0, 2, 1), g_BxTxHxE


@jax.custom_vjp
def _gate(out_BxTxHxD, x_BxTxD, w_DxHxE, b_HxE):
    out, noop, _ = _gate_apply(out_BxTxHxD, _gate_logits(x_BxTxD, w_DxHxE), b_HxE)
    return out, noop


def _gate_fwd(out_BxTxHxD, x_BxTxD, w_DxHxE, b_HxE):
    logits_BxTxHxE = _gate_logits(x_BxTxD, w_DxHxE)
    out, noop, _ = _gate_apply(out_BxTxHxD, logits_BxTxHxE, b_HxE)
    return (out, noop), (out_BxTxHxD, x_BxTxD, w_DxHxE, b_HxE, logits_BxTxHxE)


def _gate_bwd(res, cotangents):
    out_BxTxHxD, x_BxTxD, w_DxHxE, b_HxE, logits_BxTxHxE = res
    dout_BxTxHxD, dnoop_BxHxT = cotangents
    g_BxTxHxE = jax.nn.sigmoid(logits_BxTxHxE + b_HxE.astype(jnp.float32))
    do = dout_BxTxHxD.astype(jnp.float32)
    dg = do * out_BxTxHxD.astype(jnp.float32)
    dg = dg - dnoop_BxHxT.astype(jnp.float32).transpose(0, 2, 1)[..., None] / g_BxTxHxE.shape[-1]
    dlogits_BxTxHxE = dg * g_BxTxHxE * (1.0 - g_BxTxHxE)
    dl = dlogits_BxTxHxE.astype(x_BxTxD.dtype)
    dx = jnp.einsum("bthe,dhe->btd", dl, w_DxHxE.astype(dl.dtype),
                    preferred_element_type=jnp.float32)  # fmt: skip
    dw = jnp.einsum("btd,bthe->dhe", x_BxTxD, dl, preferred_element_type=jnp.float32)
    return (
        (do * g_BxTxHxE).astype(out_BxTxHxD.dtype),
        dx.astype(x_BxTxD.dtype),
        dw.astype(w_DxHxE.dtype),
        dlogits_BxTxHxE.sum((0, 1)).astype(b_HxE.dtype),
    )


_gate.defvjp(_gate_fwd, _gate_bwd)


def sigmoid_noop_mass(lse_BxHxT):
    """sigmoid: 1 - the row's total mass (its "lse" is the log of that mass)."""
    return 1.0 - jnp.exp(lse_BxHxT)
