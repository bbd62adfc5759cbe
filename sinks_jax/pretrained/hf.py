"""Hugging Face checkpoints without torch: `model, tokenizer = load(path)`.

A local checkpoint folder (`config.json`, `*.safetensors` with or without
`model.safetensors.index.json`, optionally `tokenizer.json`) becomes a ready `Transformer`
(its `ModelConfig` is `model.config`) and a `sinks_jax.data.tokenizers.HFTokenizer` with the
checkpoint's special tokens. Supported `model_type`s:

    llama    Llama 1-3.x (rope scaling "linear" and "llama3"; tied or untied output)
    mistral  as llama (sliding-window attention is not modelled: exact for T <= window)
    qwen2    as llama with q/k/v biases
    gemma    Gemma 1: RMSNorm with (1 + w), sqrt(d_model) embedding scale, GeGLU, tied output
    gemma2   as gemma, plus local sliding-window layers alternating with global ones,
             post-attention/post-MLP norms, query_pre_attn_scalar, attention-logit and
             final-logit soft-capping (backends xla and blockwise)
    gemma3_text  Gemma 3 (Gemma3ForCausalLM): as gemma2 without soft-capping, with per-head
             q/k norms and a RoPE base per layer type (local rope_local_base_freq, global
             rope_theta with rope scaling); `layer_types` or `sliding_window_pattern`
    gemma3   the language model of Gemma3ForConditionalGeneration (its `text_config`; the
             vision tower's weights are skipped)
    gpt2     learned positions, LayerNorm, GELU (tanh), biases, Conv1D ([in, out]) weights

Weights are read straight from the safetensors files through memory maps (every dtype,
bfloat16 included, via ml_dtypes), converted to our layout one parameter at a time, and put
on the devices with a simple FSDP rule when there are several: the largest axis divisible by
the device count, never the stacked layer axis. Both projections use the half-split RoPE
layout of Hugging Face's Llama-family checkpoints, so no permutation of q/k is needed.

`config_from_hf_dict(config_json_dict)` gives the `ModelConfig` alone (e.g. to build a
randomly initialised model of a published shape with `random_model`); `build(config_json_dict,
tensors)` builds a model from any HF-named tensor source. `load` also reads a `.gguf` file (or
a folder holding one and no config.json) through `sinks_jax.pretrained.gguf`.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from flax import nnx
from jax.sharding import Mesh

from sinks_jax.data.tokenizers import HFTokenizer
from sinks_jax.model import Transformer
from sinks_jax.pretrained.hf_config import config_from_hf_dict
from sinks_jax.pretrained.hf_tokenizer import load_tokenizer
from sinks_jax.pretrained.safetensors import SafetensorsFolder
from sinks_jax.pretrained.weights import load_params


def load(
    path: str,
    dtype: str | None = None,
    *,
    attention: str = "xla",
    mesh: Mesh | None = None,
    progress: bool = True,
    **overrides: Any,
) -> tuple[Transformer, HFTokenizer | None]:
    """Loads a local Hugging Face checkpoint folder or GGUF file: (Transformer, tokenizer or None).

    dtype: None or "float32" (default), "bfloat16" or "float16", for parameters and compute.
    attention: the backend ("xla" for full attention maps; "cudnn"/"blockwise" for long T).
    mesh: a mesh with an "fsdp" axis to shard over (default: all devices).
    overrides: other `ModelConfig` fields (e.g. remat=True, global_first_key=True).
    """
    from sinks_jax.pretrained.gguf import find_gguf, read_gguf

    gguf_file = find_gguf(path)
    if gguf_file is not None:
        hf_config, tensors, tokenizer = read_gguf(gguf_file)
        model = build(hf_config, tensors, dtype=dtype, attention=attention, mesh=mesh,
                      progress=progress, **overrides)
        return model, tokenizer
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{config_path} not found: {path!r} is neither a checkpoint folder nor a .gguf file."
        )
    with open(config_path) as f:
        hf_config = json.load(f)
    cfg = config_from_hf_dict(hf_config, dtype=dtype, attention=attention, **overrides)
    model = load_params(hf_config["model_type"], cfg, SafetensorsFolder(path), mesh, progress)
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        tokenizer = load_tokenizer(path, hf_config)
    else:
        warnings.warn(f"no tokenizer.json in {path!r}: returning tokenizer=None.", stacklevel=2)
        tokenizer = None
    return model, tokenizer


def build(
    hf_config: dict[str, Any],
    tensors: Any,
    dtype: str | None = None,
    *,
    attention: str = "xla",
    mesh: Mesh | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Transformer:
    """A `Transformer` from a `config.json` dict and HF-named tensors.

    `tensors` has `names` (every tensor name) and `get(name)` (a numpy array in HF's layout):
    a `SafetensorsFolder`, a GGUF file's `GGUFTensors`, or any such object. Other arguments as
    for `load`.
    """
    cfg = config_from_hf_dict(hf_config, dtype=dtype, attention=attention, **overrides)
    return load_params(hf_config["model_type"], cfg, tensors, mesh, progress)


def random_model(
    hf_config: dict[str, Any],
    *,
    seed: int = 0,
    dtype: str = "bfloat16",
    attention: str = "cudnn",
    **overrides: Any,
) -> Transformer:
    """A randomly initialised model of a published shape, e.g. `random_model(LLAMA_3_1_8B)`.

    Parameters are created under `jax.jit` directly in `dtype` (Llama-3.1-8B in bfloat16 takes
    16 GB of device memory).
    """
    cfg = config_from_hf_dict(hf_config, dtype=dtype, attention=attention, **overrides)

    @nnx.jit
    def make() -> Transformer:
        return Transformer(cfg, rngs=nnx.Rngs(seed))

    return make()
