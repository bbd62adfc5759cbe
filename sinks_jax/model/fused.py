"""Fused GPU attention kernels, each returning (out [B,T,H,D], natural-log LSE [B,H,T] f32).

The kernels' own LSE conventions differ, and this module is where they are made uniform:
  cudnn   natural log of the *scaled* scores, float32 [B, H, T] from the cuDNN layer (the public
          jax.nn.dot_product_attention casts it to the output dtype and transposes it).
  pallas  jax.experimental.pallas.ops.gpu.attention: base-2 LSE of the scaled scores, float32
          [B, H, T]; multiplied by ln 2 here. Its private `_mha_forward`/`_mha_backward` are
          called by keyword after a signature check (checked on jax 0.10.2 - 0.11.2).
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings

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


# The dtype of the LSE the cuDNN path returned in this process ("float32" from the cuDNN
# layer, the output dtype from the public fallback); None until a cuDNN call is traced.
_cudnn_lse_dtype: str | None = None
_warned_fallback = False


def cudnn_lse_dtype() -> str | None:
    """Which cuDNN path ran: the dtype of its LSE ("float32": the cuDNN layer; "bfloat16" or
    "float16": the public fallback, whose sink statistics are off by up to ~2 %), or None
    if no cuDNN attention was traced in this process. Runs record it in their metrics."""
    return _cudnn_lse_dtype


def _cudnn_with_f32_lse(q, k, v, scale, window=None):
    """cuDNN call keeping the kernel's float32 LSE [B, H, T].

    The public jax.nn.dot_product_attention casts the LSE to the output dtype (bf16: about 3
    significant digits, so exp(s - lse) would be off by up to ~2%). The cuDNN layer beneath
    it returns the float32 statistic; where that private layer is unavailable, fall back to
    the public function, warn once, and record the LSE dtype (`cudnn_lse_dtype`). `window` W:
    query i sees keys i - W < j <= i.
    """
    global _cudnn_lse_dtype, _warned_fallback
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
    except (ImportError, AttributeError, TypeError) as e:
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
        lse_BxHxT = lse_BxTxH.transpose(0, 2, 1)
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                f"attention='cudnn': the cuDNN layer with a float32 LSE is unavailable in jax "
                f"{jax.__version__} ({type(e).__name__}: {e}); using jax.nn.dot_product_attention, "
                f"whose LSE is {lse_BxHxT.dtype} (sink statistics off by up to ~2 %); use "
                "attention='pallas' or 'blockwise' for exact ones.",
                RuntimeWarning,
                stacklevel=2,
            )
    _cudnn_lse_dtype = str(lse_BxHxT.dtype)
    return out, lse_BxHxT


# jax releases on which the private Pallas attention functions called below were checked.
PALLAS_VERIFIED_JAX = "0.10.2 - 0.11.2"


def _pallas_module():
    try:  # GPU-only kernels, importable anywhere (interpret mode runs on CPU).
        from jax.experimental.pallas.ops.gpu import attention as pallas_attention
    except ImportError as e:
        raise RuntimeError(
            f"attention='pallas' needs jax.experimental.pallas.ops.gpu.attention, which jax "
            f"{jax.__version__} lacks ({e}); it was checked on jax {PALLAS_VERIFIED_JAX}. "
            "Use attention='blockwise', or install jax in that range."
        ) from e
    return pallas_attention


def _call_private(mod, name: str, **kwargs):
    """`mod.name(**kwargs)`, after checking that the private function still takes these
    keyword arguments (its signature is not a public promise)."""
    fn = getattr(mod, name, None)
    try:
        inspect.signature(fn).bind(**kwargs)
    except (TypeError, ValueError) as e:
        raise RuntimeError(
            f"attention='pallas': jax {jax.__version__}'s {mod.__name__}.{name} no longer "
            f"takes the arguments {sorted(kwargs)} ({e}); it was checked on jax "
            f"{PALLAS_VERIFIED_JAX}. Use attention='blockwise', or install jax in that range."
        ) from e
    return fn(**kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _pallas_mha(q, k, v, seg, scale, block, interpret):
    (out, lse2), _ = _pallas_fwd(q, k, v, seg, scale, block, interpret)
    return out, lse2


def _pallas_kwargs(mod, scale, block, interpret) -> dict:
    """The kernel's non-differentiable arguments, shared by its forward and backward."""
    blocks = mod.BlockSizes(
        block_q=block,
        block_k=block,
        block_q_dkv=min(block, 64),
        block_kv_dkv=min(block, 64),
        block_q_dq=min(block, 64),
        block_kv_dq=min(block, 64),
    )
    return dict(
        sm_scale=scale,
        causal=True,
        block_sizes=blocks,
        backward_pass_impl="triton",
        num_warps=None,
        num_stages=2,
        grid=None,
        interpret=interpret,
        debug=False,
        return_residuals=False,
    )


def _pallas_fwd(q, k, v, seg, scale, block, interpret):
    mod = _pallas_module()
    kw = _pallas_kwargs(mod, scale, block, interpret)
    # The kernel's forward with return_residuals=False still keeps the LSE among its residuals;
    # taking it from there lets the backward kernel run (it refuses return_residuals=True).
    out, res = _call_private(mod, "_mha_forward", q=q, k=k, v=v, segment_ids=seg, **kw)
    return (out, res[-1]), res


def _pallas_bwd(scale, block, interpret, res, cotangents):
    mod = _pallas_module()
    dout, _ = cotangents  # the LSE is a statistic: no gradient through it.
    kw = _pallas_kwargs(mod, scale, block, interpret)
    dq, dk, dv, _ = _call_private(mod, "_mha_backward", res=res, do=dout, **kw)
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
