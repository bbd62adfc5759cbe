"""Fused GPU attention kernels, each returning (out [B,T,H,D], natural-log LSE [B,H,T] f32).

The kernels' own LSE conventions differ, and this module is where they are made uniform:
  cudnn   natural log of the *scaled* scores, float32 [B, H, T] from the cuDNN layer (the public
          jax.nn.dot_product_attention casts it to the output dtype and transposes it).
  pallas  jax.experimental.pallas.ops.gpu.attention: base-2 LSE of the scaled scores, float32
          [B, H, T]; multiplied by ln 2 here.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def cudnn_attention(
    q_BxTxHxD,
    k_BxTxKxD,
    v_BxTxKxD,
    segment_ids_BxT=None,
    *,
    scale,
    global_first_key=False,
    window=None,
    softcap=None,
):
    """cuDNN flash attention (GPU, bf16/fp16), causal, optionally windowed; GQA native."""
    if softcap is not None:
        raise ValueError(
            f"attention='cudnn' cannot soft-cap scores (softcap={softcap}); use 'blockwise'."
        )
    if segment_ids_BxT is not None or global_first_key:
        raise ValueError(
            "attention='cudnn' has no segment ids (intra-document masking); use "
            "attention='pallas' on GPU or 'blockwise' anywhere for packed training."
        )
    if q_BxTxHxD.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(
            f"attention='cudnn' needs bfloat16 or float16 inputs, got "
            f"{q_BxTxHxD.dtype}; set dtype='bfloat16' or use attention='xla'."
        )
    out, lse_BxHxT = _cudnn_with_f32_lse(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, scale, window)
    return out, jax.lax.stop_gradient(lse_BxHxT.astype(jnp.float32))


def _cudnn_with_f32_lse(q, k, v, scale, window=None):
    """cuDNN call keeping the kernel's float32 LSE [B, H, T].

    The public jax.nn.dot_product_attention casts the LSE to the output dtype (bf16: about 3
    significant digits, so exp(s - lse) would be off by up to ~2%). The cuDNN layer beneath
    it returns the float32 statistic; where that private layer is unavailable, fall back to
    the public function. `window` W: query i sees keys i - W < j <= i.
    """
    try:
        from jax._src.cudnn import fused_attention_stablehlo as cudnn_lib

        out, lse_BxHxT = cudnn_lib.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            mask_type=cudnn_lib.MaskType.CAUSAL,
            sliding_window_length=window,
            return_residual=True,
        )
        return out, lse_BxHxT
    except (ImportError, AttributeError, TypeError):
        out, lse_BxTxH = jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=True,
            local_window_size=None if window is None else (window - 1, 0),
            implementation="cudnn",
            return_residual=True,
        )
        return out, lse_BxTxH.transpose(0, 2, 1)


def _pallas_module():
    from jax.experimental.pallas.ops.gpu import attention as pallas_attention  # GPU-only import.

    return pallas_attention


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _pallas_mha(q, k, v, seg, scale, block, interpret):
    (out, lse2), _ = _pallas_fwd(q, k, v, seg, scale, block, interpret)
    return out, lse2


def _pallas_args(scale, block, interpret):
    mod = _pallas_module()
    blocks = mod.BlockSizes(
        block_q=block,
        block_k=block,
        block_q_dkv=min(block, 64),
        block_kv_dkv=min(block, 64),
        block_q_dq=min(block, 64),
        block_kv_dq=min(block, 64),
    )
    # Positional order of the kernel's non-differentiable arguments (sm_scale .. debug).
    return mod, (scale, True, blocks, "triton", None, 2, None, interpret, False)


def _pallas_fwd(q, k, v, seg, scale, block, interpret):
    mod, args = _pallas_args(scale, block, interpret)
    # The kernel's forward with return_residuals=False still keeps the LSE among its residuals;
    # taking it from there lets the backward kernel run (it refuses return_residuals=True).
    out, res = mod._mha_forward(q, k, v, seg, *args, False)
    return (out, res[-1]), res


def _pallas_bwd(scale, block, interpret, res, cotangents):
    mod, args = _pallas_args(scale, block, interpret)
    dout, _ = cotangents  # the LSE is a statistic: no gradient through it.
    dq, dk, dv, _ = mod._mha_backward(*args, False, res, dout)
    return dq, dk, dv, None


_pallas_mha.defvjp(_pallas_fwd, _pallas_bwd)


def pallas_gpu_attention(
    q_BxTxHxD,
    k_BxTxKxD,
    v_BxTxKxD,
    segment_ids_BxT=None,
    *,
    scale,
    global_first_key=False,
    window=None,
    softcap=None,
    block_size=128,
    interpret=False,
):
    """Pallas (Triton) flash attention on GPU with segment ids; K/V broadcast to query heads."""
    if window is not None or softcap is not None:
        raise ValueError(
            f"attention='pallas' has no sliding window or score soft-capping (window={window}, "
            f"softcap={softcap}); use attention='cudnn' for windows or 'blockwise' for both."
        )
    if global_first_key:
        raise ValueError(
            "attention='pallas' cannot keep key 0 visible across segments "
            "(global_first_key=True); use attention='blockwise'."
        )
    B, T, H, D = q_BxTxHxD.shape
    K = k_BxTxKxD.shape[2]
    block = min(block_size, T)
    if T % block:
        raise ValueError(f"attention='pallas' needs T={T} to be a multiple of its block {block}.")
    k = jnp.repeat(k_BxTxKxD, H // K, axis=2)
    v = jnp.repeat(v_BxTxKxD, H // K, axis=2)
    seg = None if segment_ids_BxT is None else segment_ids_BxT.astype(jnp.int32)
    out, lse2_BxHxT = _pallas_mha(q_BxTxHxD, k, v, seg, float(scale), int(block), bool(interpret))
    return out, jax.lax.stop_gradient(lse2_BxHxT.astype(jnp.float32) * math.log(2.0))
