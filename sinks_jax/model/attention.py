"""One attention entry point, several backends, and sink statistics from the log-sum-exp.

Every backend returns the attention output and the natural-log log-sum-exp (LSE) of the scaled
scores per query. With the LSE, any single attention weight is recovered exactly in O(d):

    A[i, j] = exp(scale * q_i . k_j - lse_i)

so the attention each query pays to its sink key costs O(T d) per head, never O(T^2).

Backends:
  xla        explicit fp32 softmax; the reference and the only one that returns full maps.
  blockwise  pure-JAX flash-style attention with a custom VJP (sinks_jax.model.blockwise).
  cudnn      jax.nn.dot_product_attention(implementation="cudnn"), GPU; causal, no segments.
  pallas     the Pallas GPU flash kernel (jax.experimental.pallas.ops.gpu.attention); with
             `global_first_key`, key 0 is merged in through the LSE
             (fused.attend_first_key_globally).
  splash     the Pallas TPU splash kernel (sinks_jax.model.splash), tiled by `block_size`.

Shapes: B batch, T tokens, H query heads, K kv heads (H % K == 0), D head dim.
Masking: causal by window index; with `segment_ids` ([B, T] int32) a query sees only keys of
its own segment; `window` (local layers) limits query i to keys i - window < j <= i (itself
and the window - 1 keys before it, as Hugging Face's sliding windows); `global_first_key`
additionally makes key 0 visible to every query, past segments and windows alike.
`softcap` replaces every scaled score s by softcap * tanh(s / softcap) (Gemma 2); the LSE is
then that of the capped scores.

Variants (`variant`, `sinks_jax.model.variants`) are applied here, after the backend, through
its (out, lse): sink_logit, softmax_plus_one and kv_bias merge one extra slot into the row (the
returned LSE is then that of the full row, slot included, and `noop` is the slot's share);
sigmoid has its own path in `xla`, `blockwise` and `pallas` (its own fused kernels,
`sinks_jax.model.sigmoid_kernel`); gated acts after attention (in the layer).

Under a window the sink key may be hidden from a query: `sink_visible` says which queries see
their sink key, `sink_attention` is 0 for the others (exactly their attention to it).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sinks_jax.model import blockwise as blockwise_lib
from sinks_jax.model import cudnn_slot, fused, shard, sigmoid_kernel
from sinks_jax.model import splash as splash_lib
from sinks_jax.model import variants as variants_lib
from sinks_jax.model.backends import BACKENDS  # the one list, with what each supports.
from sinks_jax.model.kv_heads import expand_kv


class AttentionOut(NamedTuple):
    out_BxTxHxD: jax.Array
    lse_BxHxT: jax.Array  # float32, natural log, of the scaled scores.
    probs_BxHxTxT: jax.Array | None  # float32 (xla backend only, when asked).
    noop_BxHxT: jax.Array | None = None  # float32 slot mass / 1 - total mass (variants only).


def soft_cap(x: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(x / cap): Gemma 2's soft-capping of attention scores and logits (None: x)."""
    return x if cap is None else cap * jnp.tanh(x / cap)


def visible_mask(
    seq_len: int,
    segment_ids_BxT: jax.Array | None = None,
    global_first_key: bool = False,
    window: int | None = None,
) -> jax.Array:
    """Boolean [B or 1, T, T] mask: True where query i may attend to key j (without a window,
    the packed rows' mask `sinks_jax.data.attention_mask_from_segments`, tested equal)."""
    idx = jnp.arange(seq_len)
    near_1xTxT = (idx[None, :] <= idx[:, None])[None]
    if window is not None:
        near_1xTxT = near_1xTxT & (idx[:, None] - idx[None, :] < window)[None]
    if segment_ids_BxT is not None:
        near_1xTxT = near_1xTxT & (segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :])
    if global_first_key:
        near_1xTxT = near_1xTxT | (idx == 0)[None, None, :]
    return near_1xTxT


def visible_count(
    seq_len: int,
    segment_ids_BxT: jax.Array | None = None,
    global_first_key: bool = False,
    window: int | jax.Array | None = None,
) -> jax.Array:
    """[B or 1, T] int32: how many keys each query sees (the row sums of `visible_mask`), O(T).

    `window` may be traced (a per-layer value).
    """
    batch = 1 if segment_ids_BxT is None else segment_ids_BxT.shape[0]
    idx_1xT = jnp.arange(seq_len, dtype=jnp.int32)[None]
    start_BxT = sink_index(segment_ids_BxT, seq_len, batch, per_segment=True)
    n_BxT = idx_1xT - start_BxT + 1
    key0_seen_BxT = start_BxT == 0
    if window is not None:
        n_BxT = jnp.minimum(n_BxT, window)
        key0_seen_BxT = key0_seen_BxT & (idx_1xT < window)
    if global_first_key:
        n_BxT = n_BxT + (~key0_seen_BxT).astype(jnp.int32)
    return n_BxT


