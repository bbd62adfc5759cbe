"""Attention received by every key, through an attention kernel's backward pass.

For one head, `out_i = sum_j A[i, j] v_j`, so the gradient of `sum(out)` with respect to
`v_k` is `sum_i A[i, k]` in every feature: the total attention key `k` receives. A fused
(flash-style) kernel that never builds the T x T map still has a backward pass, so one VJP
gives all column sums in O(T d) memory. Under grouped-query attention the gradient with
respect to a shared K/V head sums over its query heads, so K and V are first broadcast to
one copy per query head (query head `h` reads K/V head `h // (H // K)`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
AttendFn = Callable[[Array, Array, Array], object]


def broadcast_kv_heads(kv_BxTxKxD: Array, num_heads: int) -> Array:
    """`[B, T, K, D]` -> `[B, T, H, D]`: each K/V head repeated for the H // K query heads it serves."""
    K = kv_BxTxKxD.shape[2]
    if num_heads % K:
        raise ValueError(
            f"num_heads={num_heads} is not divisible by num_kv_heads={K}; "
            "pass q with a multiple of k's head count."
        )
    return jnp.repeat(kv_BxTxKxD, num_heads // K, axis=2)


def received_attention_from_qkv(
    q_BxTxHxD: Array,
    k_BxTxKxD: Array,
    v_BxTxKxD: Array,
    attend_fn: AttendFn,
    query_weights_BxT: Array | None = None,
) -> Array:
    """`[B, H, T]`: `sum_i A[h][i, k]` for every query head h and key k, without the T x T map.

    Args:
      q_BxTxHxD, k_BxTxKxD, v_BxTxKxD: one layer's queries, keys and values (after RoPE).
      attend_fn: `attend_fn(q, k, v)` -> output `[B, T, H, Dv]` or a tuple whose first entry
        is it, e.g. `functools.partial(sinks_jax.model.attention.attention, backend="cudnn",
        segment_ids=seg)`. It must be differentiable with respect to v.
      query_weights_BxT: optional weight of each query in the sum (e.g. 0 for padding, so
        only real queries count): the result is `sum_i w[i] A[h][i, k]`.

    Only the gradient with respect to v is taken; its value does not depend on v.
    """
    H = q_BxTxHxD.shape[2]
    k_BxTxHxD = broadcast_kv_heads(k_BxTxKxD, H)
    v_BxTxHxD = broadcast_kv_heads(v_BxTxKxD, H)

    def out_of_v(v):
        out = attend_fn(q_BxTxHxD, k_BxTxHxD, v)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.astype(jnp.float32)

    out, pullback = jax.vjp(out_of_v, v_BxTxHxD)
    cotangent = jnp.ones_like(out)
    if query_weights_BxT is not None:
        cotangent = cotangent * query_weights_BxT.astype(out.dtype)[:, :, None, None]
    (grad_v_BxTxHxD,) = pullback(cotangent)
    # Every feature of the gradient holds the same column sum; the mean absorbs rounding.
    return jnp.mean(grad_v_BxTxHxD.astype(jnp.float32), axis=-1).transpose(0, 2, 1)


def received_attention(
    q_LxBxTxHxD: Array, k_LxBxTxKxD: Array, v_LxBxTxKxD: Array, attend_fn: AttendFn
) -> Array:
    """`[L, B, H, T]`: `received_attention_from_qkv` for every layer (one layer in memory at a time)."""
    return jax.lax.map(
        lambda qkv: received_attention_from_qkv(*qkv, attend_fn),
        (q_LxBxTxHxD, k_LxBxTxKxD, v_LxBxTxKxD),
    )


def received_attention_from_probs(attn_LxBxHxTxT: Array) -> Array:
    """`[L, B, H, T]`: the same quantity from explicit maps (column sums over queries)."""
    return jnp.sum(attn_LxBxHxTxT.astype(jnp.float32), axis=-2)
