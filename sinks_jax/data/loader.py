"""Deterministic, host-sharded, resumable batches of packed rows.

`make_loader(...)` is the one constructor training code calls. It returns a `Loader` that
yields dicts of int32 numpy arrays `[B_local, T]` (`tokens`, `targets`, `segment_ids`,
`positions`, `loss_mask`), where `B_local = batch_size // process_count`.

How rows are addressed:
- A finite source (`text:`, `tfds:`, `prepared:DIR`) is tokenised once into a stream;
  row `i` is rebuilt on demand from the stream by the packing code (`packing.build_rows`).
  Each epoch visits every row once in an order shuffled by `(seed, epoch)`.
- A synthetic source is endless: row block `j` (`rows_per_block` rows) is packed from
  documents drawn with `(seed, split, j)`, and the tail of its last document that does not
  fit is not used. Nothing is shuffled (the documents are i.i.d. already).

Global batch `k` is rows `[k * batch_size, (k + 1) * batch_size)` of that order; process
`p` of `P` takes the `p`-th contiguous slice of `batch_size // P` rows. So the processes
see disjoint rows, together exactly the single-process batch, whatever `P` is.

The state is `{"index": k}` (with `"epoch"` for information): the next batch index of this
process. `set_state` restores it exactly (rows are a pure function of the index).
A finite pass (`num_epochs` set, e.g. evaluation) pads its last batch with rows of padding
(loss mask 0) so that every process gets the same number of full-shape batches.

grain pieces: `MapDataset.range/shuffle/repeat/batch/map`, slicing for host sharding and
resume, `to_iter_dataset(ReadOptions)` for threaded prefetch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import grain
import numpy as np

from sinks_jax.data import packing
from sinks_jax.data.sources import SyntheticSource, check_split, get_source
from sinks_jax.data.tokenizers import Tokenizer, get_tokenizer
from sinks_jax.progress import progress as progress_bar

log = logging.getLogger(__name__)

PREPARED = "prepared:"


# ------------------------------------------------------------------- tokenised corpus

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


# ----------------------------------------------------------------------- row stores

class _PackKwargs:
    def __init__(self, seq_len, mode, intra_doc, reset_positions, bos_id, eos_id, pad_id):
        packing.check_mode(mode)
        packing.validate_special_ids(bos_id, eos_id, pad_id)
        self.seq_len, self.mode, self.intra_doc = seq_len, mode, intra_doc
        self.reset_positions = reset_positions
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id

    def rows(self, stream, doc_starts, starts, lengths):
        return packing.build_rows(stream, doc_starts, starts, lengths, seq_len=self.seq_len,
                                  mode=self.mode, intra_doc=self.intra_doc,
                                  reset_positions=self.reset_positions, bos_id=self.bos_id,
                                  pad_id=self.pad_id)


class PackedRows:
    """Random access to the packed rows of a finite tokenised corpus."""

    def __init__(self, raw_L: np.ndarray, offsets_Dp1: np.ndarray, pack: _PackKwargs):
        self.pack = pack
        self.stream, self.doc_starts = packing.units_from_raw(raw_L, offsets_Dp1, pack.mode,
                                                              pack.bos_id, pack.eos_id)
        self.starts, self.lengths = packing.row_spans(self.doc_starts, pack.mode, pack.seq_len)
        self.num_documents = len(offsets_Dp1) - 1

    def __len__(self) -> int:
        return len(self.starts)

    def get(self, indices_N: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `indices_N` as int32 `[N, T]`; index -1 gives a row of padding."""
        idx = np.asarray(indices_N, dtype=np.int64).reshape(-1)
        real = idx >= 0
        safe = np.where(real, idx, 0)
        lengths = np.where(real, self.lengths[safe], 0)
        return self.pack.rows(self.stream, self.doc_starts, self.starts[safe], lengths)


