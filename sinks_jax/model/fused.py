"""Fused GPU attention kernels, each returning (out [B,T,H,D], natural-log LSE [B,H,T] f32).

The kernels' own LSE conventions differ, and this module is where they are made uniform:
  cudnn   natural log of the *scaled* scores, float32 [B, H, T] from the cuDNN layer beneath
          jax.nn.dot_product_attention (the public function casts it to the output dtype,
          transposes it and drops its cotangent). The layer's forward and backward rule are
          called directly (checked on jax 0.10.2 - 0.11.2).
  pallas  jax.experimental.pallas.ops.gpu.attention: base-2 LSE of the scaled scores, float32
          [B, H, T]; multiplied by ln 2 here. Its private `_mha_forward`/`_mha_backward` are
          called by keyword after a signature check (checked on jax 0.10.2 - 0.11.2).

Both take the LSE's cotangent exactly, so the LSE can enter any loss (model/flash_lse.py): Pallas
as its row term (`row_term`, handed to the kernel's backward in place of its own), cuDNN through
the output it is handed (`fold_lse_cotangent`), with a second backward of the layer for any query
whose output has no cotangent (a loss of the LSE alone; `cudnn_backward`). With `global_first_key`,
Pallas merges key 0 in through the LSE (`attend_first_key_globally`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import math
import threading
import warnings

import jax
import jax.numpy as jnp

from sinks_jax.model.flash_lse import attend_first_key_globally, fold_lse_cotangent, row_term
from sinks_jax.model.kv_heads import expand_kv


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
    check_cudnn_inputs(q_BxTxHxD, segment_ids_BxT, global_first_key, softcap)
    out, lse_BxHxT = _cudnn_with_f32_lse(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, scale, window)
    return out, lse_BxHxT.astype(jnp.float32)


def check_cudnn_inputs(q_BxTxHxD, segment_ids_BxT, global_first_key, softcap) -> None:
    """One line for what cuDNN cannot do: soft-capping, segments, key 0 global, float32."""
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


# The dtype of the LSE the cuDNN path returned in this process ("float32" from the cuDNN
# layer, the output dtype from the public fallback); None until a cuDNN call is traced.
_cudnn_lse_dtype: str | None = None
_warned_fallback = False


def cudnn_lse_dtype() -> str | None:
    """Which cuDNN path ran: the dtype of its LSE ("float32": the cuDNN layer; "bfloat16" or
    "float16": the public fallback, whose sink statistics are off by up to ~2 %), or None
    if no cuDNN attention was traced in this process. Runs record it in their metrics."""
    return _cudnn_lse_dtype


# jax releases on which the private cuDNN layer functions called below were checked.
CUDNN_VERIFIED_JAX = "0.10.2 - 0.11.2"
_CUDNN_LAYER = "jax._src.cudnn.fused_attention_stablehlo"


def cudnn_layer_ok() -> bool:
    """Whether the cuDNN layer (float32 LSE, exact LSE gradient) is there; recorded if so."""
    global _cudnn_lse_dtype
    if _cudnn_layer() is None:
        return False
    _cudnn_lse_dtype = "float32"
    return True


def _cudnn_layer():
    """The private cuDNN layer beneath jax.nn.dot_product_attention, or None where its forward
    and backward no longer take the arguments used here (then the public function runs)."""
    try:
        lib = importlib.import_module(_CUDNN_LAYER)
        inspect.signature(lib.dot_product_attention).bind(
            None, None, None, scale=1.0, mask_type=None, return_residual=True,
            sliding_window_length=None,
        )  # fmt: skip
        inspect.signature(lib._dot_product_attention_bwd_rule).bind(**_cudnn_bwd_kwargs(lib))
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    return lib


def _cudnn_bwd_kwargs(lib, scale=1.0, window=None, res=None, grad_output=None) -> dict:
    """The backward rule's arguments, as jax.nn.dot_product_attention's forward sets them for a
    causal BTNH call without bias, mask, dropout, sequence lengths or pages."""
    return dict(
        scale=scale,
        seed=42,
        dropout_rate=0.0,
        variadic_args=(False, False),  # (has_bias, has_dbias)
        mask_type=lib.MaskType.CAUSAL,
        layout=lib._normalize_layout("BTNH").value,
        sliding_window_length=window,
        is_training=True,
        return_residual=False,
        res=res,
        grad_output=grad_output,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _cudnn_mha(q, k, v, scale, window):
    (out, lse), _ = cudnn_forward(q, k, v, scale, window)
    return out, lse


def cudnn_forward(q, k, v, scale, window):
    lib = importlib.import_module(_CUDNN_LAYER)
    out, lse_BxHxT = lib.dot_product_attention(
        q, k, v, scale=scale, mask_type=lib.MaskType.CAUSAL, return_residual=True,
        sliding_window_length=window,
    )  # fmt: skip
    return (out, lse_BxHxT), (q, k, v, out, lse_BxHxT)


def _cudnn_fwd(q, k, v, scale, window):  # q, k, v: CustomVJPPrimal (symbolic_zeros below)
    return cudnn_forward(q.value, k.value, v.value, scale, window)


def cudnn_layer_backward(scale, window, q, k, v, out, lse_BxHxT, dout):
    """(dq, dk, dv) from the layer's backward rule, whose row term is dout_i . out_i."""
    lib = importlib.import_module(_CUDNN_LAYER)
    unused = jnp.zeros(0, q.dtype)  # bias, sequence lengths, offsets, page tables
    layer_res = (q, k, v, *(unused,) * 7, lse_BxHxT, out)
    grads = lib._dot_product_attention_bwd_rule(
        **_cudnn_bwd_kwargs(lib, scale, window, layer_res, dout)
    )
    return tuple(g.astype(x.dtype) for g, x in zip(grads[:3], (q, k, v)))


