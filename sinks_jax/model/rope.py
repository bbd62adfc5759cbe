"""Rotary position embedding: inverse frequencies (LLaMA-3 or linear scaling, a separate base
for local layers) and the rotation in the half-split layout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sinks_jax.model.config import ModelConfig


def rope_inverse_frequencies(cfg: ModelConfig, local: bool = False) -> jax.Array:
    """[head_dim / 2] float32 inverse frequencies, with LLaMA-3 or linear scaling if set.

    `local`: those of the local layers (base `rope_local_theta`, unscaled, when it is set).
    """
    d = cfg.head_size
    local_base = local and cfg.rope_local_theta is not None
    theta = cfg.rope_local_theta if local_base else cfg.rope_theta
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    scaling = None if local_base else cfg.rope_scaling_dict
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        return jnp.where(medium, smoothed, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported; supported: 'linear', 'llama3'.")


def layer_inv_freq(cfg: ModelConfig, local) -> jax.Array | None:
    """A layer's RoPE inverse frequencies (None without RoPE); `local` is a bool or a traced
    per-layer flag (then a select between the local and the global frequencies)."""
    if cfg.position_type != "rope":
        return None
    if isinstance(local, bool):
        return rope_inverse_frequencies(cfg, local)
    local_freqs, global_freqs = rope_inverse_frequencies(cfg, True), rope_inverse_frequencies(cfg)
    return jnp.where(local, local_freqs, global_freqs)


def apply_rope(x_BxTxHxD: jax.Array, positions_BxT: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotary embedding in the half-split layout: pairs (x[i], x[i + D/2]) rotate together."""
    angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
    cos = jnp.cos(angles_BxTxF)[:, :, None, :].astype(x_BxTxHxD.dtype)
    sin = jnp.sin(angles_BxTxF)[:, :, None, :].astype(x_BxTxHxD.dtype)
    x1, x2 = jnp.split(x_BxTxHxD, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
