"""GGUF files (llama.cpp's format) as a Hugging Face config, HF-named tensors and a tokenizer.

`hf_config, tensors, tokenizer = read_gguf("model.gguf")` gives what `sinks_jax.hf.build`
turns into a `Transformer`: the `config.json` dict that `transformers` would write for the
model, a mapping from HF parameter names (`model.layers.0.self_attn.q_proj.weight`, ...) to
float32 numpy arrays in HF's layout, and an `HFTokenizer` rebuilt from the file's metadata.
Users call `sinks_jax.hf.load("model.gguf")`.

Reading is llama.cpp's own `gguf` package (`GGUFReader`, memory-mapped) and dequantisation its
`gguf.quants.dequantize`, one tensor at a time when the builder asks for it. Every type that
function knows works; SUPPORTED_TYPES are the ones tested (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
Q5_0, Q4_K, Q5_K, Q6_K). GGUFReader lists shapes in ggml order `[in, out]`; the dequantised
arrays are `[out, in]`, as HF's `nn.Linear` weights.

What llama.cpp's converter changed, undone here:
- `llama`: rows of attn_q/attn_k are permuted per head for llama.cpp's interleaved RoPE
  (GGUF row 2i is HF row i, row 2i+1 is HF row i + head_dim/2); `unpermute_rope_rows`.
- `gemma3`: every `*norm.weight` is stored as 1 + w (llama.cpp adds the 1 that HF's
  Gemma RMSNorm adds at run time); we subtract it, as `transformers`' GGUF loader does.
  The embedding is stored unscaled (the model multiplies by sqrt(hidden_size)); q/k rows are not
  permuted (Gemma 3 uses the half-split RoPE in llama.cpp too).
Files without `output.weight` tie the output projection to `token_embd` (both real models).

Gemma 3 settings a GGUF file does not hold (the file holds the global RoPE base and the
sliding window) come from GEMMA3_DEFAULTS and GEMMA3_QUERY_PRE_ATTN_SCALAR, below.

Importing this module registers the `gguf:PATH.gguf` tokenizer spec with the data room
(`data.tokenizers.register_tokenizer_kind`): `load_gguf_tokenizer` reads only the metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from sinks_jax.data.tokenizers import HFTokenizer, register_tokenizer_kind
from sinks_jax.pretrained.gguf_tokenizer import tokenizer_from_metadata

SUPPORTED_ARCHITECTURES = ("llama", "gemma3")
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q5_K", "Q6_K")

# Gemma 3 hyper-parameters that llama.cpp hard-codes instead of storing (its gemma3 graph and
# `transformers`' Gemma3TextConfig agree on them): the local (sliding-window) RoPE base, and
# every sixth layer global (layers 5, 11, 17, ... of `layer_types`); no logit soft-capping.
GEMMA3_DEFAULTS: dict[str, Any] = {
    "rope_local_base_freq": 10000.0,
    "sliding_window_pattern": 6,
    "hidden_activation": "gelu_pytorch_tanh",
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
}

# query_pre_attn_scalar (queries are scaled by its -1/2) by hidden size, from the published
# Gemma 3 configs: 256 (= head_dim, also Gemma3TextConfig's default) for 270m, 1b, 4b and 12b;
# 168 (= hidden_size / num_attention_heads) for 27b.
GEMMA3_QUERY_PRE_ATTN_SCALAR = {640: 256, 1152: 256, 2560: 256, 3840: 256, 5376: 168}

# GGUF tensor name -> HF name ("blk.{i}.X.weight" -> "model.layers.{i}.Y.weight" per block).
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
}
_LLAMA_BLOCK_NAMES = {**_BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"}
_GEMMA3_BLOCK_NAMES = {
    **_BLOCK_NAMES,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def unpermute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """HF's q/k projection rows from llama.cpp's: in each head, row 2i -> i, 2i+1 -> i + d/2.

    `w` is `[num_heads * head_dim, ...]` (a weight `[out, in]` or a bias `[out]`).
    """
    rows = w.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"{rows} rows do not split into {num_heads} heads of even size.")
    half = rows // num_heads // 2
    w_HxIx2 = w.reshape(num_heads, half, 2, *w.shape[1:])
    return np.ascontiguousarray(np.swapaxes(w_HxIx2, 1, 2)).reshape(w.shape)


def metadata(reader) -> dict[str, Any]:
    """Every key-value field of a `gguf.GGUFReader` as plain Python values."""
    return {name: field.contents() for name, field in reader.fields.items()}


def _hf_name(gguf_name: str, block_names: dict[str, str]) -> str | None:
    m = _BLOCK.fullmatch(gguf_name)
    if m:
        i, part, kind = m.groups()
        return f"model.layers.{i}.{block_names[part]}.{kind}" if part in block_names else None
    stem, _, kind = gguf_name.rpartition(".")
    return f"{_GLOBAL_NAMES[stem]}.{kind}" if stem in _GLOBAL_NAMES else None


class GGUFTensors(Mapping):
    """A GGUF file's tensors under HF names, dequantised to float32 when read.

    `names` lists them; `tensors[name]` / `get(name)` returns a numpy array in HF's layout.
    """

    def __init__(self, reader, architecture: str, hf_config: dict[str, Any]):
        import gguf

        self._gguf = gguf
        self._arch = architecture
        self._config = hf_config
        block_names = _LLAMA_BLOCK_NAMES if architecture == "llama" else _GEMMA3_BLOCK_NAMES
        self._where: dict[str, Any] = {}
        unknown = []
        for t in reader.tensors:
            hf = _hf_name(t.name, block_names)
            if hf is None:
                unknown.append(t.name)
            else:
                self._where[hf] = t
        if unknown:
            raise ValueError(
                f"{architecture} GGUF has tensors this importer does not know: {unknown[:8]}"
                f"{' ...' if len(unknown) > 8 else ''}; known per-block parts: "
                f"{sorted(block_names)} (a Llama 3.1 'rope_freqs' tensor is not supported)."
            )

    @property
    def names(self) -> list[str]:
        return sorted(self._where)

    def ggml_type(self, name: str) -> str:
        """The stored quantisation type of an HF-named tensor (e.g. "Q4_K")."""
        return self._where[name].tensor_type.name

    def __getitem__(self, name: str) -> np.ndarray:
        t = self._where[name]
        try:
            w = self._gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise ValueError(
                f"{t.name}: the installed gguf package cannot dequantise {t.tensor_type.name}; "
                f"tested types: {SUPPORTED_TYPES}."
            ) from e
        w = np.asarray(w, dtype=np.float32).reshape([int(n) for n in reversed(t.shape)])
        if self._arch == "llama" and ".self_attn.q_proj." in name:
            w = unpermute_rope_rows(w, self._config["num_attention_heads"])
        elif self._arch == "llama" and ".self_attn.k_proj." in name:
            w = unpermute_rope_rows(w, self._config["num_key_value_heads"])
        elif self._arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        return w

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self._where)


def _need(meta: dict[str, Any], key: str) -> Any:
    if key not in meta:
        raise ValueError(f"GGUF metadata lacks {key!r}; the file is incomplete or not a model.")
    return meta[key]


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    raise ValueError(f"{arch}.rope.scaling.type={kind!r} is not supported; supported: linear.")


def hf_config_from_metadata(meta: dict[str, Any], tensor_names: list[str]) -> dict[str, Any]:
    """The `config.json` dict `transformers` uses for this model (Llama or Gemma3ForCausalLM)."""
    arch = _need(meta, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported; supported: {SUPPORTED_ARCHITECTURES}."
        )
    hidden = int(_need(meta, f"{arch}.embedding_length"))
    heads = int(_need(meta, f"{arch}.attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ValueError(
            f"{arch}.rope.dimension_count={rope_dims} != head_dim={head_dim}: partial RoPE is "
            "not supported."
        )
    layers = int(_need(meta, f"{arch}.block_count"))
    vocab = int(meta.get(f"{arch}.vocab_size", len(_need(meta, "tokenizer.ggml.tokens"))))
    config: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(_need(meta, f"{arch}.feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(_need(meta, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(meta, arch),
        "max_position_embeddings": int(_need(meta, f"{arch}.context_length")),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
    }
    for kind, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[f"{kind}_token_id"] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    if arch == "llama":
        config.update(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu",
                      mlp_bias=False)
        return config
    if hidden not in GEMMA3_QUERY_PRE_ATTN_SCALAR:
        raise ValueError(
            f"gemma3 with hidden_size={hidden} is not a published Gemma 3 size "
            f"{sorted(GEMMA3_QUERY_PRE_ATTN_SCALAR)}; add its query_pre_attn_scalar to "
            "GEMMA3_QUERY_PRE_ATTN_SCALAR."
        )
    pattern = GEMMA3_DEFAULTS["sliding_window_pattern"]
    config.update(GEMMA3_DEFAULTS)
    config.update(
        model_type="gemma3_text",
        architectures=["Gemma3ForCausalLM"],
        query_pre_attn_scalar=GEMMA3_QUERY_PRE_ATTN_SCALAR[hidden],
        sliding_window=int(_need(meta, "gemma3.attention.sliding_window")),
        layer_types=[
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(layers)
        ],
    )
    return config


def find_gguf(path: str) -> str | None:
    """`path` if it is a .gguf file; the one .gguf in folder `path` (without a config.json)."""
    if path.endswith(".gguf"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"GGUF file {path!r} does not exist.")
        return path
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "config.json")):
        return None
    found = sorted(f for f in os.listdir(path) if f.endswith(".gguf"))
    if len(found) > 1:
        raise ValueError(f"{path!r} holds several GGUF files {found}; pass one of them instead.")
    return os.path.join(path, found[0]) if found else None


def open_reader(path: str):
    """`gguf.GGUFReader` of `path`; a file it cannot parse raises one line naming the file and
    what a valid one is."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:
        with open(path, "rb") as f:
            head = f.read(4)
        what = "it does not start with b'GGUF'" if head != b"GGUF" else "truncated or damaged"
        raise ValueError(
            f"{path!r} is not a valid GGUF file ({what}; {os.path.getsize(path)} bytes; gguf: "
            f"{str(e).rstrip('.')}). A GGUF file is one llama.cpp model file (magic b'GGUF', "
            "metadata, tensors), e.g. from `sinks-jax models fetch smollm2-135m`; a Hugging Face "
            "folder (config.json, *.safetensors) also works with --hf."
        ) from e


def read_gguf(path: str) -> tuple[dict[str, Any], GGUFTensors, HFTokenizer]:
    """(HF config dict, HF-named float32 tensors, tokenizer) of a GGUF file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path!r} does not exist.")
    reader = open_reader(path)
    meta = metadata(reader)
    config = hf_config_from_metadata(meta, [t.name for t in reader.tensors])
    tensors = GGUFTensors(reader, meta["general.architecture"], config)
    tokenizer = tokenizer_from_metadata(meta, spec=f"gguf:{path}")
    return config, tensors, tokenizer


def load_gguf_tokenizer(path: str) -> HFTokenizer:
    """The tokenizer of a GGUF file (reads only its metadata)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path!r} does not exist.")
    return tokenizer_from_metadata(metadata(open_reader(path)), spec=f"gguf:{path}")


register_tokenizer_kind("gguf", load_gguf_tokenizer)
