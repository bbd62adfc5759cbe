"""Packing documents into fixed-length training rows: the paper's data-packing grid.

Every mode turns a list of tokenised documents into rows of `T = seq_len` positions and
returns five int32 `[N, T]` arrays:

- `tokens`      input ids;
- `targets`     the next token of the same row (`targets[:, t] == tokens[:, t + 1]` where
                both are real); a target never comes from another row;
- `segment_ids` attention structure: 0 is padding; with `intra_doc=True` the document
                pieces of a row are numbered 1, 2, ... in order; with `intra_doc=False`
                every real token has segment 1 (causal attention across documents, padding
                still masked);
- `positions`   position ids: `0..T-1` across the row (`reset_positions=False`) or
                restarting at every document piece (`reset_positions=True`); 0 on padding;
- `loss_mask`   1 where `targets` is a real next token to be learned, 0 on padding and,
                under `intra_doc=True`, on the position whose target is the first token of
                the next document (a query that cannot see that document cannot predict it).

Layouts (`D` = document tokens, `B` = `<bos>`, `E` = `<eos>`, `|` = a row boundary).
Each document first becomes a *unit*; units are concatenated into one stream; the stream is
cut into *windows*; a window of `T + 1` ids gives `tokens = window[:-1]` and
`targets = window[1:]`. Windows never overlap, so every stream id appears in exactly one
row (the last id of a window only as a target): nothing is dropped or duplicated.

- `none`       unit `B D E`; one unit per row, truncated to `T + 1` ids (the only mode that
               drops tokens: those past `T + 1`), padded after `E`. No packing.
- `concat`     unit `D E`; units concatenated, no `<bos>` anywhere; windows of `T + 1`
               consecutive stream ids. A document split across rows continues at the start
               of the next row.
- `concat_bos` unit `B D E`; otherwise as `concat`: `<bos>` at the start of every document,
               wherever it falls in the row.
- `fixed_bos`  unit `D E`; windows of `T` stream ids, each preceded by one `<bos>`, so every
               row is `B` at position 0 followed by `T - 1` input tokens (the row's last
               stream id is a target only). `<bos>` is not part of any document.

Only the last window of the stream is padded (except in `none`, where every row is).

Conventions for `fixed_bos` (the paper's fixed `<bos>`):
- The `<bos>` at position 0 shares segment id 1 with the first document piece of its row,
  so documents stay numbered 1, 2, ... With `intra_doc=True` the other pieces (segments 2,
  3, ...) see the `<bos>` only if the model makes key 0 visible to every query: train
  `fixed_bos` + `intra_doc` with the model's `global_first_key=True` (see
  `attention_mask_from_segments`).
- With `reset_positions=True` the `<bos>` has position 0 and every document piece starts at
  position 1, as if it directly followed the `<bos>` (the `<bos>`+text layout used at
  inference).
- The target of the `<bos>` (the row's first stream token) is always in the loss.

Why not grain's packers: `grain.experimental.ConcatThenSplitIterDataset` and
`FirstFitPackIterDataset` emit segment ids and positions, but they pack whole input elements
(inputs and targets made per document, so no target may cross a document boundary even in
the causal modes), they cannot insert a `<bos>` at position 0 without overwriting a token
(`BOSHandling.REPLACE_FIRST_TOKEN_WITH_BOS` drops it), first-fit reorders documents, and
both are sequential iterators, whereas this module is a pure vectorised function of
`(stream, row index)`: any row can be rebuilt from the token stream in O(T), which is what
makes the loader's random access, host sharding and exact resume trivial. The loader reads
through grain (`MapDataset` shuffle/repeat/batch/slice and threaded prefetch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MODES = ("none", "concat", "concat_bos", "fixed_bos")
FIELDS = ("tokens", "targets", "segment_ids", "positions", "loss_mask")


def check_mode(mode: str) -> None:
    """Raise a ValueError naming the choices if `mode` is not a packing mode."""
    if mode not in MODES:
        raise ValueError(f"packing mode {mode!r} is unknown; choose one of {list(MODES)}.")


def document_unit_has_bos(mode: str) -> bool:
    """Whether each document unit starts with `<bos>` in this mode (`none`, `concat_bos`)."""
    check_mode(mode)
    return mode in ("none", "concat_bos")


def build_stream(
    documents: Iterable[Sequence[int]], mode: str, bos_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the document units of `mode` into one stream.

    Returns `(stream_L, doc_starts_Dp1)`: int32 ids `[L]` and int64 offsets `[D + 1]`, where
    unit `d` is `stream_L[doc_starts_Dp1[d]:doc_starts_Dp1[d + 1]]`.
    """
    arrays = [np.asarray(doc, dtype=np.int64).reshape(-1) for doc in documents]
    for i, arr in enumerate(arrays):
        if arr.size and arr.min() < 0:
            raise ValueError(f"document {i} holds a negative token id {int(arr.min())}; "
                             "token ids must be >= 0.")
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    raw = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    return units_from_raw(raw, offsets, mode, bos_id, eos_id)


