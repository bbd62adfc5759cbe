"""Normalisation: RMSNorm (LLaMA, Gemma's 1 + w) or LayerNorm (GPT-2), computed in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model.config import ModelConfig


class Norm(nnx.Module):
    """RMSNorm (LLaMA; `scale_offset=1` gives Gemma's 1 + w) or LayerNorm (GPT-2), in float32,
    over the last axis of size `dim` (default d_model; head_dim for the q/k norms)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dim: int | None = None):
        del rngs
        self.kind, self.eps, self.offset = cfg.norm_type, cfg.norm_eps, cfg.norm_scale_offset
        dim = cfg.d_model if dim is None else dim
        init = 0.0 if cfg.norm_scale_offset else 1.0
        self.scale = nnx.Param(jnp.full((dim,), init, jnp.dtype(cfg.param_dtype)))
        if cfg.norm_type == "layer":
            self.bias = nnx.Param(jnp.zeros((dim,), jnp.dtype(cfg.param_dtype)))

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        x = x_BxTxD.astype(jnp.float32)
        if self.kind == "layer":
            x = x - x.mean(-1, keepdims=True)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        x = x * (self.scale[...].astype(jnp.float32) + self.offset)
        if self.kind == "layer":
            x = x + self.bias[...].astype(jnp.float32)
        return x.astype(x_BxTxD.dtype)
