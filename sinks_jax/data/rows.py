"""Row stores: random access to the packed rows a `LoaderSpec` describes.

`PackedRows` packs a finite tokenised corpus (`text:`, `tfds:`, `prepared:DIR`); row `i` is
rebuilt on demand from the stream by `packing.build_rows`. `SyntheticRows` packs an endless
synthetic source in blocks of `rows_per_block` rows, block `j` from documents drawn with
`(seed, split, j)`; the tail of a block's last document that does not fit is not used.
`make_rows(spec, tokenizer)` picks and builds the store of a spec.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from sinks_jax.data import packing
from sinks_jax.data.corpus import PREPARED, load_prepared, tokenize_documents
from sinks_jax.data.sources import SyntheticSource, get_source
from sinks_jax.data.tokenizers import Tokenizer

if TYPE_CHECKING:
    from sinks_jax.data.loader import LoaderSpec


def build_rows(spec: LoaderSpec, tokenizer: Tokenizer, stream, doc_starts, starts, lengths):
    """`packing.build_rows` under the spec's packing settings and the tokenizer's ids."""
    return packing.build_rows(stream, doc_starts, starts, lengths, seq_len=spec.seq_len,
                              mode=spec.packing, intra_doc=spec.intra_doc,
                              reset_positions=spec.reset_positions, bos_id=tokenizer.bos_id,
                              pad_id=tokenizer.pad_id)


class PackedRows:
    """Random access to the packed rows of a finite tokenised corpus."""

    def __init__(self, raw_L: np.ndarray, offsets_Dp1: np.ndarray, spec: LoaderSpec,
                 tokenizer: Tokenizer):
        self.spec, self.tokenizer = spec, tokenizer
        self.stream, self.doc_starts = packing.units_from_raw(
            raw_L, offsets_Dp1, spec.packing, tokenizer.bos_id, tokenizer.eos_id)
        self.starts, self.lengths = packing.row_spans(self.doc_starts, spec.packing, spec.seq_len)
        self.num_documents = len(offsets_Dp1) - 1

    def __len__(self) -> int:
        return len(self.starts)

    def document_of(self, indices_N: np.ndarray) -> np.ndarray:
        """int64 `[N]`: the document (0-based, in the corpus's order) in which each row's
        first id lies; -1 for index -1 (a padding row)."""
        idx = np.asarray(indices_N, dtype=np.int64).reshape(-1)
        safe = np.where(idx >= 0, idx, 0)
        doc = np.searchsorted(self.doc_starts, self.starts[safe], side="right") - 1
        return np.where(idx >= 0, doc, -1)

    def get(self, indices_N: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `indices_N` as int32 `[N, T]`; index -1 gives a row of padding."""
        idx = np.asarray(indices_N, dtype=np.int64).reshape(-1)
        real = idx >= 0
        safe = np.where(real, idx, 0)
        lengths = np.where(real, self.lengths[safe], 0)
        return build_rows(self.spec, self.tokenizer, self.stream, self.doc_starts,
                          self.starts[safe], lengths)


class SyntheticRows:
    """Endless rows from a synthetic source, packed in blocks of `rows_per_block` rows."""

    DOCS_PER_BLOCK = 1_000_000  # document ids of block j: j * DOCS_PER_BLOCK + (0, 1, ...).

    def __init__(self, source: SyntheticSource, tokenizer: Tokenizer, spec: LoaderSpec,
                 rows_per_block: int = 64):
        self.source, self.tokenizer, self.spec = source, tokenizer, spec
        self.split, self.seed, self.rows_per_block = spec.split, spec.seed, rows_per_block
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 2**62

    def _block(self, j: int) -> dict[str, np.ndarray]:
        with self._lock:
            if j in self._cache:
                self._cache.move_to_end(j)
                return self._cache[j]
        r, p, tok = self.rows_per_block, self.spec, self.tokenizer
        need = r if p.packing == "none" else r * (p.seq_len + 1)
        texts, have, sub = [], 0, 0
        while have < need:  # draw document blocks until R full rows fit
            new = self.source.block(self.split, self.seed, j * 1_000_003 + sub)
            texts += new
            have = len(texts) if p.packing == "none" else have + sum(len(t) for t in new)
            sub += 1
        raw, offsets = tokenize_documents(texts, self.tokenizer, progress=False)
        stream, doc_starts = packing.units_from_raw(raw, offsets, p.packing, tok.bos_id,
                                                    tok.eos_id)
        starts, lengths = packing.row_spans(doc_starts, p.packing, p.seq_len)
        if len(starts) < r:
            raise RuntimeError(f"synthetic block {j} packed only {len(starts)} rows < {r}.")
        rows = build_rows(p, tok, stream, doc_starts, starts[:r], lengths[:r])
        rows["document"] = np.searchsorted(doc_starts, starts[:r], side="right") - 1
        with self._lock:
            self._cache[j] = rows
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return rows

    def document_of(self, indices_N: np.ndarray) -> np.ndarray:
        """int64 `[N]`: an id of the document in which each row's first id lies, unique
        across blocks (block j's documents are `j * DOCS_PER_BLOCK + 0, 1, ...`)."""
        idx = np.asarray(indices_N, dtype=np.int64).reshape(-1)
        out = np.empty(idx.size, np.int64)
        for n, i in enumerate(idx):
            j, k = divmod(int(i), self.rows_per_block)
            out[n] = j * self.DOCS_PER_BLOCK + int(self._block(j)["document"][k])
        return out

    def get(self, indices_N: np.ndarray) -> dict[str, np.ndarray]:
        idx = np.asarray(indices_N, dtype=np.int64).reshape(-1)
        out = {k: np.empty((idx.size, self.spec.seq_len), np.int32) for k in packing.FIELDS}
        for n, i in enumerate(idx):
            block = self._block(int(i) // self.rows_per_block)
            for k in packing.FIELDS:
                out[k][n] = block[k][int(i) % self.rows_per_block]
        return out


def make_rows(spec: LoaderSpec, tokenizer: Tokenizer, *, progress: bool = True
              ) -> PackedRows | SyntheticRows:
    """The row store of `spec` (`tokenizer`: the spec's tokenizer, built)."""
    packing.validate_special_ids(tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    if spec.source.startswith(PREPARED):
        raw, offsets = load_prepared(spec.source[len(PREPARED):], spec.split, tokenizer)
        if spec.max_documents is not None:
            offsets = offsets[: spec.max_documents + 1]
            raw = raw[: offsets[-1]]
        return PackedRows(raw, offsets, spec, tokenizer)
    src = get_source(spec.source)
    if isinstance(src, SyntheticSource):
        return SyntheticRows(src, tokenizer, spec)
    texts = src.documents(spec.split)
    if spec.max_documents is not None:
        texts = (t for _, t in zip(range(spec.max_documents), texts))
    raw, offsets = tokenize_documents(texts, tokenizer,
                                      desc=f"tokenising {spec.source} [{spec.split}]",
                                      progress=progress and sys.stderr.isatty())
    return PackedRows(raw, offsets, spec, tokenizer)