def _cudnn_lse_bwd(scale, window, q, k, v, lse_BxHxT, g_BxHxT):
    """(dq, dk) of sum_i g_i lse_i, through the layer's backward: with every value v_j = e_0,
    an output of 0 and dout_i = g_i e_0, its dS_ij = A_ij (dout_i . v_j - dout_i . 0) is
    A_ij g_i, the LSE's own."""
    e0_D = (jnp.arange(q.shape[-1]) == 0).astype(v.dtype)
    dout = (g_BxHxT.transpose(0, 2, 1)[..., None] * e0_D).astype(q.dtype)
    values = jnp.broadcast_to(e0_D, v.shape)
    dq, dk, _ = cudnn_layer_backward(scale, window, q, k, values, jnp.zeros_like(dout), lse_BxHxT,
                                 dout)  # fmt: skip
    return dq, dk


def cudnn_backward(scale, window, res, cotangents):
    """The layer's backward with the LSE's cotangent g.

    The layer computes its row term from the output it is handed, so the row term with g
    (`row_term`) reaches it as a moved output (`fold_lse_cotangent`): one backward, where every
    query with g_i != 0 has an output cotangent (training: the slot variants). The g_i of a
    query whose output has none (a loss of the LSE alone, or of the LSE on some rows) cannot
    ride on dout_i; those go through a second backward (`_cudnn_lse_bwd`), which runs only
    when there are any (a lax.cond) or when the output has no cotangent at all.
    """
    q, k, v, out, lse_BxHxT = res
    dout, dlse_BxHxT = cotangents
    no_out = isinstance(dout, jax.custom_derivatives.SymbolicZero)
    if isinstance(dlse_BxHxT, jax.custom_derivatives.SymbolicZero):
        if no_out:
            return jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v)
        return cudnn_layer_backward(scale, window, q, k, v, out, lse_BxHxT, dout)
    g_BxHxT = dlse_BxHxT.astype(jnp.float32)
    if no_out:
        dq, dk = _cudnn_lse_bwd(scale, window, q, k, v, lse_BxHxT, g_BxHxT)
        return dq, dk, jnp.zeros_like(v)
    moved, carried_BxHxT = fold_lse_cotangent(out, dout, g_BxHxT)
    dq, dk, dv = cudnn_layer_backward(scale, window, q, k, v, moved, lse_BxHxT, dout)
    rest_BxHxT = jnp.where(carried_BxHxT, 0.0, g_BxHxT)
    dq_rest, dk_rest = jax.lax.cond(
        jnp.any(rest_BxHxT != 0),
        lambda g: _cudnn_lse_bwd(scale, window, q, k, v, lse_BxHxT, g),
        lambda g: (jnp.zeros_like(q), jnp.zeros_like(k)),
        rest_BxHxT,
    )
    return dq + dq_rest, dk + dk_rest, dv


_cudnn_mha.defvjp(_cudnn_fwd, cudnn_backward, symbolic_zeros=True)


def _cudnn_with_f32_lse(q, k, v, scale, window=None):
    """cuDNN call keeping the kernel's float32 LSE [B, H, T], with a VJP that takes its cotangent.

    The public jax.nn.dot_product_attention casts the LSE to the output dtype (bf16: about 3
    significant digits, so exp(s - lse) would be off by up to ~2%) and its VJP drops the LSE's
    cotangent. The cuDNN layer beneath it returns the float32 statistic, and its backward rule
    is called here with the LSE's cotangent too (`cudnn_backward`). Where that layer is unavailable,
    fall back to the public function (LSE without gradient), warn once, and record the LSE
    dtype (`cudnn_lse_dtype`). `window` W: query i sees keys i - W < j <= i.
    """
    global _cudnn_lse_dtype, _warned_fallback
    if _cudnn_layer() is not None:
        out, lse_BxHxT = _cudnn_mha(q, k, v, float(scale), window)
    else:
        windowed = {} if window is None else {"local_window_size": (window - 1, 0)}
        out, lse_BxTxH = jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=True,
            **windowed,
            implementation="cudnn",
            return_residual=True,
        )
        lse_BxHxT = jax.lax.stop_gradient(lse_BxTxH.transpose(0, 2, 1))
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                f"attention='cudnn': the cuDNN layer {_CUDNN_LAYER} (checked on jax "
                f"{CUDNN_VERIFIED_JAX}) is unavailable in jax {jax.__version__}; using "
                f"jax.nn.dot_product_attention, whose LSE is {lse_BxHxT.dtype} (sink statistics "
                "off by up to ~2 %) and carries no gradient (the slot variants then train "
                "wrongly); use attention='pallas' or 'blockwise'.",
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


