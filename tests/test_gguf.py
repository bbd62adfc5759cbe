"""GGUF import (`sinks_jax.pretrained`): small GGUF files written here with `gguf.GGUFWriter`.

References: the random `transformers` model the file was made from (fp32, CPU), `transformers`
loading the same GGUF file, `transformers`' own (torch) dequantisers, numpy casts, a
SentencePiece model trained here, and hand-written token sequences. No downloads.
"""

import os

import ml_dtypes
import numpy as np
import pytest

pytestmark = pytest.mark.torch  # references: transformers' own GGUF loading and dequantisers
gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf import GGMLQuantizationType as Q  # noqa: E402

from sinks_jax import hf  # noqa: E402
from sinks_jax.pretrained import gguf as gg  # noqa: E402
from sinks_jax.pretrained import gguf_tokenizer as gt  # noqa: E402

# ----------------------------------------------------------------------------- writing files


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (written out from its definition)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_level_vocab(merges: list[str]) -> tuple[list[str], list[str], list[int]]:
    """<|endoftext|> (control), the 256 byte characters, then one token per merge."""
    tokens = ["<|endoftext|>", *_bytes_to_unicode().values()]
    tokens += [m.replace(" ", "") for m in merges]
    return tokens, merges, [gt.CONTROL] + [gt.NORMAL] * (len(tokens) - 1)


