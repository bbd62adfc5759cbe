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
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sinks_jax import progress as progress_lib
from sinks_jax.data.tokenizers import HFTokenizer
from sinks_jax.model import ModelConfig, Transformer

SUPPORTED_MODEL_TYPES = (
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "gpt2",
)

# Gemma3TextConfig's defaults for the fields that shape the network: Gemma 3 checkpoints
# (notably the text_config of the multimodal ones) store only the fields that differ.
GEMMA3_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "tie_word_embeddings": True,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
}

# Llama-3.1-8B's config.json (the fields that shape the network), for random-weight runs.
LLAMA_3_1_8B: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}

_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


# --------------------------------------------------------------------------- config


def _activation(name: str | None, model_type: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"{model_type}: activation {name!r} is not supported; supported: "
            f"{sorted(_ACTIVATIONS)}."
        )
    return _ACTIVATIONS[name]


def _rope(d: dict[str, Any]) -> tuple[float, tuple[tuple[str, Any], ...] | None]:
    """(rope_theta, rope_scaling) from either the legacy or the `rope_parameters` layout."""
    params = d.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    scaling = d.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if d.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(
            f"partial_rotary_factor={d['partial_rotary_factor']} is not supported (full RoPE only)."
        )
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, (("factor", float(scaling["factor"])), ("rope_type", "linear"))
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [k for k in keys if k not in scaling]
        if missing:
            raise ValueError(f"rope_scaling of type 'llama3' lacks {missing}: {scaling}.")
        items = [(k, float(scaling[k])) for k in keys] + [("rope_type", "llama3")]
        return theta, tuple(sorted(items))
    raise ValueError(
        f"rope_type {kind!r} is not supported; supported: 'default', 'linear', 'llama3'."
    )


def _warn_sliding_window(d: dict[str, Any]) -> None:
    window = d.get("sliding_window")
    uses = d.get("use_sliding_window", True) and window is not None
    if d.get("layer_types") is not None:
        uses = uses and "sliding_attention" in d["layer_types"]
    if uses:
        warnings.warn(
            f"{d.get('model_type')}: sliding_window={window} is not modelled; attention is full "
            f"causal, identical to the checkpoint's for sequences of at most {window} tokens.",
            stacklevel=3,
        )


def _layer_types(d: dict[str, Any], default_pattern: int) -> tuple[str, ...]:
    """Per-layer "local"/"global" from `layer_types`, else from `sliding_window_pattern` (every
    pattern-th layer global, the others local; Gemma 2: 2, Gemma 3: 6)."""
    n = d["num_hidden_layers"]
    names = {"sliding_attention": "local", "full_attention": "global"}
    if d.get("layer_types"):
        bad = sorted(set(d["layer_types"]) - set(names))
        if bad:
            raise ValueError(f"layer_types {bad} are not supported; supported: {sorted(names)}.")
        return tuple(names[t] for t in d["layer_types"])
    pattern = int(d.get("sliding_window_pattern", default_pattern))
    return tuple("local" if (i + 1) % pattern else "global" for i in range(n))


def _gemma3_rope(d: dict[str, Any]) -> dict[str, Any]:
    """Gemma 3's RoPE per layer type: global (rope_theta, rope scaling) and local (base only),
    from either `rope_parameters` keyed by layer type or the legacy flat keys."""
    params = d.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = {"rope_theta": GEMMA3_TEXT_DEFAULTS["rope_theta"]}
        full.update(params.get("full_attention") or {})
        local = {"rope_theta": GEMMA3_TEXT_DEFAULTS["rope_local_base_freq"]}
        local.update(params.get("sliding_attention") or {})
        theta, scaling = _rope({"rope_parameters": full})
        local_theta, local_scaling = _rope({"rope_parameters": local})
    else:
        theta, scaling = _rope(d)
        local_theta, local_scaling = float(d["rope_local_base_freq"]), None
    if local_scaling is not None:
        raise ValueError(
            f"gemma3_text: rope scaling of the local layers {local_scaling} is not supported "
            "(only the global layers' RoPE may be scaled)."
        )
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_local_theta": local_theta}


