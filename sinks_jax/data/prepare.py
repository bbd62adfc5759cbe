"""Tokenise a source into `.npy` shards plus a manifest (`prepare_corpus`; the command is
`sinks-jax prepare`, in `data.command`).

Layout of `--out DIR`:
  DIR/manifest.json                  source, tokenizer, special ids, per-split counts,
                                     the files each split read (held-out files of a
                                     `text:GLOB?valid=GLOB` source stay held out), and the
                                     packing statistics of `--seq-len/--packing`
  DIR/SPLIT/tokens-00000.npy         int32 (uint16 when the vocabulary fits) ids of the
                                     shard's documents back to back, without specials
  DIR/SPLIT/offsets-00000.npy        int64 `[D + 1]`: document d is tokens[o[d]:o[d + 1]]
  DIR/SPLIT/progress.json            shards written so far (resume point)

The shards hold tokenised *documents*, not packed rows: packing is a cheap, pure function of
the stream (`packing.build_rows`), so the loader packs on the fly and one prepared corpus
serves the whole packing grid (every mode, with or without intra-document masking).
Train from it with `make_loader(LoaderSpec("prepared:DIR", ...))` on a host without TensorFlow.

Resuming: run the same command again; finished shards are kept, the source is re-read
(cheap) and tokenisation restarts after the last finished shard.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from sinks_jax.data.corpus import PREPARED
from sinks_jax.data.loader import LoaderSpec
from sinks_jax.data.rows import make_rows
from sinks_jax.data.sources import get_source
from sinks_jax.data.tokenizers import Tokenizer
from sinks_jax.progress import progress


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)  # atomic: an interrupted run never leaves half a manifest


def prepare_split(source: str, tokenizer: Tokenizer, split: str, out: str, *,
                  shard_tokens: int = 50_000_000, max_documents: int | None = None,
                  batch_docs: int = 64) -> dict:
    """Tokenise one split into shards under `out/split`; returns the split's manifest entry."""
    src = get_source(source)
    if src.infinite and max_documents is None:
        raise ValueError(f"source {source!r} is endless; pass --max-documents N.")
    folder = os.path.join(out, split)
    os.makedirs(folder, exist_ok=True)
    progress_path = os.path.join(folder, "progress.json")
    done = {"shards": [], "documents": 0, "tokens": 0, "complete": False}
    if os.path.isfile(progress_path):
        with open(progress_path) as f:
            done = json.load(f)
        if done.get("complete"):
            return done
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32
    texts = src.documents(split)
    bar = progress(desc=f"prepare {split}", unit=" docs", initial=done["documents"],
                   total=max_documents)
    skipped = 0
    pieces: list[np.ndarray] = []
    batch: list[str] = []
    shard_count = 0

    def write_shard() -> None:
        nonlocal pieces
        k = len(done["shards"])
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([p.size for p in pieces], out=offsets[1:])
        names = {"tokens": f"{split}/tokens-{k:05d}.npy", "offsets": f"{split}/offsets-{k:05d}.npy"}
        np.save(os.path.join(out, names["tokens"]),
                np.concatenate(pieces).astype(dtype) if pieces else np.zeros(0, dtype))
        np.save(os.path.join(out, names["offsets"]), offsets)
        done["shards"].append({**names, "num_documents": len(pieces), "num_tokens": int(offsets[-1])})
        done["documents"] += len(pieces)
        done["tokens"] += int(offsets[-1])
        _write_json(progress_path, done)
        pieces = []

    def flush() -> None:
        nonlocal shard_count
        for ids in tokenizer.encode_batch(batch):
            pieces.append(ids)
            shard_count += ids.size
            if shard_count >= shard_tokens:
                write_shard()
                shard_count = 0
        bar.update(len(batch))
        batch.clear()

    for i, text in enumerate(texts):
        if max_documents is not None and i >= max_documents:
            break
        if i < done["documents"]:
            skipped += 1  # already in a finished shard
            continue
        batch.append(text)
        if len(batch) >= batch_docs:
            flush()
    if batch:
        flush()
    if pieces:
        write_shard()
    bar.close()
    done["complete"] = True
    _write_json(progress_path, done)
    return done


def packing_stats(spec: LoaderSpec, tokenizer: Tokenizer) -> dict:
    """Rows, token and loss-mask counts of a prepared split (`spec.source` is `prepared:DIR`)
    under the spec's packing setting."""
    rows = make_rows(spec, tokenizer)
    seq_len = spec.seq_len
    real = loss = 0
    for start in range(0, len(rows), 4096):
        r = rows.get(np.arange(start, min(start + 4096, len(rows))))
        real += int((r["segment_ids"] > 0).sum())
        loss += int(r["loss_mask"].sum())
    return {"seq_len": seq_len, "packing": spec.packing, "intra_doc": spec.intra_doc,
            "reset_positions": spec.reset_positions, "rows": len(rows), "real_tokens": real,
            "loss_tokens": loss, "padding_fraction": 1 - real / max(1, len(rows) * seq_len)}


def prepare_corpus(
    source: str,
    tokenizer: Tokenizer,
    out: str,
    *,
    splits: Sequence[str] = ("train", "valid"),
    seq_len: int = 512,
    packing: str = "concat_bos",
    intra_doc: bool = False,
    reset_positions: bool = False,
    shard_tokens: int = 50_000_000,
    max_documents: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Prepare every split of `source` under `out` (see the module docstring) and return the
    manifest; `echo` (e.g. `print`) gets one line per finished split. The packing settings
    only choose the manifest's packing statistics."""
    os.makedirs(out, exist_ok=True)
    manifest = {"source": source, "tokenizer": tokenizer.spec, "vocab_size": tokenizer.vocab_size,
                "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
                "pad_id": tokenizer.pad_id, "splits": {}}
    for split in splits:
        t0 = time.perf_counter()
        entry = prepare_split(source, tokenizer, split, out, shard_tokens=shard_tokens,
                              max_documents=max_documents)
        seconds = time.perf_counter() - t0
        manifest["splits"][split] = {"documents": entry["documents"], "tokens": entry["tokens"],
                                     "shards": entry["shards"]}
        src = get_source(source)
        if hasattr(src, "split_files"):  # text sources: which files this split read.
            manifest["splits"][split]["files"] = src.split_files(split)
        _write_json(os.path.join(out, "manifest.json"), manifest)
        spec = LoaderSpec(PREPARED + out, tokenizer, seq_len, packing=packing,
                          intra_doc=intra_doc, reset_positions=reset_positions, split=split)
        stats = packing_stats(spec, tokenizer)
        manifest["splits"][split]["packing"] = stats
        _write_json(os.path.join(out, "manifest.json"), manifest)
        if echo is not None:
            echo(f"{split}: {entry['documents']} documents, {entry['tokens']} tokens in "
                 f"{len(entry['shards'])} shard(s), {seconds:.1f} s; {stats['rows']} rows of "
                 f"{seq_len} ({packing}), padding {stats['padding_fraction']:.2%}")
    return manifest
