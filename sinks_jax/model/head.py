"""The output head's matmul: float32 logits from low-precision operands, low-precision
gradient matmuls."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def output_head(h_BxTxD: jax.Array, w_DxV: jax.Array) -> jax.Array:
    """float32 logits from low-precision operands, with low-precision backward matmuls.

    Forward: bf16 x bf16 with float32 accumulation and a float32 result, so the loss sees
    accurate logits. Backward: the float32 cotangent is cast to the operands' dtype before
    the two gradient matmuls; left to itself, XLA would run them as float32 (TF32) GEMMs,
    the single largest kernel of a 120M-parameter training step on an H200 (BENCHMARKS.md).
    """
    return jnp.einsum("btd,dv->btv", h_BxTxD, w_DxV, preferred_element_type=jnp.float32)


def _output_head_fwd(h_BxTxD, w_DxV):
    return output_head(h_BxTxD, w_DxV), (h_BxTxD, w_DxV)


def _output_head_bwd(res, g_BxTxV):
    h_BxTxD, w_DxV = res
    g = g_BxTxV.astype(h_BxTxD.dtype)
    dh = jnp.einsum("btv,dv->btd", g, w_DxV, preferred_element_type=jnp.float32)
    dw = jnp.einsum("btd,btv->dv", h_BxTxD, g, preferred_element_type=jnp.float32)
    return dh.astype(h_BxTxD.dtype), dw.astype(w_DxV.dtype)


output_head.defvjp(_output_head_fwd, _output_head_bwd)
