"""Model FLOPs per token and accelerator peaks, for MFU (MaxText's accounting).

Training FLOPs per token = 6 x (parameters used in matmuls) + attention, where attention
costs 12 x layers x query heads x head_dim x T per token for full score matrices, halved
because the mask is causal.
"""

from __future__ import annotations

import jax

from sinks_jax.model import ModelConfig

# Dense bf16 peak FLOP/s per device; matched as substrings of `device_kind` (lower case).
PEAK_FLOPS = {
    "h200": 989e12,
    "h100": 989e12,
    "a100": 312e12,
    "l40s": 362e12,
    "v6 lite": 918e12,
    "v6e": 918e12,
    "v5p": 459e12,
    "v5 lite": 197e12,
    "v5e": 197e12,
    "v4": 275e12,
}


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """FLOPs of one forward + backward pass per training token at context `seq_len`."""
    matmul_params = cfg.param_count(include_embeddings=False) + cfg.d_model * cfg.vocab_size
    attention = 12 * cfg.num_layers * cfg.num_heads * cfg.head_size * seq_len / 2
    return 6.0 * matmul_params + attention


def peak_flops_per_device(override: float = 0.0) -> float:
    """Peak FLOP/s of one local device (0.0 when unknown, e.g. CPU: MFU is then not shown)."""
    if override > 0:
        return float(override)
    kind = jax.devices()[0].device_kind.lower()
    for name, peak in PEAK_FLOPS.items():
        if name in kind:
            return peak
    return 0.0
