"""A `tokenizers` tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

Two vocabularies, as llama.cpp runs them:

- `gpt2` (Llama 3, SmolLM2, ...): byte-level BPE with the file's merges, split first by the
  pre-tokenizer that `tokenizer.ggml.pre` names. `smollm` (and `starcoder`, `refact`,
  `command-r`, `codeshell`, `exaone`, `minerva`) isolate every digit before the GPT-2 split,
  as llama.cpp does and as SmolLM2's own `tokenizer.json` does; `transformers`' GGUF tokenizer
  conversion leaves that step out, so it merges digits ("2024" is one or two tokens there,
  four here).
- `llama` (SentencePiece; Gemma): no merges in the file, only pieces and scores. llama.cpp
  merges the adjacent pair whose joined piece scores highest, which is BPE with merges ranked
  by that score; we derive those merges (pairs of pieces that join into a normal piece), replace
  spaces by "▁", fall back to `<0xNN>` byte pieces for unknown characters, and prepend "▁"
  only if `tokenizer.ggml.add_space_prefix` says so.

In both, control tokens (type 3, `<bos>`, `<|im_end|>`) are special added tokens and
user-defined ones (type 4: Gemma's "\\n\\n" and runs of spaces, stored with real spaces) are
plain added tokens matched whole in the raw text, as llama.cpp does before any merging.
`encode` adds no `<bos>`: prepend `bos_id` where wanted (`tokenizer.ggml.add_bos_token` says
whether llama.cpp does). Reading a file's metadata is `gguf.load_gguf_tokenizer`'s.
"""

from __future__ import annotations

from typing import Any

from sinks_jax.data.tokenizers import HFTokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> (digits split one by one first, split regex) as in llama.cpp's vocab.
PRE_TOKENIZERS = {
    "gpt2": (False, _GPT2_SPLIT),
    "gpt-2": (False, _GPT2_SPLIT),
    "llama-bpe": (False, _LLAMA3_SPLIT),
    "llama3": (False, _LLAMA3_SPLIT),
    **{
        name: (True, _GPT2_SPLIT)
        for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
    },
}


def _byte_level_bpe(meta: dict[str, Any]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = meta.get("tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(
            f"tokenizer.ggml.pre={pre!r} is not supported; supported: {sorted(PRE_TOKENIZERS)}."
        )
    digits, split = PRE_TOKENIZERS[pre]
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    steps += [
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece-BPE scoring: every split of a normal piece into two
    pieces, ranked by the joined piece's score (highest first; ties by position)."""
    pieces = {t for t, k in zip(tokens, types) if k == NORMAL}
    order = sorted(
        (i for i, k in enumerate(types) if k == NORMAL and len(tokens[i]) > 1),
        key=lambda i: (-scores[i], i),
    )
    merges = []
    for i in order:
        t = tokens[i]
        merges += [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in pieces and t[k:] in pieces]
    return merges


def _sentencepiece_bpe(meta: dict[str, Any]):
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(
            vocab,
            spm_merges(tokens, scores, types),
            unk_token=None if unk is None else tokens[unk],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    steps = [normalizers.Replace(" ", "▁")]
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("▁"))
        decode.append(decoders.Strip(content=" ", left=1, right=0))
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence(decode)
    return tok


def build_tokenizer(meta: dict[str, Any]):
    """The `tokenizers.Tokenizer` that the file's metadata describes."""
    from tokenizers import AddedToken

    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        tok = _byte_level_bpe(meta)
    elif model == "llama":
        tok = _sentencepiece_bpe(meta)
    else:
        raise ValueError(
            f"tokenizer.ggml.model={model!r} is not supported; supported: 'gpt2' (byte-level "
            "BPE) and 'llama' (SentencePiece)."
        )
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or []
    added = [(t, k == CONTROL) for t, k in zip(tokens, types) if k in (CONTROL, USER_DEFINED)]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, s in added if s])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, s in added if not s])
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise ValueError(
            f"the rebuilt tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens, the "
            f"file lists {len(tokens)} (duplicate token strings?)."
        )
    return tok


def tokenizer_from_metadata(meta: dict[str, Any], spec: str) -> HFTokenizer:
    """An `HFTokenizer` (bos/eos/pad ids from the metadata; pad falls back to eos)."""
    ids = {
        kind: meta.get(f"tokenizer.ggml.{key}_token_id")
        for kind, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"))
    }
    if ids["pad"] is None:
        ids["pad"] = ids["eos"]
    specials = {k: str(int(v)) for k, v in ids.items() if v is not None}
    return HFTokenizer.from_tokenizer(build_tokenizer(meta), spec, **specials)