def units_from_raw(
    raw_L: np.ndarray, offsets_Dp1: np.ndarray, mode: str, bos_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Add the mode's `<bos>`/`<eos>` to tokenised documents stored back to back.

    `raw_L` holds the documents' ids without specials; document `d` is
    `raw_L[offsets_Dp1[d]:offsets_Dp1[d + 1]]`. Returns `(stream_L, doc_starts_Dp1)` as
    `build_stream` does (vectorised: no Python loop over documents).
    """
    lead = 1 if document_unit_has_bos(mode) else 0
    offsets_Dp1 = np.asarray(offsets_Dp1, dtype=np.int64)
    lengths_D = np.diff(offsets_Dp1)
    num_docs = lengths_D.size
    doc_starts = np.zeros(num_docs + 1, dtype=np.int64)
    np.cumsum(lengths_D + lead + 1, out=doc_starts[1:])
    stream = np.empty(int(doc_starts[-1]), dtype=np.int32)
    doc_of_raw = np.repeat(np.arange(num_docs, dtype=np.int64), lengths_D)
    raw_index = np.arange(offsets_Dp1[-1] - offsets_Dp1[0], dtype=np.int64)
    stream[raw_index + doc_of_raw * (lead + 1) + lead] = raw_L[offsets_Dp1[0]:offsets_Dp1[-1]]
    if lead:
        stream[doc_starts[:-1]] = bos_id
    stream[doc_starts[1:] - 1] = eos_id
    return stream, doc_starts


def row_spans(doc_starts_Dp1: np.ndarray, mode: str, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each row's window lies in the stream: `(starts_N, lengths_N)`, int64.

    A window holds `T + 1` stream ids (`T` for `fixed_bos`, whose row adds the `<bos>`);
    a length below that means the rest of the row is padding.
    """
    check_mode(mode)
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} is too short; use seq_len >= 2.")
    total = int(doc_starts_Dp1[-1])
    if mode == "none":
        starts = doc_starts_Dp1[:-1].astype(np.int64)
        lengths = np.minimum(np.diff(doc_starts_Dp1), seq_len + 1)
        return starts, lengths.astype(np.int64)
    window = seq_len if mode == "fixed_bos" else seq_len + 1
    starts = np.arange(0, total, window, dtype=np.int64)
    return starts, np.minimum(window, total - starts)


