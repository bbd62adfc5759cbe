"""Hugging Face `config.json` -> `ModelConfig`, for every supported `model_type`, and the
published shapes used for random-weight runs (`LLAMA_3_1_8B`)."""

from __future__ import annotations

import math
import warnings
from typing import Any

from sinks_jax.model import ModelConfig

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
