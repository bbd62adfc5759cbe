"""Hugging Face checkpoints without torch: `model, tokenizer = load(path)`.

The importer lives in `sinks_jax.pretrained` (`hf` the entry points, `hf_config`,
`safetensors`, `plans`, `weights`, `hf_tokenizer`); this module keeps its public names where
they have always been imported from.
"""

from sinks_jax.pretrained.hf import build, load, random_model
from sinks_jax.pretrained.hf_config import (
    GEMMA3_TEXT_DEFAULTS,
    LLAMA_3_1_8B,
    SUPPORTED_MODEL_TYPES,
    config_from_hf_dict,
)
from sinks_jax.pretrained.hf_tokenizer import load_tokenizer
from sinks_jax.pretrained.plans import Plan, weight_plan
from sinks_jax.pretrained.safetensors import SafetensorsFolder
from sinks_jax.pretrained.weights import load_params

__all__ = [
    "GEMMA3_TEXT_DEFAULTS",
    "LLAMA_3_1_8B",
    "SUPPORTED_MODEL_TYPES",
    "Plan",
    "SafetensorsFolder",
    "build",
    "config_from_hf_dict",
    "load",
    "load_params",
    "load_tokenizer",
    "random_model",
    "weight_plan",
]
