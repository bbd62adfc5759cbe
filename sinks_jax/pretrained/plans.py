"""Weight plans: which checkpoint tensors (Hugging Face names) make each of our parameters, and
how they are converted to our layout, per family (the Llama family and GPT-2)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sinks_jax.model import ModelConfig

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
