"""Attention received by every key, through an attention kernel's backward pass.

For one head, `out_i = sum_j A[i, j] v_j`, so the gradient of `sum_i w_i out_i` with respect
to `v_k` is `sum_i w_i A[i, k]` in every feature: the (weighted) attention key `k` receives. A
fused (flash-style) kernel that never builds the T x T map still has a backward pass, so one
VJP gives all column sums in O(T d) memory. Under grouped-query attention the gradient with
respect to a shared K/V head would sum over its query heads, so K and V are first broadcast to
one copy per query head.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from sinks_jax.model.kv_heads import expand_kv

AttendFn = Callable[[jax.Array, jax.Array, jax.Array], object]


def received_attention(
    q_BxTxHxD: jax.Array,
    k_BxTxKxD: jax.Array,
    v_BxTxKxD: jax.Array,
    attend_fn: AttendFn,
    query_weights_BxT: jax.Array | None = None,
) -> jax.Array:
    """`[B, H, T]`: `sum_i w[i] A[h][i, k]` for every query head h and key k (w = 1 without
    `query_weights_BxT`, e.g. 0 for padding), without the T x T map.

    `attend_fn(q, k, v)` -> output `[B, T, H, Dv]`, or a tuple or named tuple whose first
    entry is it (e.g. `functools.partial(sinks_jax.model.attention.attention,
    backend="cudnn", segment_ids=seg)`); it must be differentiable with respect to v, and is
    called with K/V broadcast to the H query heads. Only the gradient with respect to v is
    taken; its value does not depend on v.
    """
    H = q_BxTxHxD.shape[2]
    k_BxTxHxD, v_BxTxHxD = expand_kv(k_BxTxKxD, H), expand_kv(v_BxTxKxD, H)

    def out_of_v(v):
        out = attend_fn(q_BxTxHxD, k_BxTxHxD, v)
        out = out[0] if isinstance(out, tuple) else out
        return out.astype(jnp.float32)

    out, pullback = jax.vjp(out_of_v, v_BxTxHxD)
    cotangent = jnp.ones_like(out)
    if query_weights_BxT is not None:
        cotangent = cotangent * query_weights_BxT.astype(out.dtype)[:, :, None, None]
    (grad_v_BxTxHxD,) = pullback(cotangent)
    # Every feature of the gradient holds the same column sum; the mean absorbs rounding.
    return jnp.mean(grad_v_BxTxHxD.astype(jnp.float32), axis=-1).transpose(0, 2, 1)
