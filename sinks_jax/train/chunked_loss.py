"""The output head and the cross-entropy fused over chunks of tokens (`model.head_chunk`).

    total = chunked_ce_sum(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk=8192)

is sum_t w_t (logsumexp(z_t) - z_t[y_t]) with z_t = h_t W the float32 logits (bf16 operands,
float32 accumulation: the numbers of `model.head.output_head`), computed one chunk of
tokens at a time, so the [N, V] float32 logits of the whole micro-batch are never written.

The loss is a weighted *sum* with weights known in the forward pass, so its gradient is
known there too: dz_t = w_t (softmax(z_t) - onehot(y_t)), dh = dz W^T and dW = h^T dz (both
matmuls on bf16 dz, as `output_head`'s backward). The forward pass computes them chunk by
chunk beside the loss and keeps dh [N, D] and dW [D, V]; the backward pass only scales them
by the loss's cotangent. The FLOPs are those of the unfused head (one forward and two
gradient matmuls); what is saved is the memory traffic of the logits and their gradient.
Use it only under differentiation (the training step): a forward alone would pay for the
gradient matmuls too.

Under a batch-sharded mesh in context (the training step's, `model/shard.py`) every device
runs the chunks of its own rows (`jax.shard_map`); the loss and dW are then summed over the
devices. Left to XLA, the scan over chunks of a row-sharded [N, D] would gather the rows and
run every chunk on every device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from sinks_jax.model import shard


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_ce_sum(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk: int) -> jax.Array:
    """float32 sum over tokens of w_t * cross-entropy(h_t W, y_t) (see the module docstring)."""
    total, _ = _forward(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk)
    return total


def _forward(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk):
    """(loss, (dh [B, T, D], dW [D, V] float32)), per device over the mesh's batch axes."""
    if not (isinstance(chunk, int) and chunk > 0):
        raise ValueError(f"chunked_ce_sum: chunk={chunk!r} must be a positive int (tokens).")
    axes = shard.batch_axes(h_BxTxD.shape[0])
    if not axes:
        loss, dh, dw = _rows(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk)
        return loss, (dh, dw)

    def local(h, head, y, w):
        loss, dh, dw = _rows(h, head, y, w, chunk)
        return loss[None], dh, dw[None]  # per-device partial sums, stacked on a device axis.

    rows = P(axes)
    loss_X, dh, dw_XxDxV = jax.shard_map(
        local,
        mesh=jax.sharding.get_abstract_mesh(),
        in_specs=(rows, P(), rows, rows),
        out_specs=(rows, rows, rows),
        check_vma=False,
    )(h_BxTxD, head_DxV, targets_BxT, weights_BxT)
    return jnp.sum(loss_X), (dh, jnp.sum(dw_XxDxV, axis=0))


def _rows(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk):
    """The chunked loss of some rows: (loss, dh [B, T, D], dW [D, V] float32)."""
    B, T, D = h_BxTxD.shape
    h_NxD, targets_N, weights_N = (
        h_BxTxD.reshape(B * T, D),
        targets_BxT.reshape(-1),
        weights_BxT.reshape(-1),
    )
    N = B * T
    V = head_DxV.shape[1]
    n = -(-N // chunk)
    pad = n * chunk - N  # padded tokens get weight 0.
    h_CxKxD = jnp.pad(h_NxD, ((0, pad), (0, 0))).reshape(n, chunk, D)
    y_CxK = jnp.pad(targets_N.astype(jnp.int32), (0, pad)).reshape(n, chunk)
    w_CxK = jnp.pad(weights_N.astype(jnp.float32), (0, pad)).reshape(n, chunk)
    head = head_DxV.astype(h_NxD.dtype)

    def one_chunk(dw_DxV, xs):
        h_KxD, y_K, w_K = xs
        z_KxV = jnp.dot(h_KxD, head, preferred_element_type=jnp.float32)
        lse_K = jax.nn.logsumexp(z_KxV, axis=-1)
        z_y_K = jnp.take_along_axis(z_KxV, y_K[:, None], axis=-1)[:, 0]
        loss = jnp.sum(w_K * (lse_K - z_y_K))
        p_KxV = jnp.exp(z_KxV - lse_K[:, None])
        onehot_KxV = y_K[:, None] == jnp.arange(V, dtype=jnp.int32)[None, :]
        dz_KxV = (w_K[:, None] * (p_KxV - onehot_KxV)).astype(h_NxD.dtype)
        dh_KxD = jnp.dot(dz_KxV, head.T, preferred_element_type=jnp.float32).astype(h_NxD.dtype)
        dw_DxV = dw_DxV + jnp.dot(h_KxD.T, dz_KxV, preferred_element_type=jnp.float32)
        return dw_DxV, (loss, dh_KxD)

    dw_DxV, (loss_C, dh_CxKxD) = jax.lax.scan(
        one_chunk, jnp.zeros((D, V), jnp.float32), (h_CxKxD, y_CxK, w_CxK)
    )
    dh_BxTxD = dh_CxKxD.reshape(n * chunk, D)[:N].reshape(B, T, D)
    return jnp.sum(loss_C), dh_BxTxD, dw_DxV


def _fwd(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk):
    total, (dh_BxTxD, dw_DxV) = _forward(h_BxTxD, head_DxV, targets_BxT, weights_BxT, chunk)
    return total, (dh_BxTxD, dw_DxV.astype(head_DxV.dtype))


def _bwd(chunk, res, g):
    dh_BxTxD, dw_DxV = res
    return (g * dh_BxTxD).astype(dh_BxTxD.dtype), g.astype(dw_DxV.dtype) * dw_DxV, None, None


chunked_ce_sum.defvjp(_fwd, _bwd)