def xla_attention(
    q_BxTxHxD,
    k_BxTxKxD,
    v_BxTxKxD,
    *,
    scale,
    segment_ids=None,
    global_first_key=False,
    window=None,
    softcap=None,
    return_probs=False,
    sigmoid_bias=None,
) -> AttentionOut:
    """Explicit attention: fp32 scores and softmax, T x T memory.

    `sigmoid_bias` b ([B or 1, T], not None): sigmoid attention, weights sigmoid(s_ij + b_i)
    on the visible keys without row normalisation; the LSE is then the log of each row's
    total weight.
    """
    B, T, H, D = q_BxTxHxD.shape
    K = k_BxTxKxD.shape[2]
    q_BxTxKxGxD = q_BxTxHxD.reshape(B, T, K, H // K, D)
    s_BxKxGxTxS = (
        jnp.einsum("btkgd,bskd->bkgts", q_BxTxKxGxD, k_BxTxKxD, preferred_element_type=jnp.float32)
        * scale
    )
    s_BxKxGxTxS = soft_cap(s_BxKxGxTxS, softcap)
    mask_Bx1x1xTxS = visible_mask(T, segment_ids, global_first_key, window)[:, None, None]
    if sigmoid_bias is None:
        s_BxKxGxTxS = jnp.where(mask_Bx1x1xTxS, s_BxKxGxTxS, -jnp.inf)
        lse_BxKxGxT = jax.nn.logsumexp(s_BxKxGxTxS, axis=-1)
        p_BxKxGxTxS = jnp.exp(s_BxKxGxTxS - lse_BxKxGxT[..., None])
    else:
        b_Bx1x1xTx1 = sigmoid_bias[:, None, None, :, None]
        p_BxKxGxTxS = jnp.where(mask_Bx1x1xTxS, jax.nn.sigmoid(s_BxKxGxTxS + b_Bx1x1xTx1), 0.0)
        lse_BxKxGxT = jnp.log(p_BxKxGxTxS.sum(-1))
    out_BxTxKxGxD = jnp.einsum(
        "bkgts,bskd->btkgd",
        p_BxKxGxTxS.astype(v_BxTxKxD.dtype),
        v_BxTxKxD,
        preferred_element_type=jnp.float32,
    )
    out = out_BxTxKxGxD.reshape(B, T, H, D).astype(q_BxTxHxD.dtype)
    lse_BxHxT = lse_BxKxGxT.reshape(B, H, T)
    probs = p_BxKxGxTxS.reshape(B, H, T, T) if return_probs else None
    return AttentionOut(out, lse_BxHxT, probs)


def attention(
    q_BxTxHxD: jax.Array,
    k_BxTxKxD: jax.Array,
    v_BxTxKxD: jax.Array,
    *,
    backend: str = "xla",
    segment_ids: jax.Array | None = None,
    global_first_key: bool = False,
    window: int | None = None,
    softcap: float | None = None,
    scale: float | None = None,
    return_probs: bool = False,
    block_size: int = 512,
    variant: str = "softmax",
    slot: variants_lib.Slot | None = None,
) -> AttentionOut:
    """Causal (optionally segment-masked, optionally local) attention through the chosen backend.

    Returns AttentionOut(out [B,T,H,D] in q's dtype, lse [B,H,T] float32 natural log of the
    scaled scores, probs [B,H,T,T] float32 or None, noop [B,H,T] float32 or None).
    `return_probs` needs backend="xla". The VJP with respect to `v` under a cotangent of ones
    is the attention each key receives. `variant` (one of variants.VARIANTS but "gated", which
    acts in the layer) with its parameters in `slot`; "softmax" returns noop=None.
    """
    B, T, H, D = q_BxTxHxD.shape
    K = k_BxTxKxD.shape[2]
    if H % K:
        raise ValueError(f"attention: {H} query heads are not divisible by {K} kv heads.")
    if k_BxTxKxD.shape != v_BxTxKxD.shape or k_BxTxKxD.shape[:2] != (B, T):
        raise ValueError(
            f"attention: q {q_BxTxHxD.shape}, k {k_BxTxKxD.shape}, v {v_BxTxKxD.shape} "
            "must share batch and length, and k and v must have the same shape."
        )
    if segment_ids is not None and segment_ids.shape != (B, T):
        raise ValueError(f"attention: segment_ids shape {segment_ids.shape} != (B, T) = {(B, T)}.")
    if window is not None and not (isinstance(window, int) and window > 0):
        raise ValueError(f"attention: window={window!r} must be a positive int or None.")
    if variant not in variants_lib.VARIANTS or variant == "gated":
        raise ValueError(
            f"attention: variant={variant!r} is not one of {variants_lib.VARIANTS} but 'gated' "
            "(the gate acts on the output, in the layer: variants.gate)."
        )
    scale = D**-0.5 if scale is None else scale
    if return_probs and backend != "xla":
        raise ValueError(
            f"attention: full attention maps need backend='xla', not {backend!r}; "
            "fused backends give the LSE and sink statistics instead."
        )
    sigmoid_bias = None
    if variant == "sigmoid":
        count_BxT = visible_count(T, segment_ids, global_first_key, window)
        sigmoid_bias = variants_lib.sigmoid_bias(count_BxT)
    if sigmoid_bias is not None and backend in BACKENDS and not BACKENDS[backend].sigmoid:
        raise ValueError(
            f"attention: backend={backend!r} has no sigmoid attention; use one of "
            f"{[name for name, c in BACKENDS.items() if c.sigmoid]}."
        )
    if backend == "xla":
        res = xla_attention(
            q_BxTxHxD,
            k_BxTxKxD,
            v_BxTxKxD,
            scale=scale,
            segment_ids=segment_ids,
            global_first_key=global_first_key,
            window=window,
            softcap=softcap,
            return_probs=return_probs,
            sigmoid_bias=sigmoid_bias,
        )
        return _apply_variant(res, variant, slot, q_BxTxHxD, scale, softcap)
    # each: (q, k, v, segment_ids, *, scale, global_first_key, window, softcap) -> (out, lse)
    fused_kernels = {
        "blockwise": functools.partial(
            blockwise_lib.blockwise_attention, block_size=block_size, sigmoid_bias=sigmoid_bias
        ),
        "cudnn": fused.cudnn_attention,
        "pallas": (
            functools.partial(sigmoid_kernel.sigmoid_attention, visible_count=visible_count)
            if variant == "sigmoid"
            else fused.pallas_gpu_attention
        ),
        "splash": functools.partial(splash_lib.splash_attention, block_size=block_size),
    }
    if backend == "cudnn" and variant in variants_lib.SLOT_VARIANTS:
        fused.check_cudnn_inputs(q_BxTxHxD, segment_ids, global_first_key, softcap)
        if fused.cudnn_layer_ok():
            return _cudnn_slot(
                q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, variant, slot, scale=scale, window=window
            )
    if backend in fused_kernels:
        # Per device over the batch axes of the mesh in context (model/shard.py).
        kernel = functools.partial(
            shard.per_device(fused_kernels[backend]),
            scale=scale,
            global_first_key=global_first_key,
            window=window,
            softcap=softcap,
        )
        out, lse = kernel(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids)
        res = AttentionOut(out, lse, None)
        return _apply_variant(res, variant, slot, q_BxTxHxD, scale, softcap)
    raise ValueError(f"attention: unknown backend {backend!r}; choose one of {list(BACKENDS)}.")


def _slot_row(variant, slot, q_BxTxHxD, scale, softcap):
    """A slot variant's extra slot in every row: (logit float32 [B, H, T], value [H, D] float32
    or None)."""
    slot = variants_lib.Slot() if slot is None else slot
    B, T, H, _ = q_BxTxHxD.shape
    if variant == "kv_bias":
        if slot.key_KxD is None or slot.value_KxD is None:
            raise ValueError("attention: variant='kv_bias' needs slot=Slot(key_KxD=, value_KxD=).")
        logit = variants_lib.kv_logit(q_BxTxHxD, slot.key_KxD, scale=scale, softcap=softcap)
        return logit, expand_kv(slot.value_KxD.astype(jnp.float32), H, axis=0)
    if variant == "sink_logit" and slot.logit_H is None:
        raise ValueError("attention: variant='sink_logit' needs slot=Slot(logit_H=...).")
    logit_H = slot.logit_H if variant == "sink_logit" else None
    return variants_lib.null_logit((B, H, T), logit_H), None


def _cudnn_slot(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, variant, slot, *, scale, window):
    """A slot variant on cuDNN with one backward over the merged row (model/cudnn_slot.py)."""
    B, T, H, D = q_BxTxHxD.shape
    logit_BxHxT, value_HxD = _slot_row(variant, slot, q_BxTxHxD, scale, None)
    value_BxHxD = None if value_HxD is None else jnp.broadcast_to(value_HxD[None], (B, H, D))
    kernel = shard.per_device(cudnn_slot.cudnn_slot_attention, outputs=3)
    out, lse, noop_BxHxT = kernel(
        q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, logit_BxHxT, value_BxHxD, scale=scale, window=window
    )
    return AttentionOut(out, lse, None, noop_BxHxT)


def _apply_variant(res: AttentionOut, variant, slot, q_BxTxHxD, scale, softcap) -> AttentionOut:
    """The variant's merge of the backend's (out, lse); see sinks_jax.model.variants."""
    if variant == "softmax":
        return res
    if variant == "sigmoid":
        return res._replace(noop_BxHxT=variants_lib.sigmoid_noop_mass(res.lse_BxHxT))
    logit_BxHxT, value_HxD = _slot_row(variant, slot, q_BxTxHxD, scale, softcap)
    value = None if value_HxD is None else value_HxD[None, None]
    out, lse, noop_BxHxT = variants_lib.merge_slot(res.out_BxTxHxD, res.lse_BxHxT, logit_BxHxT, value)
    probs = res.probs_BxHxTxT
    if probs is not None:  # the keys' weights in the full row, slot included.
        probs = probs * jnp.exp(res.lse_BxHxT - lse)[..., None]
    return AttentionOut(out, lse, probs, noop_BxHxT)


def sink_index(
    segment_ids_BxT: jax.Array | None, seq_len: int, batch: int, per_segment: bool
) -> jax.Array:
    """[B, T] int32 index of each query's sink key: 0, or the first key of its own segment."""
    if not per_segment or segment_ids_BxT is None:
        return jnp.zeros((batch, seq_len), jnp.int32)
    idx = jnp.arange(seq_len, dtype=jnp.int32)
    starts_BxT = jnp.concatenate(
        [jnp.ones((batch, 1), bool), segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1]], axis=1
    )
    return jax.lax.cummax(jnp.where(starts_BxT, idx[None], 0), axis=1)