def _gemma2_3_fields(d: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The fields of Gemma 2 and 3 beyond Gemma 1's: local layers, post-norms, query scale,
    soft-capping (Gemma 2), q/k norms and per-type RoPE (Gemma 3)."""
    if d.get("use_bidirectional_attention"):
        raise ValueError(
            f"{model_type}: use_bidirectional_attention=True (non-causal attention) is not "
            "supported; the model is a causal decoder."
        )
    gemma3 = model_type == "gemma3_text"
    window = d.get("sliding_window", 4096)
    fields = {
        "norm_scale_offset": 1.0,
        "embedding_scale": math.sqrt(d["hidden_size"]),
        "post_norms": True,
        "qk_norm": gemma3,
        "query_scale": float(d.get("query_pre_attn_scalar", 256)) ** -0.5,
        "attn_logit_softcap": d.get("attn_logit_softcapping", None if gemma3 else 50.0),
        "final_logit_softcap": d.get("final_logit_softcapping", None if gemma3 else 30.0),
        "sliding_window": window,
        "layer_types": _layer_types(d, 6 if gemma3 else 2) if window else None,
    }
    if gemma3:
        fields.update(_gemma3_rope(d))
    return fields


def config_from_hf_dict(
    d: dict[str, Any], *, dtype: str | None = None, attention: str = "xla", **overrides: Any
) -> ModelConfig:
    """The `ModelConfig` of a Hugging Face `config.json` dict.

    `dtype` (None: "float32") sets both the compute and the parameter dtype; `attention` picks
    the backend; `overrides` replace any other `ModelConfig` field (e.g. remat=True).
    Raises ValueError naming the unsupported model type or feature.
    """
    model_type = d.get("model_type")
    if model_type == "gemma3":  # Gemma3ForConditionalGeneration: its language model.
        if not isinstance(d.get("text_config"), dict):
            raise ValueError(
                "gemma3: config.json has no text_config; expected a Gemma 3 multimodal config "
                "(or use model_type 'gemma3_text')."
            )
        text = {"tie_word_embeddings": d.get("tie_word_embeddings", True), **d["text_config"]}
        text["model_type"] = "gemma3_text"
        return config_from_hf_dict(text, dtype=dtype, attention=attention, **overrides)
    if model_type == "gemma3_text":
        d = {**GEMMA3_TEXT_DEFAULTS, **d}
    dtype = dtype or "float32"
    common: dict[str, Any] = {"dtype": dtype, "param_dtype": dtype, "attention": attention}
    if model_type in ("llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text"):
        if model_type == "llama" and d.get("mlp_bias"):
            raise ValueError("llama: mlp_bias=True (a bias on gate_proj) is not supported.")
        if model_type in ("mistral", "qwen2"):
            _warn_sliding_window(d)
        theta, scaling = (None, None) if model_type == "gemma3_text" else _rope(d)
        heads = d["num_attention_heads"]
        act = d.get("hidden_activation") or d.get("hidden_act")
        fields = {
            "vocab_size": d["vocab_size"],
            "num_layers": d["num_hidden_layers"],
            "d_model": d["hidden_size"],
            "num_heads": heads,
            "num_kv_heads": d.get("num_key_value_heads") or heads,
            "d_ff": d["intermediate_size"],
            "head_dim": d.get("head_dim") or d["hidden_size"] // heads,
            "rope_theta": theta,
            "rope_scaling": scaling,
            "norm_eps": float(d.get("rms_norm_eps", 1e-6)),
            "tie_embeddings": bool(d.get("tie_word_embeddings", model_type.startswith("gemma"))),
            "activation": _activation(act, model_type),
            "max_position_embeddings": int(d.get("max_position_embeddings", 8192)),
            "qkv_bias": model_type == "qwen2" or bool(d.get("attention_bias", False)),
            "out_bias": model_type == "llama" and bool(d.get("attention_bias", False)),
        }
        if model_type == "gemma":
            fields.update(norm_scale_offset=1.0, embedding_scale=math.sqrt(d["hidden_size"]))
        if model_type in ("gemma2", "gemma3_text"):
            fields.update(_gemma2_3_fields(d, model_type))
    elif model_type == "gpt2":
        if d.get("scale_attn_by_inverse_layer_idx"):
            raise ValueError("gpt2: scale_attn_by_inverse_layer_idx=True is not supported.")
        D, heads = d["n_embd"], d["n_head"]
        fields = {
            "vocab_size": d["vocab_size"],
            "num_layers": d["n_layer"],
            "d_model": D,
            "num_heads": heads,
            "d_ff": d.get("n_inner") or 4 * D,
            "norm_type": "layer",
            "norm_eps": float(d.get("layer_norm_epsilon", 1e-5)),
            "activation": _activation(d.get("activation_function", "gelu_new"), model_type),
            "gated_mlp": False,
            "position_type": "learned",
            "max_position_embeddings": d["n_positions"],
            "qkv_bias": True,
            "out_bias": True,
            "mlp_bias": True,
            "tie_embeddings": bool(d.get("tie_word_embeddings", True)),
            "query_scale": None if d.get("scale_attn_weights", True) else 1.0,
        }
    else:
        raise ValueError(
            f"model_type {model_type!r} (architectures {d.get('architectures')}) is not "
            f"supported; supported model types: {SUPPORTED_MODEL_TYPES}."
        )
    fields.update(common)
    if isinstance(overrides.get("rope_scaling"), dict):
        overrides["rope_scaling"] = tuple(sorted(overrides["rope_scaling"].items()))
    fields.update(overrides)
    return ModelConfig(**fields)


# --------------------------------------------------------------------------- safetensors


class SafetensorsFolder:
    """Lazy, read-only view of the tensors of a checkpoint folder (memory-mapped, no torch).

    `names` lists every tensor; `get(name)` returns it as a numpy array in its stored dtype.
    """

    def __init__(self, path: str):
        index_path = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index_path):
            with open(index_path) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(
                f"no *.safetensors files in {path!r}; convert the checkpoint with "
                "save_pretrained(..., safe_serialization=True)."
            )
        self._where: dict[str, tuple[str, dict[str, Any], int]] = {}
        self._maps: dict[str, np.memmap] = {}
        for name in files:
            file = os.path.join(path, name)
            with open(file, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            for tensor, info in header.items():
                self._where[tensor] = (file, info, 8 + n)

    @property
    def names(self) -> list[str]:
        return sorted(self._where)

    def get(self, name: str) -> np.ndarray:
        file, info, base = self._where[name]
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: safetensors dtype {info['dtype']} is not supported.")
        if file not in self._maps:
            self._maps[file] = np.memmap(file, dtype=np.uint8, mode="r")
        start, end = info["data_offsets"]
        raw = self._maps[file][base + start : base + end]
        return raw.view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])


# --------------------------------------------------------------------------- weight plans

# A plan maps our parameter path to (per_layer, checkpoint names, convert). Names may hold
# "{i}" (the layer index); convert(*arrays) returns the array in our layout for one layer.
Plan = dict[tuple[str, ...], tuple[bool, tuple[str, ...], Callable[..., np.ndarray]]]


def _t(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def _llama_plan(cfg: ModelConfig, p: str) -> Plan:
    D, H, K, hd = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size
    a, m = p + "layers.{i}.self_attn.", p + "layers.{i}.mlp."
    plan: Plan = {
        ("embedding",): (False, (p + "embed_tokens.weight",), np.asarray),
        ("final_norm", "scale"): (False, (p + "norm.weight",), np.asarray),
        ("layers", "attn_norm", "scale"): (
            True,
            (p + "layers.{i}.input_layernorm.weight",),
            np.asarray,
        ),
        ("layers", "mlp_norm", "scale"): (
            True,
            (p + "layers.{i}.post_attention_layernorm.weight",),
            np.asarray,
        ),
        ("layers", "wq"): (True, (a + "q_proj.weight",), lambda w: _t(w).reshape(D, H, hd)),
        ("layers", "wk"): (True, (a + "k_proj.weight",), lambda w: _t(w).reshape(D, K, hd)),
        ("layers", "wv"): (True, (a + "v_proj.weight",), lambda w: _t(w).reshape(D, K, hd)),
        ("layers", "wo"): (True, (a + "o_proj.weight",), lambda w: _t(w).reshape(H, hd, D)),
        ("layers", "w_gate"): (True, (m + "gate_proj.weight",), _t),
        ("layers", "w_up"): (True, (m + "up_proj.weight",), _t),
        ("layers", "w_down"): (True, (m + "down_proj.weight",), _t),
    }
    if cfg.qkv_bias:
        plan[("layers", "bq")] = (True, (a + "q_proj.bias",), lambda b: b.reshape(H, hd))
        plan[("layers", "bk")] = (True, (a + "k_proj.bias",), lambda b: b.reshape(K, hd))
        plan[("layers", "bv")] = (True, (a + "v_proj.bias",), lambda b: b.reshape(K, hd))
    if cfg.out_bias:
        plan[("layers", "bo")] = (True, (a + "o_proj.bias",), np.asarray)
    if cfg.post_norms:  # Gemma 2/3: post_attention_layernorm normalises the attention output.
        b = p + "layers.{i}."
        plan[("layers", "mlp_norm", "scale")] = (
            True,
            (b + "pre_feedforward_layernorm.weight",),
            np.asarray,
        )
        plan[("layers", "post_attn_norm", "scale")] = (
            True,
            (b + "post_attention_layernorm.weight",),
            np.asarray,
        )
        plan[("layers", "post_mlp_norm", "scale")] = (
            True,
            (b + "post_feedforward_layernorm.weight",),
            np.asarray,
        )
    if cfg.qk_norm:
        plan[("layers", "q_norm", "scale")] = (True, (a + "q_norm.weight",), np.asarray)
        plan[("layers", "k_norm", "scale")] = (True, (a + "k_norm.weight",), np.asarray)
    if not cfg.tie_embeddings:
        plan[("lm_head",)] = (False, ("lm_head.weight",), _t)
    return plan


def _gpt2_plan(cfg: ModelConfig, p: str) -> Plan:
    D, H, hd = cfg.d_model, cfg.num_heads, cfg.head_size
    h = p + "h.{i}."

    def qkv(j: int, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
        # c_attn is a Conv1D: weight [D, 3D] ([in, out]), bias [3D]; columns are q | k | v.
        return lambda w: np.ascontiguousarray(w[..., j * D : (j + 1) * D]).reshape(shape)

    plan: Plan = {
        ("embedding",): (False, (p + "wte.weight",), np.asarray),
        ("pos_embedding",): (False, (p + "wpe.weight",), np.asarray),
        ("final_norm", "scale"): (False, (p + "ln_f.weight",), np.asarray),
        ("final_norm", "bias"): (False, (p + "ln_f.bias",), np.asarray),
        ("layers", "attn_norm", "scale"): (True, (h + "ln_1.weight",), np.asarray),
        ("layers", "attn_norm", "bias"): (True, (h + "ln_1.bias",), np.asarray),
        ("layers", "mlp_norm", "scale"): (True, (h + "ln_2.weight",), np.asarray),
        ("layers", "mlp_norm", "bias"): (True, (h + "ln_2.bias",), np.asarray),
        ("layers", "wo"): (True, (h + "attn.c_proj.weight",), lambda w: w.reshape(H, hd, D)),
        ("layers", "bo"): (True, (h + "attn.c_proj.bias",), np.asarray),
        ("layers", "w_up"): (True, (h + "mlp.c_fc.weight",), np.asarray),
        ("layers", "b_up"): (True, (h + "mlp.c_fc.bias",), np.asarray),
        ("layers", "w_down"): (True, (h + "mlp.c_proj.weight",), np.asarray),
        ("layers", "b_down"): (True, (h + "mlp.c_proj.bias",), np.asarray),
    }
    for j, name in enumerate("qkv"):
        plan[("layers", "w" + name)] = (True, (h + "attn.c_attn.weight",), qkv(j, (D, H, hd)))
        plan[("layers", "b" + name)] = (True, (h + "attn.c_attn.bias",), qkv(j, (H, hd)))
    if not cfg.tie_embeddings:
        plan[("lm_head",)] = (False, ("lm_head.weight",), _t)
    return plan


def _ignorable(name: str) -> bool:
    """Buffers that some checkpoints store and that carry no parameters."""
    return name.endswith(("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias"))


# Where a checkpoint keeps its decoder: multimodal Gemma 3 under model.language_model.
# (transformers 5) or language_model.model. (4.x), text-only models under model. or nothing.
_LM_PREFIXES = ("model.language_model.", "language_model.model.", "model.")


def weight_plan(cfg: ModelConfig, model_type: str, names: list[str]) -> Plan:
    """The conversion plan for a checkpoint; raises ValueError naming missing/unexpected weights."""
    if model_type == "gpt2":
        prefix = "transformer." if "transformer.wte.weight" in names else ""
        plan = _gpt2_plan(cfg, prefix)
    else:
        prefix = next((p for p in _LM_PREFIXES if p + "embed_tokens.weight" in names), "")
        plan = _llama_plan(cfg, prefix)
    wanted = {
        n.format(i=i)
        for per_layer, templates, _ in plan.values()
        for n in templates
        for i in (range(cfg.num_layers) if per_layer else [0])
    }
    have = set(names)
    missing = sorted(wanted - have)
    unexpected = sorted(n for n in have - wanted if not _ignorable(n))
    if model_type == "gemma3":  # the vision tower, its projector and a copy of the tied head.
        unexpected = [n for n in unexpected if n.startswith(prefix)]
    if cfg.tie_embeddings and "lm_head.weight" in unexpected:
        unexpected.remove("lm_head.weight")  # some tied checkpoints store the copy too.
    if missing or unexpected:
        raise ValueError(
            f"{model_type} checkpoint does not match its config: missing weights "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)} in all); "
            f"unexpected weights {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} "
            f"({len(unexpected)} in all). Check that config.json belongs to these safetensors "
            f"(num_hidden_layers, tie_word_embeddings, attention_bias)."
        )
    return plan


# --------------------------------------------------------------------------- placement


def _fsdp_spec(shape: tuple[int, ...], n: int, per_layer: bool) -> PartitionSpec:
    """Largest axis that n divides, never the stacked layer axis; else replicate."""
    skip = 1 if per_layer else 0
    axes = [a for a in range(skip, len(shape)) if n > 1 and shape[a] % n == 0]
    if not axes:
        return PartitionSpec()
    axis = max(axes, key=lambda a: (shape[a], -a))
    return PartitionSpec(*[("fsdp" if a == axis else None) for a in range(len(shape))])


def _build(plan_entry, tensors: SafetensorsFolder, num_layers: int, dtype: np.dtype) -> np.ndarray:
    per_layer, templates, convert = plan_entry
    layers = range(num_layers) if per_layer else [0]
    out = [
        np.asarray(convert(*[tensors.get(t.format(i=i)) for t in templates]), dtype=dtype)
        for i in layers
    ]
    return np.stack(out) if per_layer else out[0]


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def load_params(
    model_type: str,
    cfg: ModelConfig,
    tensors: SafetensorsFolder,
    mesh: Mesh | None = None,
    progress: bool = True,
) -> Transformer:
    """A `Transformer` of `cfg` holding the checkpoint's weights, sharded over `mesh`.

    `mesh` needs an axis named "fsdp" (None: a 1-D "fsdp" mesh over all devices when there
    are several, else the default device). Parameters are built one at a time on the host.
    """
    plan = weight_plan(cfg, model_type, tensors.names)
    if mesh is None and jax.device_count() > 1:
        auto = (jax.sharding.AxisType.Auto,)  # sharding propagated by XLA, as in training.
        mesh = jax.make_mesh((jax.device_count(),), ("fsdp",), axis_types=auto)
    n = 1 if mesh is None else mesh.shape["fsdp"]
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(state)
    leaves = jax.tree_util.tree_flatten_with_path(pure)[0]
    unplanned = sorted("/".join(_path_names(p)) for p, _ in leaves if _path_names(p) not in plan)
    if unplanned:
        raise ValueError(f"{model_type}: no checkpoint weights for parameters {unplanned}.")

    it = progress_lib.progress(leaves, desc="loading weights", disable=not progress)
    new_leaves = []
    for path, leaf in it:
        key = _path_names(path)
        host = _build(plan[key], tensors, cfg.num_layers, np.dtype(leaf.dtype))
        if host.shape != tuple(leaf.shape):
            raise ValueError(
                f"{'/'.join(key)}: checkpoint gives shape {host.shape}, the config "
                f"expects {tuple(leaf.shape)}; config.json does not match the weights."
            )
        if mesh is None:
            new_leaves.append(jax.device_put(host))
        else:
            sharding = NamedSharding(mesh, _fsdp_spec(host.shape, n, plan[key][0]))
            new_leaves.append(
                jax.make_array_from_callback(host.shape, sharding, lambda idx, h=host: h[idx])
            )
        del host
    treedef = jax.tree_util.tree_structure(pure)
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, new_leaves))
    return nnx.merge(graphdef, state)


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(path: str, hf_config: dict[str, Any] | None = None) -> HFTokenizer:
    """The folder's `tokenizer.json` with the checkpoint's own special tokens.

    Specials come from `tokenizer_config.json` (bos_token, eos_token, pad_token), else from
    config.json's `*_token_id`; a checkpoint without a pad token pads with its eos (padding is
    never attended to). `encode` adds no special tokens: prepend `bos_id` where wanted.
    """
    extra: dict[str, Any] = {}
    tc_path = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(tc_path):
        with open(tc_path) as f:
            extra = json.load(f)
    hf_config = hf_config or {}
    specials: dict[str, str] = {}
    for kind in ("bos", "eos", "pad"):
        token = extra.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        value = hf_config.get(f"{kind}_token_id")
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(token, str):
            specials[kind] = token
        elif isinstance(value, int):
            specials[kind] = str(value)
    if "pad" not in specials and "eos" in specials:
        specials["pad"] = specials["eos"]
    return HFTokenizer(os.path.join(path, "tokenizer.json"), **specials)


# --------------------------------------------------------------------------- entry points


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
