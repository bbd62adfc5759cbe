"""The TPU splash-attention kernel as a backend: (out [B,T,H,D], natural-log LSE [B,H,T] f32).

`jax.experimental.pallas.ops.tpu.splash_attention` works per example on [H, T, D] and does not
scale q; this module scales q (in q's dtype: in bfloat16 a rounding of 2^-9 relative per
element, well below the kernel's own bfloat16 probabilities), maps the batch, and pads T at
the end to a multiple of 128 (padded keys follow every real query, so causality hides them
exactly). Under a mesh, `attention()` runs it per device over the batch axes
(`model/shard.py`): a Mosaic kernel cannot be partitioned automatically.

  masks    causal, or a local window (`LocalMask`: query i sees i - window < j <= i); segment
           ids through the kernel's `SegmentIds`. `global_first_key`: without segments key 0 is
           one more column of the static mask (it matters only past a window); with segments
           the kernel's mask keeps that column for the query's own document and key 0 is merged
           in for the others through the LSE (`flash_lse.attend_first_key_globally`).
  heads    K == H: the MHA kernel; 1 < K < H: the MHA kernel's grouped heads; K == 1: the MQA
           kernel.
  softcap  the kernel's `attn_logits_soft_cap` (on the scaled scores, as Gemma 2).
  LSE      the kernel's residual (`save_residuals=True`): natural log, float32 [H, T], of the
           scaled, soft-capped scores, so A[i, j] = exp(scale * q_i . k_j - lse_i) as elsewhere.

The kernel's own VJP refuses `save_residuals=True`, so `_splash` has its own: the forward is the
public kernel with residuals, the backward the kernel's two private passes
`_splash_attention_bwd_dkv` and `_splash_attention_bwd_dq` (called by keyword after a signature
check; checked on jax 0.10.2 - 0.11.2), handed the row term with the LSE's cotangent
(`flash_lse.row_term`), so the LSE can enter a loss.

Off TPU the kernel runs in Pallas interpret mode (slow; what the CPU tests use).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sinks_jax.model import fused
from sinks_jax.model.flash_lse import attend_first_key_globally, row_term

# jax releases on which the kernel's private backward and its residual layout were checked.
SPLASH_VERIFIED_JAX = "0.10.2 - 0.11.2"
LANES = 128  # the kernel's key blocks are multiples of this.


def _modules():
    try:
        from jax.experimental.pallas.ops.tpu import splash_attention as sa
        from jax.experimental.pallas.ops.tpu.splash_attention import (
            splash_attention_kernel as sk,
        )
        from jax.experimental.pallas.ops.tpu.splash_attention import (
            splash_attention_mask as sm,
        )
    except ImportError as e:
        raise RuntimeError(
            f"attention='splash' needs jax.experimental.pallas.ops.tpu.splash_attention, which "
            f"jax {jax.__version__} lacks ({e}); it was checked on jax {SPLASH_VERIFIED_JAX}. "
            "Use attention='blockwise', or install jax in that range."
        ) from e
    return sa, sk, sm


def splash_block(seq_len: int, block_size: int) -> tuple[int, int]:
    """(padded T, block): T rounded up to a multiple of 128, tiled by the largest multiple of
    128 that divides it and is at most max(block_size, 128)."""
    n = -(-seq_len // LANES)
    most = max(block_size // LANES, 1)
    d = max(d for d in range(1, min(n, most) + 1) if n % d == 0)
    return n * LANES, d * LANES


class _FirstKey:
    """The static mask's extra column, key 0 visible to every query: what the kernel's mask
    combinators (`LocalMask(...) | mask`) read, a shape and numpy blocks."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def __getitem__(self, idx):
        rows, cols = idx
        r = np.arange(self.shape[0])[rows]
        c = np.arange(self.shape[1])[cols]
        return np.broadcast_to(c[None, :] == 0, (r.size, c.size)).copy()

    def __eq__(self, other):
        return isinstance(other, _FirstKey) and other.shape == self.shape

    def __hash__(self):
        return hash((_FirstKey, self.shape))


