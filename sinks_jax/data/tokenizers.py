"""Tokenizers with one small interface, and `sinks-jax tokenizer train` (SentencePiece or BPE).

Every tokenizer has `encode(str) -> list[int]`, `encode_batch(list[str]) -> list[np.ndarray]`,
`decode(list[int]) -> str`, `vocab_size`, `bos_id`, `eos_id`, `pad_id` and `spec` (the
string that rebuilds it). `encode` never adds special tokens: packing adds `<bos>`/`<eos>`.
Special ids are explicit and checked to lie inside the vocabulary.

Specs for `get_tokenizer`:
- `byte`: UTF-8 bytes are ids 0..255; `bos=256`, `eos=257`, `pad=258`; vocab 259. No files.
- `sp:PATH.model[?bos=ID&eos=ID&pad=ID]`: a SentencePiece model. Its own special ids are
  used unless overridden; a model without a pad piece pads with its unk id (padding is
  never attended to nor trained on, so any in-vocabulary id serves).
- `hf:PATH/tokenizer.json[?bos=TOKEN_OR_ID&eos=...&pad=...]`: a Hugging Face `tokenizers`
  file; specials default to the usual names (`<s>`, `<bos>`, `<|begin_of_text|>`, ...).
- `KIND:PATH` for a kind that a room above registers with `register_tokenizer_kind`: the
  pretrained room registers `gguf:PATH.gguf`, the tokenizer a GGUF model file describes
  (`sinks_jax.pretrained.gguf`; importing it, or `sinks_jax.hf`, makes the kind available,
  and the commands that read tokenizer specs do). Data knows no model file format.

Training (offline, on a source's `train` documents): `train_sentencepiece` (a SentencePiece
`.model`) and `train_bpe` (a byte-level BPE `tokenizer.json` with the `tokenizers` library,
seconds on a few hundred MB; load it as `hf:PATH/tokenizer.json`); the command is
`sinks-jax tokenizer train` (`data.command`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np

from sinks_jax.data.specs import check_no_options_left, parse_spec, pop_int

log = logging.getLogger(__name__)

BUILTIN_KINDS = ("byte", "sp", "hf")


class Tokenizer(Protocol):
    """The interface every tokenizer here implements."""

    spec: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def validate_specials(name: str, vocab_size: int, **ids: int) -> None:
    """Raise a ValueError if a special id is missing or outside `[0, vocab_size)`."""
    for key, value in ids.items():
        if value is None or not 0 <= int(value) < vocab_size:
            raise ValueError(f"tokenizer {name}: {key}={value} is not an id in [0, {vocab_size}); "
                             f"pass it explicitly, e.g. {name}?{key.removesuffix('_id')}=ID.")


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, then `<bos>`=256, `<eos>`=257, `<pad>`=258."""

    spec = "byte"
    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A SentencePiece `.model` file."""

    def __init__(self, path: str, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None):
        import sentencepiece as spm

        if not os.path.isfile(path):
            raise FileNotFoundError(f"SentencePiece model {path!r} does not exist; train one with "
                                    "`sinks-jax tokenizer train --source ... --vocab-size N --out PATH`.")
        self._sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = int(self._sp.get_piece_size())
        own = lambda i: None if i < 0 else int(i)  # noqa: E731  (-1 means "absent")
        self.bos_id = bos_id if bos_id is not None else own(self._sp.bos_id())
        self.eos_id = eos_id if eos_id is not None else own(self._sp.eos_id())
        self.pad_id = pad_id if pad_id is not None else own(self._sp.pad_id())
        if self.pad_id is None and self._sp.unk_id() >= 0:
            log.info("SentencePiece model %s has no pad piece; padding with unk id %d.",
                     path, self._sp.unk_id())
            self.pad_id = int(self._sp.unk_id())
        self.spec = f"sp:{path}"
        validate_specials(self.spec, self.vocab_size, bos_id=self.bos_id, eos_id=self.eos_id,
                          pad_id=self.pad_id)

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        ids = self._sp.encode(list(texts), num_threads=os.cpu_count() or 1)
        return [np.asarray(x, dtype=np.int32) for x in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


_HF_DEFAULTS = {
    "bos": ("<s>", "<bos>", "<|begin_of_text|>", "[CLS]", "<|endoftext|>"),
    "eos": ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "[SEP]"),
    "pad": ("<pad>", "[PAD]", "<|padding|>", "<|finetune_right_pad_id|>", "<unk>", "<|endoftext|>"),
}


class HFTokenizer:
    """A Hugging Face `tokenizer.json` (through the `tokenizers` library, no transformers)."""

    def __init__(self, path: str, **specials: str):
        from tokenizers import Tokenizer as _Tok

        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file {path!r} does not exist; pass hf:PATH/tokenizer.json.")
        self._tok = _Tok.from_file(path)
        self.spec = f"hf:{path}"
        self._set_specials(specials)

    @classmethod
    def from_tokenizer(cls, tok, spec: str, **specials: str) -> HFTokenizer:
        """One around an already built `tokenizers.Tokenizer`; `spec` is what rebuilds it."""
        self = cls.__new__(cls)
        self._tok, self.spec = tok, spec
        self._set_specials(specials)
        return self

    def _set_specials(self, specials: dict[str, str]) -> None:
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        ids = {}
        for key, names in _HF_DEFAULTS.items():
            given = specials.get(key)
            if given is not None:
                ids[key] = int(given) if given.lstrip("-").isdigit() else self._tok.token_to_id(given)
                if ids[key] is None:
                    raise ValueError(f"tokenizer {self.spec}: {key}={given!r} is not a token of the vocabulary.")
            else:
                ids[key] = next((i for i in map(self._tok.token_to_id, names) if i is not None), None)
        self.bos_id, self.eos_id, self.pad_id = ids["bos"], ids["eos"], ids["pad"]
        validate_specials(self.spec, self.vocab_size, bos_id=self.bos_id, eos_id=self.eos_id,
                          pad_id=self.pad_id)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in out]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


# Kinds registered by the rooms above (`register_tokenizer_kind`): kind -> build(path).
_REGISTERED: dict[str, Callable[[str], Tokenizer]] = {}


def register_tokenizer_kind(kind: str, build: Callable[[str], Tokenizer]) -> None:
    """Let `get_tokenizer` read `KIND:PATH` specs as `build(PATH)` (no options after `?`).

    The pretrained room registers `gguf` (`sinks_jax.pretrained.gguf`), so that data, which
    knows no model file format, still reads every spec the commands accept.
    """
    if kind in BUILTIN_KINDS:
        raise ValueError(f"tokenizer kind {kind!r} is built in; register another name.")
    _REGISTERED[kind] = build


def tokenizer_kinds() -> tuple[str, ...]:
    """The kinds `get_tokenizer` reads now: the built-in ones, then the registered ones."""
    return BUILTIN_KINDS + tuple(_REGISTERED)


def get_tokenizer(spec: str = "byte") -> Tokenizer:
    """Build a tokenizer from its spec: `byte`, `sp:PATH.model`, `hf:PATH/tokenizer.json`, or a
    registered kind (`gguf:PATH.gguf` once `sinks_jax.pretrained.gguf` is imported)."""
    if isinstance(spec, (ByteTokenizer, SentencePieceTokenizer, HFTokenizer)):
        return spec
    kinds = tokenizer_kinds()
    if isinstance(spec, str) and spec and spec.partition(":")[0] not in kinds:
        raise ValueError(
            f"unknown tokenizer {spec!r}: the part before ':' must be one of {list(kinds)}; "
            "model files' kinds (gguf:) are registered by the pretrained room: import "
            "sinks_jax.pretrained.gguf (or sinks_jax.hf) first."
        )
    kind, body, options = parse_spec(spec, kinds, "tokenizer")
    if kind == "byte":
        check_no_options_left(options, "byte tokenizer", ())
        return ByteTokenizer()
    if not body:
        raise ValueError(f"tokenizer spec {spec!r} needs a path after '{kind}:'.")
    if kind in _REGISTERED:
        check_no_options_left(options, f"{kind} tokenizer", ())
        return _REGISTERED[kind](body)
    if kind == "sp":
        ids = {k + "_id": pop_int(options, k, None, spec) for k in ("bos", "eos", "pad")}
        check_no_options_left(options, "sp tokenizer", ("bos", "eos", "pad"))
        return SentencePieceTokenizer(body, **ids)
    specials = {k: options.pop(k) for k in ("bos", "eos", "pad") if k in options}
    check_no_options_left(options, "hf tokenizer", ("bos", "eos", "pad"))
    return HFTokenizer(body, **specials)


# ------------------------------------------------------------------------------ training

def _training_lines(source: str, max_chars: int, max_line_chars: int = 8000) -> Iterator[str]:
    """Lines (paragraphs) of the source's training documents, up to `max_chars` in total."""
    from sinks_jax.data.sources import get_source

    total = 0
    for doc in get_source(source).documents("train"):
        for line in doc.split("\n"):
            line = line.strip()
            for i in range(0, len(line), max_line_chars):
                piece = line[i : i + max_line_chars]
                yield piece
                total += len(piece)
                if total >= max_chars:
                    return


