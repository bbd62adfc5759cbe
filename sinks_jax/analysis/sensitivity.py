"""Over-squashing: exact Jacobian sensitivity and the path-sum bound of Theorem 3.2.

`jacobian_sensitivity` measures `||d v_target^(l) / d v_i^(0)||_F` for every source token i
with reverse-mode autodiff over the input embeddings. One VJP linearises the model; the
pullback is then applied to output directions of the target's `D` features (per requested
layer), a chunk of directions at a time (`lax.map` over chunks, `vmap` inside), so the memory
is one linearisation plus `chunk_size` cotangent passes, and the time is one backward pass per
direction.

Exact (`num_directions=None`): every basis direction, `D` backward passes per layer. With
`num_directions=K < D`, K random orthonormal directions per layer (Haar, from `key`) instead:
`(D / K) * sum_k ||q_k^T J_i||^2` is an unbiased estimate of `||J_i||_F^2` for every source i
at once, exact when K = D, with a relative standard deviation of at most `sqrt(2 / K)` on
the squared norm (a rank-one J_i; far less when J_i spreads over many directions). It costs
K / D of the exact measurement.

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
    num_directions: int | None = None,
    key: Array | None = None,
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
      num_directions: None (or >= D): exact, every output direction. K < D: an unbiased
        estimate of the squared norms from K random orthonormal output directions per layer
        (see the module docstring), K / D of the cost.
      key: PRNG key of the random directions (default `jax.random.key(0)`).

    Returns:
      `[len(layers), T]` float32. Sources after the target are exactly 0 in a causal model; the
      layer-0 row is `sqrt(D)` at the target and 0 elsewhere (exactly so only when exact).
    """
    emb_TxD = embeddings_TxD[0] if embeddings_TxD.ndim == 3 else embeddings_TxD
    if emb_TxD.ndim != 2:
        raise ValueError(f"embeddings must be [T, D] or [1, T, D], got {embeddings_TxD.shape}.")
    if num_directions is not None and num_directions < 1:
        raise ValueError(f"num_directions={num_directions}: give at least 1, or None (exact).")

    def target_rows(e_TxD):
        hidden = forward_fn(params, e_TxD[None])  # [L+1, 1, T, D]
        rows = hidden[:, 0, target, :]  # [L+1, D]
        return rows if layers is None else rows[jnp.asarray(list(layers))]

    rows_NxD, pullback = jax.vjp(target_rows, emb_TxD)
    n_layers, D = rows_NxD.shape
    exact = num_directions is None or num_directions >= D
    K = D if exact else num_directions  # directions per layer
    if exact:
        basis_NxKxD = None  # the standard basis, one-hot inside each chunk
        scale = 1.0
    else:  # K orthonormal columns of a Haar-random D x D matrix, per layer.
        key = jax.random.key(0) if key is None else key
        dtype = jnp.promote_types(rows_NxD.dtype, jnp.float32)
        gauss_NxDxK = jax.random.normal(key, (n_layers, D, K), dtype)
        q_NxDxK, r_NxKxK = jnp.linalg.qr(gauss_NxDxK)
        signs_NxK = jnp.sign(jnp.diagonal(r_NxKxK, axis1=-2, axis2=-1))  # Haar, not QR's bias
        basis_NxKxD = jnp.swapaxes(q_NxDxK * signs_NxK[:, None, :], 1, 2).astype(rows_NxD.dtype)
        scale = D / K
    num_dirs = n_layers * K
    chunk = max(1, min(chunk_size, num_dirs))
    num_chunks = -(-num_dirs // chunk)
    # Direction ids past num_dirs get all-zero cotangents: padding that adds nothing.
    dir_ids_CxM = jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)

    def one_chunk(ids_M):
        layer_M, k_M = ids_M // K, ids_M % K
        layer_of_MxN = jax.nn.one_hot(layer_M, n_layers, dtype=rows_NxD.dtype)  # 0 for padding
        if basis_NxKxD is None:
            vec_MxD = jax.nn.one_hot(k_M, D, dtype=rows_NxD.dtype)
        else:
            vec_MxD = basis_NxKxD[jnp.minimum(layer_M, n_layers - 1), k_M]
        cot_MxNxD = layer_of_MxN[:, :, None] * vec_MxD[:, None, :]
        (grad_MxTxD,) = jax.vmap(pullback)(cot_MxNxD)
        sq_MxT = jnp.sum(jnp.square(grad_MxTxD.astype(jnp.float32)), axis=-1)
        return layer_of_MxN.astype(jnp.float32).T @ sq_MxT  # [N, T]

    total_NxT = jnp.sum(jax.lax.map(one_chunk, dir_ids_CxM), axis=0)
    return jnp.sqrt(scale * total_NxT)


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