def call_private(mod, name: str, backend: str, verified: str, /, **kwargs):
    """`mod.name(**kwargs)`, after checking that the private function still takes these
    keyword arguments (its signature is not a public promise); the error names `backend` and
    the jax releases it was `verified` on."""
    fn = getattr(mod, name, None)
    try:
        inspect.signature(fn).bind(**kwargs)
    except (TypeError, ValueError) as e:
        raise RuntimeError(
            f"attention={backend!r}: jax {jax.__version__}'s {mod.__name__}.{name} no longer "
            f"takes the arguments {sorted(kwargs)} ({e}); it was checked on jax "
            f"{verified}. Use attention='blockwise', or install jax in that range."
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
    out, res = call_private(
        mod, "_mha_forward", "pallas", PALLAS_VERIFIED_JAX, q=q, k=k, v=v, segment_ids=seg, **kw
    )
    return (out, res[-1]), res


def _pallas_bwd(scale, block, interpret, res, cotangents):
    """The kernel's backward with the LSE's cotangent: its row term is `row_term`'s."""
    mod = _pallas_module()
    kw = _pallas_kwargs(mod, scale, block, interpret)
    dout, dlse2_BxHxT = cotangents
    out_BxTxHxD = res[4]
    dlse_BxHxT = dlse2_BxHxT / math.log(2.0)  # d/d lse2 -> d/d lse (natural log)
    delta_BxHxT = row_term(out_BxTxHxD, dout, dlse_BxHxT, lambda x: x.transpose(0, 2, 1))
    with _pallas_row_term(mod, out_BxTxHxD, dout, delta_BxHxT) as used:
        dq, dk, dv, _ = call_private(
            mod, "_mha_backward", "pallas", PALLAS_VERIFIED_JAX, res=res, do=dout, **kw
        )
    if not used:
        raise _pallas_changed(
            "_mha_backward no longer takes its row term from _preprocess_backward"
        )
    return dq, dk, dv, None


def _pallas_changed(what: str) -> RuntimeError:
    return RuntimeError(
        f"attention='pallas': in jax {jax.__version__}, {what}, so the LSE's gradient cannot "
        f"be added; it was checked on jax {PALLAS_VERIFIED_JAX}. Use attention='blockwise', "
        "or install jax in that range."
    )


_PALLAS_PATCH = threading.RLock()


@contextlib.contextmanager
def _pallas_row_term(mod, out, dout, delta_BxHxT):
    """While tracing the kernel's backward for (out, dout): its row-term pass
    (`_preprocess_backward(out, do, lse, ...)`, delta_i = dout_i . out_i, float32 [B, H, T])
    returns `delta_BxHxT` instead. Other calls pass through; yields a list that is non-empty
    once the substitute was used."""
    original = getattr(mod, "_preprocess_backward", None)
    try:
        inspect.signature(original).bind(out, dout, None, 1, False, False)
    except (TypeError, ValueError) as e:
        raise _pallas_changed(f"{mod.__name__}._preprocess_backward changed ({e})") from e
    used = []

    def preprocess(out_, do_, *args, **kwargs):
        if out_ is out and do_ is dout:
            used.append(True)
            return delta_BxHxT
        return original(out_, do_, *args, **kwargs)

    with _PALLAS_PATCH:
        mod._preprocess_backward = preprocess
        try:
            yield used
        finally:
            mod._preprocess_backward = original


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
    """Pallas (Triton) flash attention on GPU with segment ids; K/V broadcast to query heads.

    `global_first_key` runs the segment-masked kernel and merges key 0 in through the LSE
    (`attend_first_key_globally`). `interpret=True` runs the kernel's Python body (any
    platform, slow): for tests.
    """
    if window is not None or softcap is not None:
        raise ValueError(
            f"attention='pallas' has no sliding window or score soft-capping (window={window}, "
            f"softcap={softcap}); use attention='cudnn' for windows or 'blockwise' for both."
        )
    if global_first_key:
        kernel = functools.partial(pallas_gpu_attention, block_size=block_size, interpret=interpret)
        return attend_first_key_globally(
            kernel, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, scale=scale
        )
    T, H = q_BxTxHxD.shape[1:3]
    block = min(block_size, T)
    if T % block:
        raise ValueError(f"attention='pallas' needs T={T} to be a multiple of its block {block}.")
    k = expand_kv(k_BxTxKxD, H)
    v = expand_kv(v_BxTxKxD, H)
    seg = None if segment_ids_BxT is None else segment_ids_BxT.astype(jnp.int32)
    out, lse2_BxHxT = _pallas_mha(q_BxTxHxD, k, v, seg, float(scale), int(block), bool(interpret))
    return out, lse2_BxHxT.astype(jnp.float32) * math.log(2.0)