def _training_texts(source: str, max_chars: int, max_piece_chars: int = 1_000_000) -> Iterator[str]:
    """The source's training documents, newlines kept, cut into pieces of at most
    `max_piece_chars` characters, up to `max_chars` in total."""
    from sinks_jax.data.sources import get_source

    total = 0
    for doc in get_source(source).documents("train"):
        for i in range(0, len(doc), max_piece_chars):
            piece = doc[i : i + max_piece_chars][: max_chars - total]
            yield piece
            total += len(piece)
            if total >= max_chars:
                return


def train_sentencepiece(source: str, vocab_size: int, out: str, model_type: str = "bpe",
                        max_chars: int = 100_000_000, character_coverage: float = 0.9995) -> str:
    """Train a SentencePiece model on a source's training documents, offline.

    Ids: `<pad>`=0, `<unk>`=1, `<bos>`=2, `<eos>`=3; byte fallback on (no unknown bytes);
    digits split; text not normalised. Writes `out` (a `.model` suffix is added if missing)
    and the `.vocab` beside it; returns the model path.
    """
    import sentencepiece as spm

    prefix = out[: -len(".model")] if out.endswith(".model") else out
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    lines = _training_lines(source, max_chars)
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_prefix=prefix, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        max_sentence_length=32768, num_threads=os.cpu_count() or 1, minloglevel=2,
    )
    return prefix + ".model"