@functools.lru_cache(maxsize=64)
def _kernel(T, H, mqa, block, window, first_key, softcap, interpret):
    """The splash kernel object (its mask tables are built once per shape, in numpy)."""
    sa, _, _ = _modules()
    if window is None:
        per_head = sa.CausalMask((T, T))
    else:
        per_head = sa.LocalMask((T, T), window_size=(window - 1, 0), offset=0)
        if first_key:
            per_head = per_head | _FirstKey((T, T))
    blocks = sa.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    make = sa.make_splash_mqa if mqa else sa.make_splash_mha
    with jax.ensure_compile_time_eval():  # concrete mask tables, also when built under jit.
        return make(
            sa.MultiHeadMask([per_head] * H),
            block_sizes=blocks,
            save_residuals=True,
            attn_logits_soft_cap=softcap,
            head_shards=1,
            q_seq_shards=1,
            interpret=interpret,
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _splash(kernel, q_HxTxD, k, v, seg_T):
    """One example through the kernel: (out [H,T,D], lse [H,T] f32). k, v: [K,T,D] or [T,D]."""
    (out, lse_HxT), _ = _splash_fwd(kernel, q_HxTxD, k, v, seg_T)
    return out, lse_HxT


def _segments(seg_T):
    _, sk, _ = _modules()
    return None if seg_T is None else sk.SegmentIds(q=seg_T, kv=seg_T)


def _splash_fwd(kernel, q, k, v, seg_T):
    out, (lse_HxT,) = kernel(q, k, v, segment_ids=_segments(seg_T))
    return (out, lse_HxT), (q, k, v, seg_T, out, lse_HxT)


def _splash_bwd(kernel, res, cotangents):
    """The kernel's backward passes (dK/dV, then dQ) with the LSE's cotangent g: their row term
    is `flash_lse.row_term`'s, D_i = dout_i . out_i - g_i, in place of the kernel's own."""
    _, sk, _ = _modules()
    q, k, v, seg_T, out, lse_HxT = res
    dout, dlse_HxT = cotangents
    settings = kernel.kwargs
    missing = sorted(set(_BWD_SETTINGS) - set(settings))
    if missing:
        raise RuntimeError(
            f"attention='splash': jax {jax.__version__}'s splash kernel lacks the settings "
            f"{missing}, unlike jax {SPLASH_VERIFIED_JAX} where this backend was checked. Use "
            "attention='blockwise', or install jax in that range."
        )
    blocks = settings["block_sizes"]
    common = {name: settings[name] for name in _BWD_SETTINGS if name != "block_sizes"}
    common.update(q_layout=blocks.q_layout, k_layout=blocks.k_layout, v_layout=blocks.v_layout)
    # Arguments the two passes share: (q, k, v, segment_ids, sinks, logsumexp, do, di).
    arrays = dict(q=q, k=k, v=v, segment_ids=_segments(seg_T), sinks=None, logsumexp=lse_HxT,
                  do=dout, di=row_term(out, dout, dlse_HxT))  # fmt: skip
    dq, dk, dv = fused.call_private(
        sk, "_splash_attention_bwd_dkv", "splash", SPLASH_VERIFIED_JAX, **arrays,
        bq=blocks.block_q_dkv, bkv=blocks.block_kv_dkv, bkv_compute=blocks.block_kv_dkv_compute,
        mask_info=kernel.dkv_mask_info, use_fused_bwd_kernel=blocks.use_fused_bwd_kernel,
        **common,
    )  # fmt: skip
    if not blocks.use_fused_bwd_kernel:
        dq = fused.call_private(
            sk, "_splash_attention_bwd_dq", "splash", SPLASH_VERIFIED_JAX, **arrays,
            bq=blocks.block_q_dq, bkv=blocks.block_kv_dq, mask_info=kernel.dq_mask_info,
            **common,
        )  # fmt: skip
    return dq, dk, dv, None


# The kernel's settings its backward passes take (besides the blocks' layouts).
_BWD_SETTINGS = (
    "mask_value",
    "is_mqa",
    "block_sizes",
    "mask_function",
    "attn_logits_soft_cap",
    "interpret",
)
_splash.defvjp(_splash_fwd, _splash_bwd)


def _segment_masked(
    q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, *, scale, first_key, window, softcap,
    block_size, interpret,
):  # fmt: skip
    """Causal (windowed, segment-masked) splash attention, key 0 in the static mask if asked."""
    B, T, H, _ = q_BxTxHxD.shape
    K = k_BxTxKxD.shape[2]
    Tp, block = splash_block(T, block_size)
    pad = [(0, 0), (0, Tp - T), (0, 0), (0, 0)]
    q = jnp.pad(q_BxTxHxD * jnp.asarray(scale, q_BxTxHxD.dtype), pad).transpose(0, 2, 1, 3)
    k = jnp.pad(k_BxTxKxD, pad).transpose(0, 2, 1, 3)
    v = jnp.pad(v_BxTxKxD, pad).transpose(0, 2, 1, 3)
    if K == 1:  # the MQA kernel takes one [T, D] key and value.
        k, v = k[:, 0], v[:, 0]
    seg = None
    if segment_ids_BxT is not None:  # padded keys: causally after every real query.
        seg = jnp.pad(segment_ids_BxT.astype(jnp.int32), [(0, 0), (0, Tp - T)])
    kernel = _kernel(
        Tp, H, K == 1, block, window, bool(first_key and window is not None),
        None if softcap is None else float(softcap), bool(interpret),
    )  # fmt: skip

    out_BxHxTxD, lse_BxHxT = jax.vmap(functools.partial(_splash, kernel))(q, k, v, seg)
    return out_BxHxTxD[:, :, :T].transpose(0, 2, 1, 3), lse_BxHxT[:, :, :T]


def splash_attention(
    q_BxTxHxD,
    k_BxTxKxD,
    v_BxTxKxD,
    segment_ids_BxT=None,
    *,
    scale,
    global_first_key=False,
    window=None,
    softcap=None,
    block_size=512,
    interpret=None,
):
    """Splash attention (TPU): causal, segment ids, windows, soft-capping, GQA/MQA, the fixed
    first key; any T (padded to a multiple of 128), tiled by up to `block_size` (a multiple
    of 128). `interpret=None`: the kernel's interpret mode off TPU."""
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    kw = {"window": window, "softcap": softcap, "block_size": block_size, "interpret": interpret}
    if global_first_key and segment_ids_BxT is not None:
        kernel = functools.partial(_segment_masked, first_key=True, **kw)
        return attend_first_key_globally(
            kernel, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, scale=scale, softcap=softcap
        )
    out, lse_BxHxT = _segment_masked(
        q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, scale=scale,
        first_key=global_first_key, **kw,
    )  # fmt: skip
    return out, lse_BxHxT.astype(jnp.float32)
