"""The training run's view of `sinks_jax.data`: train batches, validation batches, and the
held-out sequences for sink evaluation (with and without `<bos>`).

Train batches are stacked micro-batches `[k, B_micro_local, T]` (k = gradient-accumulation
steps); the loader's iterator state is the checkpointed data state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from sinks_jax import analysis
from sinks_jax.data.loader import LoaderSpec, make_loader
from sinks_jax.data.tokenizers import get_tokenizer
from sinks_jax.pretrained import gguf  # noqa: F401  (registers the `gguf:` tokenizer kind)


class DataPipeline:
    """Loaders built from `config.data` for one run (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, *, micro_batch: int, accumulation: int):
        d = config.data
        self.config, self.micro_batch, self.accumulation = config, micro_batch, accumulation
        self.tokenizer = get_tokenizer(d.tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        self.spec = LoaderSpec(
            source=d.source,
            tokenizer=self.tokenizer,
            seq_len=config.seq_len,
            batch_size=micro_batch,
            packing=d.packing,
            intra_doc=bool(d.intra_doc),
            reset_positions=bool(d.reset_positions),
            seed=config.seed,
            split="train",
        )
        self.train = make_loader(self.spec)

    def next_train(self) -> dict[str, np.ndarray]:
        """This process's rows of the next optimizer step: int32 `[k, B_micro_local, T]`."""
        micro = [next(self.train) for _ in range(self.accumulation)]
        return {k: np.stack([m[k] for m in micro]) for k in micro[0]}

    def get_state(self) -> dict[str, Any]:
        return self.train.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.train.set_state(state)

    def validation_batches(self, num_batches: int) -> list[dict[str, np.ndarray]]:
        """A fixed list of up to `num_batches` held-out batches `[B_micro_local, T]`."""
        loader = make_loader(self.spec, split="valid", progress=False)
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) >= num_batches:
                break
        if not out:
            raise ValueError(f"source {self.config.data.source!r} has no validation batches.")
        return out

    def sink_eval_sequences(self, num: int, length: int = 64) -> dict[str, np.ndarray]:
        """Held-out sequences of `length` tokens: `{"bos": [N, T], "nobos": [N, T],
        "doc_ids": [N]}`.

        Each sequence is a piece of one held-out document: its first `T` tokens
        (`config.eval_sink_windows=False`, the literature's convention; at most one per
        document) or `T` consecutive tokens anywhere in it (`eval_sink_windows=True`: windows
        drawn at random, with a fixed seed, from every document of the split, so that a small
        held-out set still yields hundreds of sequences, the same ones for every run).
        "nobos" is the piece; "bos" is `<bos>` followed by its first `T - 1` tokens;
        "doc_ids" is the held-out document each piece was cut from (its index in the split),
        so that intervals can resample documents. Same rows on every process (they are small
        and replicated).
        """
        if self.config.get("eval_sink_windows", False):
            rows, docs = self._document_windows(num, length)
        else:
            rows, docs = self._document_starts(num, length)
        if not rows:
            raise ValueError(
                f"no held-out document of source {self.config.data.source!r} has {length} tokens; "
                "sink evaluation needs longer documents (set eval_sink_len lower)."
            )
        text_NxT = np.stack(rows[:num]).astype(np.int32)
        with_bos_NxT, _ = analysis.bos_layouts(text_NxT, self.tokenizer.bos_id)
        return {"bos": np.asarray(with_bos_NxT), "nobos": text_NxT,
                "doc_ids": np.asarray(docs[:num], np.int64)}  # fmt: skip

    def _held_out_loader(self, length: int, batch_size: int, packing: str, shuffle: bool,
                         seed: int):
        spec = dataclasses.replace(
            self.spec,
            seq_len=length,
            batch_size=batch_size,
            packing=packing,
            intra_doc=True,
            reset_positions=False,
            seed=seed,
            split="valid",
            shuffle=shuffle,
        )
        return make_loader(spec, process_index=0, process_count=1, progress=False)

    def _document_starts(self, num: int, length: int) -> tuple[list[np.ndarray], list[int]]:
        """The first `length` tokens of held-out documents that have that many, and the
        documents' indices."""
        tok = self.tokenizer
        loader = self._held_out_loader(length + 1, num, "none", False, self.config.seed + 1)
        rows: list[np.ndarray] = []
        docs: list[int] = []
        for k, batch in zip(range(64), loader):
            body = batch["tokens"][:, 1:]  # [bos, d0, d1, ...] then eos and padding.
            full = np.all(
                (body != tok.eos_id) & (body != tok.pad_id) & (batch["segment_ids"][:, 1:] > 0),
                axis=1,
            )
            rows += list(body[full])
            docs += loader.rows.document_of(loader.batch_rows(k))[full].tolist()
            if len(rows) >= num:
                break
        return rows, docs

    def _document_windows(self, num: int, length: int) -> tuple[list[np.ndarray], list[int]]:
        """`length` consecutive tokens of one held-out document, windows in random order, and
        each window's document (index in the split)."""
        loader = self._held_out_loader(length, num, "concat", True, seed=0)
        rows: list[np.ndarray] = []
        docs: list[int] = []
        for k, batch in zip(range(64), loader):
            # Under intra-document numbering a row inside one document has segment 1 only;
            # the document's closing <eos> is not text.
            inside = np.all(batch["segment_ids"] == 1, axis=1) & np.all(
                batch["tokens"] != self.tokenizer.eos_id, axis=1
            )
            rows += list(batch["tokens"][inside])
            docs += loader.rows.document_of(loader.batch_rows(k))[inside].tolist()
            if len(rows) >= num:
                break
        return rows, docs