class SyntheticRows:
    """Endless rows from a synthetic source, packed in blocks of `rows_per_block` rows."""

    def __init__(self, source: SyntheticSource, tokenizer: Tokenizer, pack: _PackKwargs,
                 split: str, seed: int, rows_per_block: int = 64):
        self.source, self.tokenizer, self.pack = source, tokenizer, pack
        self.split, self.seed, self.rows_per_block = split, seed, rows_per_block
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 2**62

    def _block(self, j: int) -> dict[str, np.ndarray]:
        with self._lock:
            if j in self._cache:
                self._cache.move_to_end(j)
                return self._cache[j]
        r, p = self.rows_per_block, self.pack
        need = r if p.mode == "none" else r * (p.seq_len + 1)
        texts, have, sub = [], 0, 0
        while have < need:  # draw document blocks until R full rows fit
            new = self.source.block(self.split, self.seed, j * 1_000_003 + sub)
            texts += new
            have = len(texts) if p.mode == "none" else have + sum(len(t) for t in new)
            sub += 1
        raw, offsets = tokenize_documents(texts, self.tokenizer, progress=False)
        stream, doc_starts = packing.units_from_raw(raw, offsets, p.mode, p.bos_id, p.eos_id)
        starts, lengths = packing.row_spans(doc_starts, p.mode, p.seq_len)
        if len(starts) < r:
            raise RuntimeError(f"synthetic block {j} packed only {len(starts)} rows < {r}.")
        rows = p.rows(stream, doc_starts, starts[:r], lengths[:r])
        with self._lock:
            self._cache[j] = rows
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return rows

    def get(self, indices_N: np.ndarray) -> dict[str, np.ndarray]:
        idx = np.asarray(indices_N, dtype=np.int64).reshape(-1)
        out = {k: np.empty((idx.size, self.pack.seq_len), np.int32) for k in packing.FIELDS}
        for n, i in enumerate(idx):
            block = self._block(int(i) // self.rows_per_block)
            for k in packing.FIELDS:
                out[k][n] = block[k][int(i) % self.rows_per_block]
        return out


# --------------------------------------------------------------------------- loader

class Loader:
    """Iterator over one process's batches; see the module docstring.

    `get_state()` -> `{"index": k, "epoch": e}`; `set_state(state)` resumes exactly.
    """

    def __init__(self, rows: PackedRows | SyntheticRows, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, num_epochs: int | None = None, process_index: int = 0,
                 process_count: int = 1, prefetch: int = 4, num_threads: int = 2):
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count}).")
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} (global) is not divisible by "
                             f"process_count={process_count}.")
        self.rows = rows
        self.batch_size, self.local_batch = batch_size, batch_size // process_count
        self.process_index, self.process_count = process_index, process_count
        self.finite_rows = isinstance(rows, PackedRows)
        self.num_epochs = num_epochs if self.finite_rows else None
        self._read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)

        if self.finite_rows:
            if len(rows) == 0:
                raise ValueError("the corpus packed into 0 rows; check the source and seq_len.")
            order = grain.MapDataset.range(len(rows))
            if shuffle:
                order = order.shuffle(seed=seed)
            order = order.repeat(num_epochs)
            if num_epochs is not None:  # pad to whole global batches with padding rows (-1)
                n_real = len(order)
                n_total = -(-n_real // batch_size) * batch_size
                base = order
                order = grain.MapDataset.range(n_total).map(
                    lambda i: base[i] if i < n_real else -1)
        else:
            order = grain.MapDataset.range(len(rows))
        local = order.batch(self.local_batch, drop_remainder=True)
        self._batches = local[process_index::process_count].map(self._to_arrays)
        self._index = 0
        self._iter: Iterator | None = None

    def _to_arrays(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return self.rows.get(np.asarray(indices))

    @property
    def batches_per_epoch(self) -> int | None:
        """Batches per process per pass over a finite corpus (None if endless)."""
        if not self.finite_rows:
            return None
        return -(-len(self.rows) // self.batch_size)

    def __len__(self) -> int:
        """Batches per process in total (finite `num_epochs` only)."""
        if self.num_epochs is None:
            raise TypeError("an endless loader has no length; pass num_epochs to bound it.")
        return len(self._batches)

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iter is None:
            self._iter = iter(self._batches[self._index:].to_iter_dataset(self._read))
        batch = next(self._iter)
        self._index += 1
        return batch

    def get_state(self) -> dict[str, int]:
        """`{"index": next batch of this process, "epoch": epoch it falls in (0 if endless)}`."""
        epoch = 0
        if self.finite_rows:
            epoch = self._index * self.batch_size // len(self.rows)
        return {"index": int(self._index), "epoch": int(epoch)}

    def set_state(self, state: dict[str, int]) -> None:
        """Resume from `get_state()`'s dict: the next batch is the one that followed it."""
        if "index" not in state:
            raise ValueError(f"loader state {state!r} has no 'index'; pass a dict from get_state().")
        self._index = int(state["index"])
        self._iter = None


# ---------------------------------------------------------------------- constructor

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


def make_loader(
    source: str,
    tokenizer: str | Tokenizer = "byte",
    seq_len: int = 512,
    batch_size: int = 8,
    packing: str = "concat_bos",
    intra_doc: bool = False,
    reset_positions: bool = False,
    seed: int = 0,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    *,
    shuffle: bool | None = None,
    num_epochs: int | None = None,
    max_documents: int | None = None,
    prefetch: int = 4,
    num_threads: int = 2,
    progress: bool = True,
) -> Loader:
    """The loader training code builds.

    Args:
      source: `text:GLOB`, `synthetic:KIND`, `tfds:NAME[:SPLIT]` or `prepared:DIR` (the output
        of `sinks-jax prepare`).
      tokenizer: a tokenizer or its spec (`byte`, `sp:PATH`, `hf:PATH`).
      seq_len: `T`; batch_size: rows per *global* batch (each process yields
        `batch_size // process_count`).
      packing, intra_doc, reset_positions: the packing grid (see `sinks_jax.data.packing`).
      seed: shuffling (finite sources) or sampling (synthetic) seed.
      split: `train`, `valid` (held-out documents) or `all`.
      process_index, process_count: default to `jax.process_index()/process_count()`.
      shuffle: default True, except for `valid`.
      num_epochs: None = endless (default, except 1 pass for `valid`); for a one-pass
        evaluation over another source use `split="all", num_epochs=1, shuffle=False`.
      max_documents: read at most this many documents of a finite source (quick runs).
    """
    check_split(split)
    tok = get_tokenizer(tokenizer)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if shuffle is None:
        shuffle = split != "valid"
    if num_epochs is None and split == "valid":
        num_epochs = 1
    pack = _PackKwargs(seq_len, packing, intra_doc, reset_positions, tok.bos_id,
                       tok.eos_id, tok.pad_id)
    if source.startswith(PREPARED):
        raw, offsets = load_prepared(source[len(PREPARED):], split, tok)
        if max_documents is not None:
            offsets = offsets[: max_documents + 1]
            raw = raw[: offsets[-1]]
        rows: PackedRows | SyntheticRows = PackedRows(raw, offsets, pack)
    else:
        src = get_source(source)
        if isinstance(src, SyntheticSource):
            rows = SyntheticRows(src, tok, pack, split, seed)
        else:
            texts = src.documents(split)
            if max_documents is not None:
                texts = (t for _, t in zip(range(max_documents), texts))
            raw, offsets = tokenize_documents(texts, tok, desc=f"tokenising {source} [{split}]",
                                              progress=progress and sys.stderr.isatty())
            rows = PackedRows(raw, offsets, pack)
    return Loader(rows, batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                  process_index=process_index, process_count=process_count,
                  prefetch=prefetch, num_threads=num_threads)
