"""Corpora as token streams: documents tokenised back to back, a prepared corpus read from its
shards, and the documents of any source's split as token ids."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

import numpy as np

from sinks_jax.data.sources import check_split, get_source
from sinks_jax.data.tokenizers import Tokenizer, get_tokenizer
from sinks_jax.progress import progress as progress_bar

PREPARED = "prepared:"


def tokenize_documents(texts: Iterable[str], tokenizer: Tokenizer, *, batch_docs: int = 64,
                       desc: str | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise documents back to back: `(raw_L int32, offsets_Dp1 int64)`, no specials."""
    pieces: list[np.ndarray] = []
    batch: list[str] = []
    bar = progress_bar(desc=desc or "tokenising", unit=" docs", disable=not progress, leave=False)

    def flush() -> None:
        pieces.extend(tokenizer.encode_batch(batch))
        bar.update(len(batch))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_docs:
            flush()
    if batch:
        flush()
    bar.close()
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([p.size for p in pieces], out=offsets[1:])
    raw = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
    return raw, offsets


def load_prepared(directory: str, split: str, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split's documents back to back: `(raw_L int32, offsets_Dp1 int64)`."""
    path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} has no manifest.json; run `sinks-jax prepare --out "
                                f"{directory} ...` to completion first.")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("tokenizer") != tokenizer.spec:
        raise ValueError(f"{directory!r} was tokenised with {manifest.get('tokenizer')!r}, not "
                         f"{tokenizer.spec!r}; pass that tokenizer or prepare again.")
    if split not in manifest.get("splits", {}):
        raise ValueError(f"{directory!r} holds splits {sorted(manifest.get('splits', {}))}, not {split!r}; "
                         f"run `sinks-jax prepare --out {directory} --splits train,valid ...` again "
                         "(finished splits are kept).")
    raws, offsets, base = [], [np.zeros(1, np.int64)], 0
    for shard in manifest["splits"][split]["shards"]:
        raw = np.load(os.path.join(directory, shard["tokens"]))
        off = np.load(os.path.join(directory, shard["offsets"]))
        raws.append(raw.astype(np.int32))
        offsets.append(off[1:] + base)
        base += int(off[-1])
    raw_all = np.concatenate(raws) if raws else np.zeros(0, np.int32)
    return raw_all, np.concatenate(offsets)


def document_tokens(source: str, tokenizer: str | Tokenizer, split: str = "valid") -> Iterator[np.ndarray]:
    """The documents of a source's split as token ids (int32, no specials), in source order.

    `prepared:DIR` yields its stored documents (checked to be tokenised with `tokenizer`); any
    other source is read as text and encoded. Lazy: take what you need from the iterator.
    """
    check_split(split)
    tok = get_tokenizer(tokenizer)
    if source.startswith(PREPARED):
        raw, offsets = load_prepared(source[len(PREPARED):], split, tok)
        for start, stop in zip(offsets[:-1], offsets[1:]):
            yield raw[start:stop]
        return
    for text in get_source(source).documents(split):
        yield np.asarray(tok.encode(text), np.int32)
