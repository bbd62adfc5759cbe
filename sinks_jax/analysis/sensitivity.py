"""Over-squashing: exact Jacobian sensitivity and the path-sum bound of Theorem 3.2.

`jacobian_sensitivity` measures `||d v_target^(l) / d v_i^(0)||_F` for every source token i
with reverse-mode autodiff over the input embeddings. One VJP linearises the model; the
pullback is then applied to every basis direction of the target's `D` output features (per
requested layer), a chunk of directions at a time (`lax.map` over chunks, `vmap` inside), so
the memory is one linearisation plus `chunk_size` cotangent passes.

`path_bound` is the matrix form of the bound: entry `(j, i)` of
`Abar^(L) @ ... @ Abar^(1)`, `Abar^(l) = sum_h A[l, h] + I`, the sum over causal paths
`i -> j` of the products of (all-head attention + residual) weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
ForwardFn = Callable[[Any, Array], Array]


def jacobian_sensitivity(
    forward_fn: ForwardFn,
    params: Any,
    embeddings_TxD: Array,
    target: int | Array,
    *,
    layers: Sequence[int] | None = None,
    chunk_size: int = 64,
) -> Array:
    """`[n_layers, T]`: Frobenius norm of `d hidden[l][target] / d embeddings[i]` for each source i.

    Args:
      forward_fn: `forward_fn(params, embeddings_BxTxD) -> hidden [L+1, B, T, D]`, the residual
        stream with the embeddings first. Must be differentiable in the embeddings.
      params: passed through to `forward_fn` (not differentiated).
      embeddings_TxD: one sequence's input embeddings (`[1, T, D]` is accepted too).
      target: the target token position j (0-based).
      layers: which entries of `hidden` to measure (default all `L+1`; `[-1]` for the last).
      chunk_size: output directions per backward batch; lower it if memory is short.

    Returns:
      `[len(layers), T]` float32. Sources after the target are exactly 0 in a causal model; the
      layer-0 row is `sqrt(D)` at the target and 0 elsewhere.
    """
    emb_TxD = embeddings_TxD[0] if embeddings_TxD.ndim == 3 else embeddings_TxD
    if emb_TxD.ndim != 2:
        raise ValueError(f"embeddings must be [T, D] or [1, T, D], got {embeddings_TxD.shape}.")

    def target_rows(e_TxD):
        hidden = forward_fn(params, e_TxD[None])  # [L+1, 1, T, D]
        rows = hidden[:, 0, target, :]  # [L+1, D]
        return rows if layers is None else rows[jnp.asarray(list(layers))]

    rows_NxD, pullback = jax.vjp(target_rows, emb_TxD)
    n_layers, D = rows_NxD.shape
    num_dirs = n_layers * D
    chunk = max(1, min(chunk_size, num_dirs))
    num_chunks = -(-num_dirs // chunk)
    # Direction ids past num_dirs one-hot to all-zero cotangents: padding that adds nothing.
    dir_ids_CxK = jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)

    def one_chunk(ids_K):
        cot_KxNxD = jax.nn.one_hot(ids_K, num_dirs, dtype=rows_NxD.dtype).reshape(-1, n_layers, D)
        (grad_KxTxD,) = jax.vmap(pullback)(cot_KxNxD)
        sq_KxT = jnp.sum(jnp.square(grad_KxTxD.astype(jnp.float32)), axis=-1)
        layer_of_KxN = jax.nn.one_hot(ids_K // D, n_layers, dtype=jnp.float32)  # 0 for padding
        return layer_of_KxN.T @ sq_KxT  # [N, T]

    total_NxT = jnp.sum(jax.lax.map(one_chunk, dir_ids_CxK), axis=0)
    return jnp.sqrt(total_NxT)


def path_bound(attn_LxBxHxTxT: Array, *, per_layer: bool = False) -> Array:
    """Sum over causal paths of products of `abar^(l)[j, i] = sum_h A[l, h][j, i] + delta_ji`.

    Args:
      attn_LxBxHxTxT: causal attention maps.
      per_layer: also return the partial products after every layer.

    Returns:
      `[B, T, T]` (target j, source i) = `(Abar^(L) @ ... @ Abar^(1))[j, i]`; with
      `per_layer=True`, `[L+1, B, T, T]` whose entry 0 is the identity.
    """
    B, T = attn_LxBxHxTxT.shape[1], attn_LxBxHxTxT.shape[-1]
    abar_LxBxTxT = jnp.sum(attn_LxBxHxTxT.astype(jnp.float32), axis=2) + jnp.eye(T)

    def step(prod_BxTxT, abar_BxTxT):
        new = jnp.einsum("bjk,bki->bji", abar_BxTxT, prod_BxTxT)
        return new, new

    eye_BxTxT = jnp.broadcast_to(jnp.eye(T, dtype=jnp.float32), (B, T, T))
    final, partial = jax.lax.scan(step, eye_BxTxT, abar_LxBxTxT)
    if per_layer:
        return jnp.concatenate([eye_BxTxT[None], partial], axis=0)
    return final
