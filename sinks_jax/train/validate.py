"""Checks of a training config before anything is built or compiled, each a one-line error.

The model config validates itself (`ModelConfig.__post_init__`: shapes, dtype and
`global_first_key` against the backend table). What needs the rest of the run is checked
here: counts that must be positive, packing against masking, and the attention backend
against the run's segment ids, sequence lengths and, when given, the machine's platform.
"""

from __future__ import annotations

import ml_collections

from sinks_jax.model import ModelConfig, backends


class ConfigError(ValueError):
    """A training config (file, argument, override or value) is wrong; the message says how."""


# Counts that must be positive ints, and the one that may also be 0 (off).
POSITIVE = (
    "num_steps",
    "seq_len",
    "tokens_per_step",
    "micro_batch_size",
    "eval_every",
    "eval_batches",
    "eval_sink_sequences",
    "eval_sink_len",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
)
NON_NEGATIVE = ("sink_stats_every",)


def validate_config(
    config: ml_collections.ConfigDict, *, platform: str | None = None
) -> ModelConfig:
    """The run's `ModelConfig`, once the config's fields are known to work together.

    `platform` is this machine's JAX platform (`jax.default_backend()`: "cpu", "gpu", "tpu");
    None skips the machine checks (e.g. when building launch commands on a login node).
    Raises ConfigError (or ModelConfig's ValueError) naming the field and the fix.
    """
    for key in POSITIVE + NON_NEGATIVE:
        v, low = config.get(key), 0 if key in NON_NEGATIVE else 1
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            kind = "a non-negative" if low == 0 else "a positive"
            raise ConfigError(
                f"{key}={v!r} must be {kind} int; set --config.{key}=N "
                "(train/config_base.py says what each key means)."
            )
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    intra_doc = bool(config.data.intra_doc)
    if config.data.packing == "fixed_bos" and intra_doc and not model_cfg.global_first_key:
        raise ConfigError(
            "data.packing='fixed_bos' with data.intra_doc=True needs model.global_first_key=True "
            "(the fixed <bos> at position 0 must stay visible to every document); set "
            "--config.model.global_first_key=True."
        )
    needs = {
        "dtype": model_cfg.dtype,
        "segment_ids": intra_doc,
        "global_first_key": model_cfg.global_first_key,
        "platform": platform,
    }
    # The model runs at the training length and at the sink evaluation's length.
    lengths = sorted({config.seq_len, config.eval_sink_len})
    found = [p for t in lengths for p in backends.problems(model_cfg.attention, **needs, seq_len=t)]
    if found:
        able = [
            b
            for b in backends.BACKENDS
            if not any(backends.problems(b, **needs, seq_len=t) for t in lengths)
        ]
        fix = (
            f"add --config.model.attention={'blockwise' if 'blockwise' in able else able[0]} "
            f"(backends that can: {', '.join(able)})"
            if able
            else "no backend can run this combination; change the listed settings"
        )
        raise ConfigError(
            f"model.attention={model_cfg.attention!r} {found[0]}{_preset_note(model_cfg)}; "
            f"{fix}."
        )
    return model_cfg


def _preset_note(model_cfg: ModelConfig) -> str:
    if model_cfg.attention == "cudnn":
        return " (the 'paper' and 'small' sizes use cudnn: they are GPU configs)"
    return ""
