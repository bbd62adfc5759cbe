"""Attention maps in the page: float16 lower triangles in base64, within a size budget.

A causal map `[t, t]` is zero above its diagonal, so only the lower triangle is stored, row by
row (query i holds keys 0..i): `t (t + 1) / 2` float16 values per head, little-endian, heads
in (layer, head) order, one base64 string per window. The page decodes them in JavaScript.

Budget: every layout gets at least its first window; when even that does not fit, the maps
are cropped to their first t' tokens (exact under causal attention, as analyze's own crop).
Further windows are added, one per layout in turn, while the budget lasts. `notes` says what
was cropped or left out.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

DEFAULT_BUDGET_CHARS = 6_000_000  # base64 characters of all maps in one page


def triangle_size(t: int) -> int:
    return t * (t + 1) // 2


def encoded_chars(num_heads_total: int, t: int) -> int:
    """Base64 characters of one window of `num_heads_total` maps of `t` tokens."""
    raw = 2 * num_heads_total * triangle_size(t)
    return 4 * ((raw + 2) // 3)


def encode_window(maps_LxHxTxT: np.ndarray) -> str:
    """Base64 of the float16 lower triangles of one window's maps."""
    t = maps_LxHxTxT.shape[-1]
    rows, cols = np.tril_indices(t)
    tri = np.asarray(maps_LxHxTxT, np.float16)[..., rows, cols]
    return base64.b64encode(tri.astype("<f2").tobytes()).decode("ascii")


def decode_window(text: str, num_layers: int, num_heads: int, t: int) -> np.ndarray:
    """`[L, H, t, t]` float32 from `encode_window`'s text (zeros above the diagonal)."""
    tri = np.frombuffer(base64.b64decode(text), "<f2").reshape(num_layers, num_heads, -1)
    out = np.zeros((num_layers, num_heads, t, t), np.float32)
    rows, cols = np.tril_indices(t)
    out[..., rows, cols] = tri
    return out


def embed_maps(
    saved: dict[str, tuple[np.ndarray, dict[str, Any]]],
    budget_chars: int = DEFAULT_BUDGET_CHARS,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Page maps per layout from `{layout: (maps [W, L, H, t, t], analyze's record)}`."""
    saved = {k: v for k, v in saved.items() if v[0] is not None and v[0].shape[0] > 0}
    if not saved:
        return {}, []
    notes = []
    shapes = {k: m.shape for k, (m, _) in saved.items()}
    heads = {k: s[1] * s[2] for k, s in shapes.items()}
    t = max(s[-1] for s in shapes.values())
    while t > 2 and sum(encoded_chars(heads[k], min(t, s[-1])) for k, s in shapes.items()) > (
        budget_chars
    ):
        t -= 1
    out: dict[str, dict[str, Any]] = {}
    for layout, (maps, record) in saved.items():
        tt = min(t, maps.shape[-1])
        if tt < maps.shape[-1]:
            notes.append(
                f"{layout}: attention maps cropped to the first {tt} of {maps.shape[-1]} saved "
                f"tokens to fit the page (exact under causal attention)."
            )
        out[layout] = {
            "t": tt,
            "L": int(maps.shape[1]),
            "H": int(maps.shape[2]),
            "windows": [],
            "labels": [],
            "data": [],
            "saved_tokens": int(maps.shape[-1]),
            "seq_len": record.get("seq_len"),
            "crop": record.get("crop"),
            "compute": record.get("compute"),
        }
    used = 0
    for w in range(max(m.shape[0] for m, _ in saved.values())):
        for layout, (maps, record) in saved.items():
            page = out[layout]
            if w >= maps.shape[0]:
                continue
            cost = encoded_chars(heads[layout], page["t"])
            if w > 0 and used + cost > budget_chars:
                continue
            used += cost
            tt = page["t"]
            page["windows"].append(int(record["windows"][w]))
            page["labels"].append(list(record["token_labels_WxT"][w][:tt]))
            page["data"].append(encode_window(maps[w, :, :, :tt, :tt]))
    for layout, (maps, _) in saved.items():
        left = maps.shape[0] - len(out[layout]["windows"])
        if left:
            notes.append(
                f"{layout}: {left} of {maps.shape[0]} saved windows' maps left out of the page "
                f"(size budget {budget_chars / 1e6:.1f} M characters); they are in the .npz."
            )
    return out, notes
