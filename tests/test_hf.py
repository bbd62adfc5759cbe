"""Parity of `sinks_jax.hf.load` with Hugging Face `transformers` (torch, CPU, float32).

Each test builds a tiny random model with `transformers` from a config (no download), saves
it with `save_pretrained`, loads it with sinks_jax and compares logits, the residual stream
after every layer and the eager attention probabilities. The weights are re-drawn at a large
scale (peaked attention, non-trivial norms and biases) so that layout bugs cannot hide.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sinks_jax import hf
from sinks_jax.model import sink_query_mask

T = 64  # long enough, with a small rope_theta, for every RoPE frequency to turn.
LOGITS_TOL, HIDDEN_TOL, PROBS_TOL = 1e-4, 1e-4, 1e-5
WEIGHT_GAIN = 1.0  # matrices ~ N(0, (gain / sqrt(d_model))^2): peaked attention, fp32-exact.


def _randomize(model, seed: int, d_model: int, norm_base: float = 1.0) -> None:
    """Large random weights: peaked attention, norms away from 1, non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and any(s in name for s in ("norm", "ln_")) and name.endswith("weight"):
                p.copy_(norm_base + 0.3 * noise)
            elif p.ndim == 1:
                p.copy_(0.3 * noise)
            elif any(s in name for s in ("embed", "wte", "wpe")):
                p.copy_(noise)
            else:
                p.copy_(noise * WEIGHT_GAIN / math.sqrt(d_model))