def sink_visible(
    sink_idx_BxT: jax.Array,
    segment_ids: jax.Array | None = None,
    *,
    global_first_key: bool = False,
    window: int | jax.Array | None = None,
) -> jax.Array:
    """[B, T] bool: whether each query can see its sink key (the mask `visible_mask` applies).

    A query cannot see it when the sink lies in another segment, or, in a local layer, when it
    lies `window` or more positions back (query t sees key 0 only for t < window), unless the
    sink is key 0 and `global_first_key` is set. `window` may be traced (a per-layer value).
    """
    t_1xT = jnp.arange(sink_idx_BxT.shape[1], dtype=jnp.int32)[None]
    visible_BxT = jnp.ones(sink_idx_BxT.shape, bool)
    if segment_ids is not None:
        seg_sink_BxT = jnp.take_along_axis(segment_ids, sink_idx_BxT, axis=1)
        visible_BxT = seg_sink_BxT == segment_ids
    if window is not None:
        visible_BxT = visible_BxT & (t_1xT - sink_idx_BxT < window)
    if global_first_key:
        visible_BxT = visible_BxT | (sink_idx_BxT == 0)
    return visible_BxT


def sink_attention(
    q_BxTxHxD: jax.Array,
    k_BxTxKxD: jax.Array,
    lse_BxHxT: jax.Array,
    sink_idx_BxT: jax.Array,
    *,
    scale: float,
    segment_ids: jax.Array | None = None,
    global_first_key: bool = False,
    window: int | jax.Array | None = None,
    softcap: float | None = None,
    sigmoid_bias: jax.Array | None = None,
) -> jax.Array:
    """[B, H, T] float32 attention each query pays to its sink key, from the LSE: O(T D).

    Exactly 0 for the queries that cannot see their sink key (`sink_visible`). With a slot
    variant, pass the full row's LSE (what `attention` returns): the attention is then that of
    the full row. `sigmoid_bias` b (sigmoid attention): the weight sigmoid(s + b) instead.
    """
    H = q_BxTxHxD.shape[2]
    k_sink_BxTxKxD = jnp.take_along_axis(k_BxTxKxD, sink_idx_BxT[:, :, None, None], axis=1)
    k_sink_BxTxHxD = expand_kv(k_sink_BxTxKxD, H)
    s_BxTxH = (
        jnp.einsum(
            "bthd,bthd->bth", q_BxTxHxD.astype(jnp.float32), k_sink_BxTxHxD.astype(jnp.float32)
        )
        * scale
    )
    s_BxTxH = soft_cap(s_BxTxH, softcap)
    if sigmoid_bias is None:
        a_BxHxT = jnp.exp(s_BxTxH.transpose(0, 2, 1) - lse_BxHxT)
    else:
        a_BxHxT = jax.nn.sigmoid(s_BxTxH.transpose(0, 2, 1) + sigmoid_bias[:, None, :])
    if segment_ids is not None or window is not None:
        visible_BxT = sink_visible(
            sink_idx_BxT, segment_ids, global_first_key=global_first_key, window=window
        )
        a_BxHxT = jnp.where(visible_BxT[:, None, :], a_BxHxT, 0.0)
    return a_BxHxT
