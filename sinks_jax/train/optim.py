"""The optimizer: AdamW with a decay mask, global-norm clipping, linear warm-up then cosine decay.

Weight decay applies only to matrices (embeddings, projections); norms, biases and any other
parameter that is 1-D per layer are left alone. Stacked layer parameters carry a leading
`[L]` axis, so "1-D" is judged after dropping that axis.

Gradient accumulation is not an optax wrapper here: the train step scans over micro-batches
and sums gradients before one `tx.update` (see `sinks_jax.train.step`), so one optimizer step
always sees exactly `tokens_per_step` tokens whatever the context length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

LAYER_AXIS_KEY = "layers"  # parameters under this key have a leading [L] axis.
NO_DECAY_NAMES = ("scale", "bias")  # norm parameters.


def key_names(path) -> list[str]:
    """The names along a jax key path (dict keys, attribute names, sequence indices)."""
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decays(path, leaf) -> bool:
    """Whether the parameter at `path` (a jax key path) gets weight decay."""
    names = key_names(path)
    name = names[-1] if names else ""
    if name in NO_DECAY_NAMES or any("norm" in n for n in names):
        return False
    if name.startswith("b") and name not in ("embed",):  # bq, bk, bv, bo, b_up, b_down.
        return False
    ndim = leaf.ndim - (1 if LAYER_AXIS_KEY in names else 0)
    return ndim >= 2


def decay_mask(params: Any) -> Any:
    """A pytree of bools like `params`: True where weight decay applies."""
    return jax.tree_util.tree_map_with_path(decays, params)


def make_schedule(optim_cfg: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """Learning rate per optimizer step: 0 -> `lr` linearly over `warmup_steps`, then cosine
    to `min_lr` at `num_steps` (constant after)."""
    warmup = int(optim_cfg["warmup_steps"])
    if warmup >= num_steps:
        raise ValueError(
            f"optim.warmup_steps={warmup} must be smaller than num_steps={num_steps}; "
            "shorten the warm-up or train longer."
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(optim_cfg["lr"]),
        warmup_steps=warmup,
        decay_steps=num_steps,
        end_value=float(optim_cfg["min_lr"]),
    )


def make_optimizer(optim_cfg: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with the schedule and the decay mask.

    `optim_cfg` keys: lr, min_lr, warmup_steps, b1, b2, eps, weight_decay, clip_norm
    (clip_norm <= 0 disables clipping).
    """
    schedule = make_schedule(optim_cfg, num_steps)
    parts = []
    if float(optim_cfg["clip_norm"]) > 0:
        parts.append(optax.clip_by_global_norm(float(optim_cfg["clip_norm"])))
    parts.append(
        optax.adamw(
            learning_rate=schedule,
            b1=float(optim_cfg["b1"]),
            b2=float(optim_cfg["b2"]),
            eps=float(optim_cfg["eps"]),
            weight_decay=float(optim_cfg["weight_decay"]),
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)


def accumulation_steps(tokens_per_step: int, seq_len: int, micro_batch_size: int) -> int:
    """Micro-batches per optimizer step so that each step sees `tokens_per_step` tokens.

    The global batch is `tokens_per_step // seq_len` sequences, split into micro-batches of
    `micro_batch_size` sequences (global, across all devices).
    """
    if tokens_per_step % seq_len:
        raise ValueError(
            f"tokens_per_step={tokens_per_step} is not divisible by seq_len={seq_len}; "
            "choose tokens_per_step as a multiple of every context length in the sweep."
        )
    batch = tokens_per_step // seq_len
    micro = min(micro_batch_size, batch)
    if batch % micro:
        raise ValueError(
            f"the global batch of {batch} sequences (tokens_per_step/seq_len) is not divisible "
            f"by micro_batch_size={micro_batch_size}; pick a divisor of {batch}."
        )
    return batch // micro