def _write(path, arch: str, kv: dict, tensors: dict[str, tuple[np.ndarray, Q | None]]) -> str:
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in kv.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif key.endswith("token_type"):
            w.add_array(key, [int(v) for v in value])
        else:
            w.add_array(key, list(value))
    for name, (array, qtype) in tensors.items():
        if qtype is None:
            w.add_tensor(name, array)
        else:
            w.add_tensor(name, array, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def _llama_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter, written from its definition: HF row i -> row 2i, i + d/2 -> 2i+1."""
    d = w.shape[0] // heads
    out = np.empty_like(w)
    for h in range(heads):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + i + d // 2]
    return out


def _quantize(x: np.ndarray, qtype: Q | None, rng) -> tuple[np.ndarray, Q | None]:
    """(stored array, type): F32 as is, F16 cast, the rest through gguf.quants.quantize, and
    K-quants (which gguf cannot quantise) as random blocks with small, finite scales."""
    if qtype in (None, Q.F32):
        return x.astype(np.float32), None
    if qtype == Q.F16:
        return x.astype(np.float16), None
    if qtype not in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        return gguf.quants.quantize(x, qtype), qtype
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = x.shape
    blocks = rng.integers(0, 256, (rows, cols // block_values, block_bytes), dtype=np.uint8)
    scale = np.frombuffer(np.float16(2e-3).tobytes(), np.uint8)
    at = (block_bytes - 2,) if qtype == Q.Q6_K else (0, 2)  # d (and dmin) fields of a block
    for start in at:
        blocks[..., start : start + 2] = scale
    return blocks.reshape(rows, -1), qtype


LLAMA = dict(vocab=64, hidden=256, heads=4, kv_heads=2, ffn=256, layers=2)


def _hf_llama(tie: bool, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    c = LLAMA
    config = LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["ffn"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        num_key_value_heads=c["kv_heads"], rms_norm_eps=1e-5, rope_theta=10000.0,
        max_position_embeddings=128, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so that a misplaced norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    return model


_LLAMA_GGUF_NAMES = {v: k for k, v in gg._LLAMA_BLOCK_NAMES.items()}


def _write_llama(path, model, types: dict[str, Q | None] | None = None, permute: bool = True):
    """The GGUF llama.cpp's converter writes for `model` (q/k rows permuted, HF names renamed).

    `types` maps a GGUF tensor-name suffix (e.g. "attn_q") to its storage type (default F32).
    """
    cfg, rng, types = model.config, np.random.default_rng(1), types or {}
    tensors = {}
    for name, p in model.state_dict().items():
        w = p.detach().numpy().astype(np.float32)
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if name.startswith("model.layers."):
            i, rest = name.removeprefix("model.layers.").split(".", 1)
            part = _LLAMA_GGUF_NAMES[rest.removesuffix(".weight")]
            gname = f"blk.{i}.{part}.weight"
        else:
            part = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm",
                    "lm_head.weight": "output"}[name]
            gname = part + ".weight"
        if permute and part in ("attn_q", "attn_k"):
            heads = cfg.num_attention_heads if part == "attn_q" else cfg.num_key_value_heads
            w = _llama_permute(w, heads)
        tensors[gname] = _quantize(w, types.get(part), rng) if w.ndim == 2 else (w, None)
    tokens, merges, token_type = _byte_level_vocab(["Ġ t", "h e", "Ġt he"])
    tokens = (tokens + [f"<extra_{i}>" for i in range(cfg.vocab_size)])[: cfg.vocab_size]
    kv = {
        "general.name": "tiny llama",
        "llama.vocab_size": cfg.vocab_size,
        "llama.context_length": cfg.max_position_embeddings,
        "llama.embedding_length": cfg.hidden_size,
        "llama.block_count": cfg.num_hidden_layers,
        "llama.feed_forward_length": cfg.intermediate_size,
        "llama.attention.head_count": cfg.num_attention_heads,
        "llama.attention.head_count_kv": cfg.num_key_value_heads,
        "llama.rope.dimension_count": cfg.hidden_size // cfg.num_attention_heads,
        "llama.rope.freq_base": 10000.0,
        "llama.attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": (token_type + [gt.NORMAL] * len(tokens))[: len(tokens)],
        "tokenizer.ggml.merges": [m for m in merges if m.replace(" ", "") in tokens],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    return _write(path, "llama", kv, tensors)


def _ours(path, ids):
    model, tokenizer = hf.load(str(path), progress=False)
    logits, _ = model(np.asarray(ids, dtype=np.int32))
    return np.asarray(logits), model, tokenizer


def _torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


IDS = [[1, 5, 9, 33, 12, 60, 7, 2, 41, 17]]

# ----------------------------------------------------------------------------- llama family


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
    np.testing.assert_array_equal(gg.unpermute_rope_rows(_llama_permute(w, 4), 4), w)
    assert not np.array_equal(_llama_permute(w, 4), w)


@pytest.mark.parametrize("tie", [False, True])
def test_llama_gguf_logits_match_source_model(tmp_path, tie):
    """F32 GGUF with llama.cpp's q/k permutation: our logits equal those of the HF model the
    file was made from (fails without undoing the permutation: see the next test)."""
    src = _hf_llama(tie)
    path = _write_llama(tmp_path / "m.gguf", src)
    ours, model, _ = _ours(path, IDS)
    assert model.config.tie_embeddings == tie
    # fp32 on both sides; sums over 256 terms in different orders: ~1e-6 relative.
    np.testing.assert_allclose(ours, _torch_logits(src, IDS), atol=2e-4, rtol=1e-4)


def test_llama_gguf_without_unpermute_would_differ(tmp_path, monkeypatch):
    src = _hf_llama(tie=False)
    path = _write_llama(tmp_path / "m.gguf", src)
    monkeypatch.setattr(gg, "unpermute_rope_rows", lambda w, heads: w)
    ours, _, _ = _ours(path, IDS)
    assert np.abs(ours - _torch_logits(src, IDS)).max() > 1e-2


def test_llama_quantised_gguf_matches_transformers_gguf_loading(tmp_path):
    """Q8_0/Q4_0/Q4_1/K-quant weights: our logits equal transformers' fp32 load of the file."""
    src = _hf_llama(tie=False)
    types = {"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1, "attn_output": Q.Q4_K,
             "ffn_gate": Q.Q5_K, "ffn_up": Q.Q6_K, "ffn_down": Q.Q8_0, "token_embd": Q.Q8_0,
             "output": Q.Q4_K}
    path = _write_llama(tmp_path / "q.gguf", src, types)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="q.gguf", dtype=torch.float32
    ).eval()
    ours, _, _ = _ours(path, IDS)
    ref_logits = _torch_logits(ref, IDS)
    assert np.abs(ref_logits - _torch_logits(src, IDS)).max() > 1e-3  # quantisation did act
    np.testing.assert_allclose(ours, ref_logits, atol=5e-4, rtol=1e-4)


def _reference_dequant(stored: np.ndarray, qtype: Q, shape) -> np.ndarray:
    """transformers' torch dequantisers (an implementation independent of gguf-py's)."""
    from transformers.integrations.gguf.dequant import dequantize

    flat = torch.from_numpy(np.ascontiguousarray(stored).reshape(-1))
    return dequantize(flat, int(qtype)).numpy().reshape(shape)


@pytest.mark.parametrize("name", list(gg.SUPPORTED_TYPES))
def test_dequantised_tensors_match_independent_reference(tmp_path, name):
    qtype, rng = Q[name], np.random.default_rng(3)
    x = rng.standard_normal((8, 512)).astype(np.float32)
    if qtype == Q.BF16:
        stored = gguf.quants.quantize(x, qtype)
        reference = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    else:
        stored, _ = _quantize(x, qtype, rng)
    raw = qtype if stored.dtype == np.uint8 else None
    _write(tmp_path / "t.gguf", "llama", {}, {"token_embd.weight": (stored, raw)})
    reader = gguf.GGUFReader(str(tmp_path / "t.gguf"))
    got = gg.GGUFTensors(reader, "llama", {})["model.embed_tokens.weight"]
    assert got.shape == x.shape and got.dtype == np.float32
    if qtype in (Q.F32, Q.F16):
        reference = x.astype(stored.dtype).astype(np.float32)
    elif qtype == Q.Q5_0:  # no second implementation here: within one step (max|x|/16, the
        # step of a block's 5-bit grid; the far end is clipped by up to one step) of the input
        step_per_block = np.abs(x.reshape(8, -1, 32)).max(-1, keepdims=True) / 16
        err = np.abs(got - x).reshape(8, -1, 32)
        assert np.all(err <= step_per_block * 1.01)
        return
    elif qtype != Q.BF16:
        reference = _reference_dequant(stored, qtype, x.shape)
    np.testing.assert_array_equal(got, reference)


