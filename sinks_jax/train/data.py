"""The training run's view of `sinks_jax.data`: train batches, validation batches, and the
held-out sequences for sink evaluation (with and without `<bos>`).

Train batches are stacked micro-batches `[k, B_micro_local, T]` (k = gradient-accumulation
steps); the loader's iterator state is the checkpointed data state.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from sinks_jax import analysis
from sinks_jax.data.loader import make_loader
from sinks_jax.data.tokenizers import get_tokenizer


class DataPipeline:
    """Loaders built from `config.data` for one run (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, *, micro_batch: int, accumulation: int):
        d = config.data
        self.config, self.micro_batch, self.accumulation = config, micro_batch, accumulation
        self.tokenizer = get_tokenizer(d.tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        self._common = {
            "source": d.source,
            "tokenizer": self.tokenizer,
            "packing": d.packing,
            "intra_doc": bool(d.intra_doc),
            "reset_positions": bool(d.reset_positions),
        }
        self.train = make_loader(
            **self._common,
            seq_len=config.seq_len,
            batch_size=micro_batch,
            seed=config.seed,
            split="train",
        )

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
        loader = make_loader(
            **self._common,
            seq_len=self.config.seq_len,
            batch_size=self.micro_batch,
            seed=self.config.seed,
            split="valid",
            progress=False,
        )
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) >= num_batches:
                break
        if not out:
            raise ValueError(f"source {self.config.data.source!r} has no validation batches.")
        return out

    def sink_eval_sequences(self, num: int, length: int = 64) -> dict[str, np.ndarray]:
        """Held-out documents cut to `length` tokens: `{"bos": [N, T], "nobos": [N, T]}`.

        "bos" is `<bos>` followed by the first `T - 1` tokens of a document; "nobos" is the
        first `T` tokens of the same document (documents shorter than `T` are skipped).
        Same rows on every process (they are small and replicated).
        """
        tok = self.tokenizer
        loader = make_loader(
            source=self.config.data.source,
            tokenizer=tok,
            seq_len=length + 1,
            batch_size=num,
            packing="none",
            intra_doc=False,
            reset_positions=False,
            seed=self.config.seed + 1,
            split="valid",
            process_index=0,
            process_count=1,
            progress=False,
        )
        rows: list[np.ndarray] = []
        for _, batch in zip(range(64), loader):
            tokens = batch["tokens"]  # [bos, d0, d1, ...] then eos and padding.
            body = tokens[:, 1 : length + 1]
            full = np.all(
                (body != tok.eos_id) & (body != tok.pad_id) & (batch["segment_ids"][:, 1:] > 0),
                axis=1,
            )
            rows += list(tokens[full])
            if len(rows) >= num:
                break
        if not rows:
            raise ValueError(
                f"no held-out document of source {self.config.data.source!r} has {length} tokens; "
                "sink evaluation needs longer documents (set eval_sink_len lower)."
            )
        text_NxT = np.stack(rows[:num]).astype(np.int32)[:, 1 : length + 1]
        with_bos_NxT, _ = analysis.bos_layouts(text_NxT, tok.bos_id)
        return {"bos": np.asarray(with_bos_NxT), "nobos": text_NxT}