# Special tokens of `train_bpe`, in id order: the names `HFTokenizer` finds by default.
BPE_SPECIALS = ("<pad>", "<bos>", "<eos>")


def train_bpe(source: str, vocab_size: int, out: str, max_chars: int = 1_000_000_000,
              min_frequency: int = 2) -> str:
    """Train a byte-level BPE `tokenizer.json` on a source's training documents, offline.

    Ids: `<pad>`=0, `<bos>`=1, `<eos>`=2, then the 256 byte symbols, then merges, so every
    string encodes (no unknown token) and decodes back exactly. GPT-2-style byte-level
    pre-tokenisation without a prefix space; no normaliser; no post-processor (packing adds
    the specials). Trained on whole documents (newlines kept), unlike the SentencePiece
    trainer, which reads paragraphs. `vocab_size` counts everything (fewer ids if the text
    runs out of merges).
    Writes `out` (`out/tokenizer.json` when `out` is a directory or has no `.json` suffix);
    returns the file's path.
    """
    from tokenizers import Tokenizer as _Tok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < len(BPE_SPECIALS) + 256:
        raise ValueError(f"--vocab-size {vocab_size} is too small for byte-level BPE; use at "
                         f"least {len(BPE_SPECIALS) + 256} (3 specials + 256 bytes).")
    path = out if out.endswith(".json") else os.path.join(out, "tokenizer.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tok = _Tok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(BPE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_training_texts(source, max_chars), trainer=trainer)
    tok.save(path)
    return path