# ----------------------------------------------------------------------------- tokenizers


def test_smollm_pre_tokenizer_isolates_digits(tmp_path):
    merges = ["Ġ 1", "1 2", "Ġ t", "h e", "Ġt he"]
    tokens, merges, types = _byte_level_vocab(merges)
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": merges, "tokenizer.ggml.token_type": types}
    spell = lambda tok, s: [tok.id_to_token(i) for i in tok.encode(s).ids]  # noqa: E731
    smollm = gt.build_tokenizer({**meta, "tokenizer.ggml.pre": "smollm"})
    gpt2 = gt.build_tokenizer({**meta, "tokenizer.ggml.pre": "gpt2"})
    assert spell(smollm, "the 12<|endoftext|>") == ["t", "he", "Ġ", "1", "2", "<|endoftext|>"]
    assert spell(gpt2, "the 12") == ["t", "he", "Ġ1", "2"]
    assert smollm.decode(smollm.encode("the 12 é").ids) == "the 12 é"


def test_byte_level_tokenizer_matches_transformers_gguf_tokenizer(tmp_path):
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġa n", "Ġan d", "e r"]
    tokens, merges, types = _byte_level_vocab(merges)
    kv = {"general.name": "t", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
          "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 0,
          "tokenizer.ggml.eos_token_id": 0}
    path = _write(tmp_path / "t.gguf", "llama", kv, {})
    ours = gg.load_gguf_tokenizer(path)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="t.gguf")
    for text in ["the cat and the other", "  in er\nthe\t<|endoftext|>x", "ünïcödé 'll don't"]:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False), text


SP_VOCAB = 320  # 256 byte pieces, 4 specials, the characters, and some merges


def _sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    words = ["the", "cat", "sat", "on", "mat", "attention", "sinks", "first", "token", "model"]
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(words, 12)) for _ in range(300))
    (tmp_path / "text.txt").write_text(text)
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "text.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=SP_VOCAB,
        model_type="bpe", byte_fallback=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        bos_id=2, eos_id=1, pad_id=0, unk_id=3, minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))


