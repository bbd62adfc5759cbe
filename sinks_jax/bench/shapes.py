"""Model shapes of the benchmarks: the paper's 120M model (the `paper` preset of
`sinks_jax.train.config_base.SIZES`), Llama 3.1 8B, and a shape that runs in seconds on a CPU
(`--quick`)."""

from __future__ import annotations

from typing import Any

from sinks_jax.train.config_base import SIZES

# The paper preset's model without its backend (each benchmark case names its own).
PAPER_120M = {k: v for k, v in SIZES["paper"]["model"].items() if k != "attention"}
QUICK_SHAPE = dict(  # --quick: a model that runs in seconds on a CPU
    vocab_size=259,
    num_layers=2,
    d_model=64,
    num_heads=4,
    num_kv_heads=1,
    d_ff=128,
    dtype="float32",
    param_dtype="float32",
)


def model_shape(name: str, quick: bool) -> dict[str, Any]:
    """ModelConfig fields of `name` ("paper_120m" or "llama8b"); QUICK_SHAPE with --quick."""
    if quick:
        return dict(QUICK_SHAPE)
    if name == "llama8b":
        from sinks_jax.pretrained.hf_config import LLAMA_3_1_8B, config_from_hf_dict

        return config_from_hf_dict(LLAMA_3_1_8B, dtype="bfloat16").to_dict()
    return dict(PAPER_120M)