def _hf_reference(model, layers, ids: np.ndarray):
    """(logits, residual stream [L+1, B, T, D] with every layer's output before the final
    norm, attention probabilities [L, B, H, T, T]) from the torch model."""
    outs = []

    def hook(_module, _inputs, output):
        outs.append((output[0] if isinstance(output, tuple) else output).detach().numpy())

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with torch.no_grad():
            res = model(torch.tensor(ids), output_hidden_states=True, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    hidden = np.stack([res.hidden_states[0].numpy()] + outs)
    probs = np.stack([a.numpy() for a in res.attentions])
    return res.logits.numpy(), hidden, probs


def _compare(tmp_path, hf_model, layers, vocab: int, seed: int = 0, shard: str | None = None):
    hf_model.eval()
    hf_model.set_attn_implementation("eager")  # explicit softmax: returns the probabilities.
    hf_model.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    ids = np.random.RandomState(seed).randint(0, vocab, (2, T))
    ref_logits, ref_hidden, ref_probs = _hf_reference(hf_model, layers, ids)
    model, tokenizer = hf.load(str(tmp_path), progress=False)
    assert tokenizer is None  # no tokenizer.json was written.
    logits, aux = model(jnp.asarray(ids), collect=("attn_probs", "hidden"))
    assert ref_probs.max() > 0.9, "weights too small: attention is not peaked."
    diffs = {
        "logits": float(np.abs(np.asarray(logits) - ref_logits).max()),
        "hidden": float(np.abs(np.asarray(aux["hidden"]) - ref_hidden).max()),
        "probs": float(np.abs(np.asarray(aux["attn_probs"]) - ref_probs).max()),
    }
    print(type(hf_model).__name__, diffs)
    hidden_scale = max(1.0, float(np.abs(ref_hidden).max()))
    assert diffs["logits"] < LOGITS_TOL, diffs
    assert diffs["hidden"] < HIDDEN_TOL * hidden_scale, (diffs, hidden_scale)
    assert diffs["probs"] < PROBS_TOL, diffs
    return {"model": model, "ids": ids, "ref_logits": ref_logits, "ref_probs": ref_probs}


def _llama(tie: bool, kv_heads: int, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        rope_theta=100.0,
        tie_word_embeddings=tie,
        **kw,
    )
    model = LlamaForCausalLM(cfg)
    _randomize(model, 0, 32)
    return model


def test_llama_gqa_untied_llama3_rope(tmp_path, recwarn):
    rope = {
        "rope_type": "llama3",
        "rope_theta": 100.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,  # head_dim 8, theta 100: all three bands.
    }
    m = _llama(tie=False, kv_heads=2, rope_scaling=rope)
    out = _compare(tmp_path, m, m.model.layers, 97)
    cfg = out["model"].config
    assert cfg.rope_scaling_dict["rope_type"] == "llama3" and not cfg.tie_embeddings
    assert cfg.kv_heads == 2


def test_llama_tied_mha_attention_bias(tmp_path):
    m = _llama(tie=True, kv_heads=4, attention_bias=True)
    out = _compare(tmp_path, m, m.model.layers, 97)
    cfg = out["model"].config
    assert cfg.tie_embeddings and cfg.qkv_bias and cfg.out_bias


def test_interleaved_rope_would_fail(tmp_path):
    """Negative control: the same weights under interleaved RoPE pairs miss the tolerance."""
    m = _llama(tie=False, kv_heads=2)
    out = _compare(tmp_path, m, m.model.layers, 97)
    model = out["model"]
    hd = model.config.head_size
    # perm[i]: half-split position holding interleaved element i; applying it to q and k
    # makes our half-split rotation act on interleaved pairs (2j, 2j + 1).
    perm = np.concatenate([np.arange(0, hd, 2), np.arange(1, hd, 2)])
    for name in ("wq", "wk"):
        w = getattr(model.layers, name)
        w[...] = w[...][..., perm]
    logits, _ = model(jnp.asarray(out["ids"]))
    assert np.abs(np.asarray(logits) - out["ref_logits"]).max() > 100 * LOGITS_TOL


def test_mistral_mqa(tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=101,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=12,
        rope_theta=50.0,
        sliding_window=None,
    )
    m = MistralForCausalLM(cfg)
    _randomize(m, 1, 48)
    _compare(tmp_path, m, m.model.layers, 101)


def test_qwen2_biases_tied_sharded_checkpoint(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=89,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=100.0,
        tie_word_embeddings=True,
    )
    m = Qwen2ForCausalLM(cfg)
    _randomize(m, 2, 32)
    out = _compare(tmp_path, m, m.model.layers, 89, shard="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    assert out["model"].config.qkv_bias and not out["model"].config.out_bias


def test_gemma(tmp_path):
    from transformers import GemmaConfig, GemmaForCausalLM

    cfg = GemmaConfig(
        vocab_size=83,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,  # H * head_dim = 64 != d_model.
        rope_theta=100.0,
    )
    m = GemmaForCausalLM(cfg)
    _randomize(m, 3, 32, norm_base=0.0)  # Gemma scales by (1 + w).
    out = _compare(tmp_path, m, m.model.layers, 83)
    c = out["model"].config
    assert c.tie_embeddings and c.activation == "gelu_tanh" and c.norm_scale_offset == 1.0


GEMMA3_LAYERS = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=79,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=24,  # != head_dim: the query scale is 24 ** -0.5.
        sliding_window=8,  # < T = 64: local layers see 8 keys.
        layer_types=GEMMA3_LAYERS,
        rope_parameters={  # small bases so that every frequency turns within T.
            "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0},
        },
    )
    m = Gemma3ForCausalLM(cfg)
    _randomize(m, 5, 32, norm_base=0.0)  # (1 + w) norms, q/k norms included.
    return m


def test_gemma3_local_and_global_layers(tmp_path):
    m = _gemma3()
    out = _compare(tmp_path, m, m.model.layers, 79)
    model, ids, ref_probs = out["model"], out["ids"], out["ref_probs"]
    c = model.config
    assert c.local_layers == (True, True, False, True) and c.sliding_window == 8
    assert c.qk_norm and c.post_norms and c.rope_local_theta == 10.0
    assert c.rope_theta == 100.0 and c.rope_scaling_dict == {"rope_type": "linear", "factor": 2.0}
    # Sink statistics under the window, against transformers' own maps: the first-token column,
    # and which queries can see key 0 at all (in local layers, the first 8).
    _, aux = model(jnp.asarray(ids), collect=("sink_attn",))
    np.testing.assert_allclose(aux["sink_attn"], ref_probs[..., 0], atol=PROBS_TOL)
    seen_LxBxT = np.asarray(sink_query_mask(c, T))
    seen_LxBxHxT = np.broadcast_to(seen_LxBxT[:, :, None], ref_probs.shape[:-1])
    np.testing.assert_array_equal(seen_LxBxHxT, ref_probs[..., 0] > 0)
    assert seen_LxBxT[0, 0].sum() == 8 and seen_LxBxT[2, 0].all()
    # The blockwise backend (key blocks outside the window skipped) on the same checkpoint.
    bw, _ = hf.load(str(tmp_path), attention="blockwise", block_size=16, progress=False)
    logits_bw, _ = bw(jnp.asarray(ids))
    assert np.abs(np.asarray(logits_bw) - out["ref_logits"]).max() < LOGITS_TOL


def test_gemma2_soft_capping(tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        vocab_size=73,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=20,
        sliding_window=6,
        rope_theta=100.0,
        attn_logit_softcapping=3.0,  # small caps: both change the results.
        final_logit_softcapping=2.0,
    )
    m = Gemma2ForCausalLM(cfg)
    _randomize(m, 6, 32, norm_base=0.0)
    out = _compare(tmp_path, m, m.model.layers, 73)
    c = out["model"].config
    assert c.local_layers == (True, False, True) and not c.qk_norm and c.rope_local_theta is None
    assert (c.attn_logit_softcap, c.final_logit_softcap) == (3.0, 2.0)
    with pytest.raises(ValueError, match="soft-cap"):
        hf.load(str(tmp_path), attention="cudnn", dtype="bfloat16", progress=False)


def test_gemma3_config_layouts_match_transformers():
    """Legacy keys (sliding_window_pattern, rope_local_base_freq, rope_scaling) and the sparse
    text_config of multimodal checkpoints give the network transformers builds."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    legacy = dict(
        vocab_size=79,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
        sliding_window_pattern=3,
        rope_theta=100.0,
        rope_local_base_freq=10.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    )
    ref = Gemma3TextConfig(**legacy)
    c = hf.config_from_hf_dict({"model_type": "gemma3_text", **legacy})
    want = tuple({"sliding_attention": True, "full_attention": False}[t] for t in ref.layer_types)
    assert c.local_layers == want and want.count(False) == 2
    assert c.rope_local_theta == ref.rope_parameters["sliding_attention"]["rope_theta"]
    assert c.rope_theta == ref.rope_parameters["full_attention"]["rope_theta"]
    assert c.rope_scaling_dict["factor"] == ref.rope_parameters["full_attention"]["factor"]
    assert math.isclose(c.query_scale, ref.query_pre_attn_scalar**-0.5)
    # Gemma 3 4B's text_config lists only what differs from Gemma3TextConfig's defaults.
    text = dict(
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=34,
        sliding_window=1024,
        rope_scaling={"factor": 8.0, "rope_type": "linear"},
    )
    mm = {"model_type": "gemma3", "text_config": text, "vision_config": {"hidden_size": 1152}}
    c = hf.config_from_hf_dict(mm)
    with torch.device("meta"):
        ref_model = Gemma3ForCausalLM(Gemma3TextConfig(**text))
    n_ref = sum(p.numel() for n, p in ref_model.named_parameters() if n != "lm_head.weight")
    assert c.param_count() == n_ref  # tied head: counted once.
    assert c.local_layers == tuple(t == "sliding_attention" for t in ref_model.config.layer_types)
    assert (c.num_heads, c.kv_heads, c.head_size, c.vocab_size) == (8, 4, 256, 262208)


def test_gemma3_multimodal_checkpoint_loads_its_language_model(tmp_path):
    """Gemma3ForConditionalGeneration files: decoder under model.language_model., plus a vision
    tower and projector that are skipped."""
    from safetensors.numpy import load_file

    m = _gemma3()
    m.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        text_config = json.load(f)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors = {"model.language_model." + k.removeprefix("model."): v for k, v in tensors.items()}
    tensors["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = np.ones(3)
    tensors["model.multi_modal_projector.mm_input_projection_weight"] = np.ones((2, 2))
    _write_safetensors(tmp_path, tensors)
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "gemma3", "text_config": text_config, "vision_config": {}}, f)
    model, _ = hf.load(str(tmp_path), progress=False)
    ids = np.random.RandomState(0).randint(0, 79, (1, 16))
    with torch.no_grad():
        ref = m(torch.tensor(ids)).logits.numpy()
    logits, _ = model(jnp.asarray(ids))
    assert np.abs(np.asarray(logits) - ref).max() < LOGITS_TOL


def test_gpt2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=91, n_positions=80, n_embd=32, n_layer=3, n_head=4)
    m = GPT2LMHeadModel(cfg)
    _randomize(m, 4, 32)
    out = _compare(tmp_path, m, m.transformer.h, 91)
    assert out["model"].config.position_type == "learned"


def test_params_are_sharded_over_devices(tmp_path):
    m = _llama(tie=False, kv_heads=2)
    m.save_pretrained(tmp_path)
    model, _ = hf.load(str(tmp_path), progress=False)
    n = jax.device_count()
    wq = model.layers.wq[...]  # [L, D, H, hd] = [3, 32, 4, 8]
    if n > 1:
        spec = wq.sharding.spec
        assert spec[0] is None and "fsdp" in tuple(spec), spec
        assert len(wq.sharding.device_set) == n


def test_bfloat16_checkpoint(tmp_path):
    m = _llama(tie=False, kv_heads=2).to(torch.bfloat16)
    m.save_pretrained(tmp_path)
    model, _ = hf.load(str(tmp_path), dtype="bfloat16", progress=False)
    assert model.config.dtype == "bfloat16" and model.layers.wq[...].dtype == jnp.bfloat16
    ref = m.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()  # [H * hd, D]
    ours = np.asarray(model.layers.wq[...][1].astype(jnp.float32))  # [D, H, hd]
    np.testing.assert_array_equal(ours.reshape(32, -1).T, ref)
    emb = np.asarray(model.embedding[...].astype(jnp.float32))
    np.testing.assert_array_equal(emb, m.model.embed_tokens.weight.detach().float().numpy())


def _write_safetensors(folder, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    for f in os.listdir(folder):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(folder, f))
    save_file(tensors, os.path.join(folder, "model.safetensors"))


def test_missing_and_unexpected_weights_are_named(tmp_path):
    m = _llama(tie=False, kv_heads=2)
    m.save_pretrained(tmp_path)
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.mlp.extra.weight"] = np.zeros(3, np.float32)
    _write_safetensors(tmp_path, tensors)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight") as err:
        hf.load(str(tmp_path), progress=False)
    assert "model.layers.0.mlp.extra.weight" in str(err.value)


def test_unsupported_architectures_are_named(tmp_path):
    with pytest.raises(ValueError, match="'bert'.*supported model types"):
        hf.config_from_hf_dict({"model_type": "bert", "architectures": ["BertModel"]})
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        hf.config_from_hf_dict({"model_type": "gemma3_text", "use_bidirectional_attention": True})
    with pytest.raises(ValueError, match="text_config"):
        hf.config_from_hf_dict({"model_type": "gemma3"})
    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        hf.config_from_hf_dict(
            {**hf.LLAMA_3_1_8B, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
        )
    os.makedirs(tmp_path / "ckpt")
    with open(tmp_path / "ckpt" / "config.json", "w") as f:
        json.dump({"model_type": "t5"}, f)
    with pytest.raises(ValueError, match="'t5'"):
        hf.load(str(tmp_path / "ckpt"))


def test_llama_3_1_8b_config():
    cfg = hf.config_from_hf_dict(hf.LLAMA_3_1_8B, dtype="bfloat16", attention="blockwise")
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.kv_heads) == (32, 4096, 32, 8)
    assert (cfg.d_ff, cfg.vocab_size, cfg.head_size, cfg.rope_theta) == (14336, 128256, 128, 5e5)
    assert cfg.rope_scaling_dict["rope_type"] == "llama3"
    # Llama-3.1-8B has 8.03e9 parameters.
    assert abs(cfg.param_count() - 8.03e9) < 0.01e9


def test_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4, "[UNK]": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    m = _llama(tie=False, kv_heads=2)
    m.save_pretrained(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}, f)
    _, tokenizer = hf.load(str(tmp_path), progress=False)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 2)  # pad = eos.
    assert tokenizer.encode("hello world") == [3, 4]  # specials are added by the caller.
    assert tokenizer.decode([3, 4]) == "hello world"


def test_gpt2_hub_layout_without_prefix_and_with_buffers(tmp_path):
    """The hub's gpt2 files name weights without `transformer.` and store mask buffers."""
    from safetensors.numpy import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    m.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
    _write_safetensors(tmp_path, tensors)
    model, _ = hf.load(str(tmp_path), progress=False)
    np.testing.assert_array_equal(np.asarray(model.pos_embedding[...]), tensors["wpe.weight"])
    # c_attn is [in, out] with q | k | v columns: k of head 1 is columns D + hd .. D + 2 hd.
    np.testing.assert_array_equal(
        np.asarray(model.layers.wk[...][0, :, 1]), tensors["h.0.attn.c_attn.weight"][:, 24:32]
    )
