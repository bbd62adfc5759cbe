"""Deterministic, host-sharded, resumable batches of packed rows.

`make_loader(spec)` is the one constructor training code calls: a `LoaderSpec` (what to read
and how to pack it; `prepare`, the training data pipeline and the tests share it) and where
this process sits. It returns a `Loader` that yields dicts of int32 numpy arrays `[B_local, T]` (`tokens`, `targets`, `segment_ids`,
`positions`, `loss_mask`), where `B_local = batch_size // process_count`.

How rows are addressed (`sinks_jax.data.rows`):
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

import dataclasses
from collections.abc import Iterator

import grain
import numpy as np

from sinks_jax.data import packing
from sinks_jax.data.corpus import PREPARED, document_tokens, load_prepared, tokenize_documents
from sinks_jax.data.rows import PackedRows, SyntheticRows, make_rows
from sinks_jax.data.sources import check_split
from sinks_jax.data.tokenizers import Tokenizer, get_tokenizer

__all__ = [
    "PREPARED",
    "Loader",
    "LoaderSpec",
    "PackedRows",
    "SyntheticRows",
    "document_tokens",
    "load_prepared",
    "make_loader",
    "tokenize_documents",
]


@dataclasses.dataclass(frozen=True)
class LoaderSpec:
    """What a loader reads and how it packs it (checked at construction).

    Fields:
      source: `text:GLOB`, `synthetic:KIND`, `tfds:NAME[:SPLIT]` or `prepared:DIR` (the output
        of `sinks-jax prepare`).
      tokenizer: a tokenizer or its spec (`byte`, `sp:PATH`, `hf:PATH`).
      seq_len: `T`; batch_size: rows per *global* batch (each process yields
        `batch_size // process_count`).
      packing, intra_doc, reset_positions: the packing grid (see `sinks_jax.data.packing`).
      seed: shuffling (finite sources) or sampling (synthetic) seed.
      split: `train`, `valid` (held-out documents) or `all`.
      shuffle: None = True, except for `valid`.
      num_epochs: None = endless (except 1 pass for `valid`); for a one-pass evaluation over
        another source use `split="all", num_epochs=1, shuffle=False`.
      max_documents: read at most this many documents of a finite source (quick runs).
    """

    source: str
    tokenizer: str | Tokenizer = "byte"
    seq_len: int = 512
    batch_size: int = 8
    packing: str = "concat_bos"
    intra_doc: bool = False
    reset_positions: bool = False
    seed: int = 0
    split: str = "train"
    shuffle: bool | None = None
    num_epochs: int | None = None
    max_documents: int | None = None

    def __post_init__(self):
        check_split(self.split)
        packing.check_mode(self.packing)

    @property
    def shuffled(self) -> bool:
        """Whether rows are visited in a shuffled order (default: all but `valid`)."""
        return self.split != "valid" if self.shuffle is None else self.shuffle

    @property
    def epochs(self) -> int | None:
        """Passes over a finite corpus (None: endless; default: one pass for `valid`)."""
        if self.num_epochs is None and self.split == "valid":
            return 1
        return self.num_epochs


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
        self._row_batches = local[process_index::process_count]  # row indices per batch.
        self._batches = self._row_batches.map(self._to_arrays)
        self._index = 0
        self._iter: Iterator | None = None

    def _to_arrays(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return self.rows.get(np.asarray(indices))

    def batch_rows(self, index: int) -> np.ndarray:
        """int64 `[B_local]`: which rows of `self.rows` make this process's batch `index`
        (-1: a padding row), e.g. to find their documents (`PackedRows.document_of`)."""
        return np.asarray(self._row_batches[index], dtype=np.int64).reshape(-1)

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


def make_loader(spec: LoaderSpec | str | None = None, *args, process_index: int | None = None,
                process_count: int | None = None, prefetch: int = 4, num_threads: int = 2,
                progress: bool = True, **fields) -> Loader:
    """The loader of `spec` for this process.

    `spec` is a `LoaderSpec`, or its fields as `make_loader(source, tokenizer, seq_len, ...,
    seed=0, split=...)` in `LoaderSpec`'s order; with a `LoaderSpec`, keyword fields replace
    its own. process_index, process_count: default to `jax.process_index()/process_count()`;
    prefetch, num_threads: grain's read options; progress: a bar while tokenising.
    """
    if isinstance(spec, LoaderSpec):
        if args:
            raise TypeError("make_loader(LoaderSpec, ...): pass changed fields by name.")
        spec = dataclasses.replace(spec, **fields) if fields else spec
    else:
        spec = LoaderSpec(*([] if spec is None else [spec]), *args, **fields)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    tok = get_tokenizer(spec.tokenizer)
    rows = make_rows(spec, tok, progress=progress)
    return Loader(rows, spec.batch_size, seed=spec.seed, shuffle=spec.shuffled,
                  num_epochs=spec.epochs, process_index=process_index,
                  process_count=process_count, prefetch=prefetch, num_threads=num_threads)