def build_rows(
    stream_L: np.ndarray,
    doc_starts_Dp1: np.ndarray,
    starts_N: np.ndarray,
    lengths_N: np.ndarray,
    *,
    seq_len: int,
    mode: str,
    intra_doc: bool,
    reset_positions: bool,
    bos_id: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """Build the rows whose windows are `(starts_N, lengths_N)`; see the module docstring.

    Pure and vectorised: the loader calls it for one batch of row indices at a time.
    Returns a dict of int32 `[N, T]` arrays with the keys of `FIELDS`.
    """
    check_mode(mode)
    n, t_len = len(starts_N), seq_len
    prefix = 1 if mode == "fixed_bos" else 0
    width = t_len + 1 - prefix
    off_W = np.arange(width, dtype=np.int64)
    idx_NxW = starts_N[:, None] + off_W[None, :]
    real_NxW = off_W[None, :] < lengths_N[:, None]
    idx_NxW = np.where(real_NxW, idx_NxW, 0)
    ids_NxW = np.where(real_NxW, stream_L[idx_NxW] if stream_L.size else 0, pad_id)
    # Document of every window id (-1 on padding).
    doc_NxW = np.where(real_NxW, np.searchsorted(doc_starts_Dp1, idx_NxW, side="right") - 1, -1)
    if prefix:
        # The fixed <bos> joins the row's first document piece (shared segment id 1).
        ids_NxW = np.concatenate([np.full((n, 1), bos_id), ids_NxW], axis=1)
        doc_NxW = np.concatenate([doc_NxW[:, :1], doc_NxW], axis=1)
    tok_doc_NxT, tgt_doc_NxT = doc_NxW[:, :-1], doc_NxW[:, 1:]
    tok_real_NxT, tgt_real_NxT = tok_doc_NxT >= 0, tgt_doc_NxT >= 0

    t_T = np.arange(t_len, dtype=np.int64)
    first_NxT = np.ones((n, t_len), dtype=bool)
    first_NxT[:, 1:] = tok_doc_NxT[:, 1:] != tok_doc_NxT[:, :-1]
    new_seg_NxT = first_NxT & tok_real_NxT
    seg_NxT = np.cumsum(new_seg_NxT, axis=1) * tok_real_NxT
    seg_start_NxT = np.maximum.accumulate(np.where(new_seg_NxT, t_T[None, :], 0), axis=1)

    if reset_positions:
        pos_NxT = t_T[None, :] - seg_start_NxT
        if prefix:  # pieces after the first start at 1, as if right after the <bos>
            pos_NxT = pos_NxT + (seg_NxT > 1)
    else:
        pos_NxT = np.broadcast_to(t_T[None, :], (n, t_len))
    pos_NxT = np.where(tok_real_NxT, pos_NxT, 0)

    loss_NxT = tok_real_NxT & tgt_real_NxT
    if intra_doc:
        loss_NxT &= tok_doc_NxT == tgt_doc_NxT
    segment_ids = seg_NxT if intra_doc else tok_real_NxT
    return {
        "tokens": ids_NxW[:, :-1].astype(np.int32),
        "targets": ids_NxW[:, 1:].astype(np.int32),
        "segment_ids": np.asarray(segment_ids, dtype=np.int32),
        "positions": np.ascontiguousarray(pos_NxT, dtype=np.int32),
        "loss_mask": loss_NxT.astype(np.int32),
    }


def validate_special_ids(bos_id: int, eos_id: int, pad_id: int) -> None:
    """Raise a ValueError if a special id is not a non-negative integer."""
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}={value!r} must be a non-negative integer token id.")


def pack_documents(
    documents: Iterable[Sequence[int]],
    seq_len: int,
    mode: str,
    intra_doc: bool = False,
    reset_positions: bool = False,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
    """Pack tokenised documents into rows of `seq_len` (the paper's packing grid).

    Args:
      documents: iterable of token-id sequences (no `<bos>`/`<eos>`: the mode adds them).
      seq_len: `T`, positions per row.
      mode: one of `none`, `concat`, `concat_bos`, `fixed_bos` (layouts: module docstring).
      intra_doc: number document pieces 1, 2, ... in `segment_ids` (attention within a
        document only) and drop the cross-document target from the loss; otherwise every
        real token has segment 1 (causal across documents).
      reset_positions: restart `positions` at each document piece instead of `0..T-1`.
      bos_id, eos_id, pad_id: special ids.

    Returns:
      dict of int32 `[N, T]` arrays `tokens`, `targets`, `segment_ids`, `positions`,
      `loss_mask`, rows in stream order.
    """
    validate_special_ids(bos_id, eos_id, pad_id)
    stream_L, doc_starts = build_stream(documents, mode, bos_id, eos_id)
    starts_N, lengths_N = row_spans(doc_starts, mode, seq_len)
    return build_rows(stream_L, doc_starts, starts_N, lengths_N, seq_len=seq_len, mode=mode,
                      intra_doc=intra_doc, reset_positions=reset_positions, bos_id=bos_id,
                      pad_id=pad_id)


def attention_mask_from_segments(segment_ids_BxT: np.ndarray, global_first_key: bool = False) -> np.ndarray:
    """Reference attention mask `[B, T, T]` (bool, `[b, query, key]`) from segment ids.

    A query sees a key when the key is not later (causal) and both have the same segment id;
    with `global_first_key=True` key 0 is also visible to every query (the fixed `<bos>`
    under intra-document masking). Padding queries (segment 0) see earlier padding keys
    (and key 0 under `global_first_key`), so no row of the mask is empty; real queries
    never see padding. The model applies the same rule (`sinks_jax.model.attention.visible_mask`,
    without a window); data does not import the model, so a test checks the two agree.
    """
    seg_BxT = np.asarray(segment_ids_BxT)
    t_len = seg_BxT.shape[-1]
    causal_TxT = np.tril(np.ones((t_len, t_len), dtype=bool))
    mask_BxTxT = (seg_BxT[:, :, None] == seg_BxT[:, None, :]) & causal_TxT[None]
    if global_first_key:
        mask_BxTxT[:, :, 0] = True
    return mask_BxTxT