def _spm_metadata(sp) -> dict:
    """The tokenizer.ggml.* fields llama.cpp's converter writes for a SentencePiece model."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(gt.CONTROL if sp.is_control(i) else gt.UNKNOWN if sp.is_unknown(i)
                     else gt.BYTE if sp.is_byte(i) else gt.NORMAL)
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.unknown_token_id": 3,
            "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
            "tokenizer.ggml.padding_token_id": 0}


def test_sentencepiece_tokenizer_matches_sentencepiece(tmp_path):
    sp = _sentencepiece_model(tmp_path)
    ours = gt.build_tokenizer(_spm_metadata(sp))
    for text in ["the cat sat on the mat", "attention sinks  first\ntoken", "zebra ü 42 the"]:
        assert ours.encode(text).ids == sp.encode(text), text
        assert ours.decode(ours.encode(text).ids) == text


def test_gemma_user_defined_tokens_match_whole(tmp_path):
    """Runs of spaces and newlines stored as user-defined tokens win over merging."""
    meta = _spm_metadata(_sentencepiece_model(tmp_path))
    for extra in ["\n\n", "  ", "   "]:
        meta["tokenizer.ggml.tokens"].append(extra)
        meta["tokenizer.ggml.scores"].append(-1000.0)
        meta["tokenizer.ggml.token_type"].append(gt.USER_DEFINED)
    tok = gt.build_tokenizer(meta)
    spelled = [tok.id_to_token(i) for i in tok.encode("the\n\ncat     sat").ids]
    assert spelled[spelled.index("\n\n") - 1 : spelled.index("\n\n") + 1] == ["the", "\n\n"]
    assert "   " in spelled and "  " in spelled and "▁" not in spelled


# ----------------------------------------------------------------------------- gemma 3


def _hf_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=SP_VOCAB, hidden_size=640, intermediate_size=64, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=4, max_position_embeddings=128, rope_theta=1e6, rope_local_base_freq=1e4,
        rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.1 * torch.randn(p.shape))
    return model


_GEMMA3_GGUF_NAMES = {v: k for k, v in gg._GEMMA3_BLOCK_NAMES.items()}


def _write_gemma3(tmp_path, model):
    """The GGUF llama.cpp writes for Gemma 3: norms as 1 + w, q/k rows as they are, tied
    output, Q5_0 and Q8_0 projections."""
    cfg, tensors = model.config, {}
    types = {"attn_q": Q.Q5_0, "attn_k": Q.Q5_0, "attn_v": Q.Q8_0, "ffn_gate": Q.Q5_0}
    for name, p in model.state_dict().items():
        w = p.detach().numpy().astype(np.float32)
        if name == "lm_head.weight":
            continue
        if name.startswith("model.layers."):
            i, rest = name.removeprefix("model.layers.").split(".", 1)
            part = _GEMMA3_GGUF_NAMES[rest.removesuffix(".weight")]
            gname = f"blk.{i}.{part}.weight"
        else:
            part = {"model.embed_tokens.weight": "token_embd",
                    "model.norm.weight": "output_norm"}[name]
            gname = part + ".weight"
        if gname.endswith("norm.weight"):
            w = w + 1.0
        tensors[gname] = _quantize(w, types.get(part), None) if w.ndim == 2 else (w, None)
    meta = _spm_metadata(_sentencepiece_model(tmp_path))
    kv = {
        "general.name": "tiny gemma3",
        "gemma3.context_length": cfg.max_position_embeddings,
        "gemma3.embedding_length": cfg.hidden_size,
        "gemma3.block_count": cfg.num_hidden_layers,
        "gemma3.feed_forward_length": cfg.intermediate_size,
        "gemma3.attention.head_count": cfg.num_attention_heads,
        "gemma3.attention.head_count_kv": cfg.num_key_value_heads,
        "gemma3.attention.key_length": cfg.head_dim,
        "gemma3.attention.value_length": cfg.head_dim,
        "gemma3.rope.freq_base": 1e6,
        "gemma3.attention.sliding_window": cfg.sliding_window,
        "gemma3.attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
        **meta,
    }
    return _write(tmp_path / "g.gguf", "gemma3", kv, tensors)


def test_gemma3_gguf_gives_transformers_config_and_state_dict(tmp_path):
    src = _hf_gemma3()
    config, tensors, tokenizer = gg.read_gguf(_write_gemma3(tmp_path, src))
    rebuilt = transformers.Gemma3TextConfig(
        **{k: v for k, v in config.items() if k != "architectures"}
    )
    for key in ("layer_types", "sliding_window", "query_pre_attn_scalar", "head_dim",
                "num_key_value_heads", "rope_parameters", "hidden_activation",
                "tie_word_embeddings"):
        assert getattr(rebuilt, key) == getattr(src.config, key), key
    assert config["layer_types"][4:6] == ["sliding_attention", "full_attention"]
    state = {k: v.numpy() for k, v in src.state_dict().items() if k != "lm_head.weight"}
    assert sorted(tensors.names) == sorted(state)
    for name, w in state.items():
        tol = 0.2 * np.abs(w).max() if tensors.ggml_type(name).startswith("Q") else 1e-6
        np.testing.assert_allclose(tensors[name], w, atol=tol, err_msg=name)  # norms: w, not 1 + w
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (2, 1, 0)


def test_gemma3_gguf_logits_match_transformers(tmp_path):
    src = _hf_gemma3()
    path = _write_gemma3(tmp_path, src)
    config, _, _ = gg.read_gguf(path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="g.gguf", dtype=torch.float32
    ).eval()
    ours, _, _ = _ours(path, [[2, 5, 9, 33, 12, 60, 7, 1, 41, 17]])
    np.testing.assert_allclose(ours, _torch_logits(ref, [[2, 5, 9, 33, 12, 60, 7, 1, 41, 17]]),
                               atol=5e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- loading


def test_load_finds_gguf_in_folder_and_rejects_unknown_architecture(tmp_path):
    path = _write_llama(tmp_path / "m.gguf", _hf_llama(tie=True))
    assert gg.find_gguf(str(tmp_path)) == path and gg.find_gguf(path) == path
    _write(tmp_path / "other.gguf", "llama", {}, {})
    with pytest.raises(ValueError, match="several GGUF files"):
        gg.find_gguf(str(tmp_path))
    os.makedirs(tmp_path / "b")
    bad = _write(tmp_path / "b" / "x.gguf", "phi3", {}, {})
    with pytest.raises(ValueError, match="architecture 'phi3' is not supported"):
        hf.load(bad)


def test_gguf_tokenizer_spec(tmp_path):
    from sinks_jax.data.tokenizers import get_tokenizer

    path = _write_llama(tmp_path / "m.gguf", _hf_llama(tie=True))
    tok = get_tokenizer(f"gguf:{path}")
    assert tok.spec == f"gguf:{path}" and (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
