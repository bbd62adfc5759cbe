"""Per-head attention maps of a few windows, saved beside report.json for the report page.

`attention_maps` runs the first `num_windows` windows of a layout whose first `t` tokens are
all real (no padding) through the same parameters under the explicit XLA backend in float32,
and returns their full maps cropped to the first `t = min(T, max_tokens)` tokens. Causal
attention makes the crop exact: the queries 0..t-1 see only the keys 0..t-1, so their rows
are the same whether or not the later tokens are there. The maps are stored as float16
(`attention_maps.npz`, key `<layout>_WxLxHxTxT`); report.json records which windows they are
and their decoded tokens.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax.model import Transformer
from sinks_jax.model.surgery import with_backend

MAPS_FILE = "attention_maps.npz"


@nnx.jit
def _probs(model: Transformer, tokens_BxT: jnp.ndarray) -> jnp.ndarray:
    return model(tokens_BxT, collect=("attn_probs",))[1]["attn_probs"]  # [L, B, H, T, T]


def attention_maps(
    model: Transformer,
    tok: Any,
    tokens_NxT: np.ndarray,
    valid_NxT: np.ndarray,
    num_windows: int,
    max_tokens: int,
    layout: str,
    bos: bool,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(maps `[W, L, H, t, t]` float16 or None, their record for report.json)."""
    T = tokens_NxT.shape[1]
    t = min(T, max_tokens)
    full = np.flatnonzero(np.asarray(valid_NxT)[:, :t].all(axis=1))
    windows = [int(i) for i in full[:num_windows]]
    record: dict[str, Any] = {
        "file": MAPS_FILE,
        "key": f"{layout}_WxLxHxTxT",
        "windows": windows,  # rows of this layout's sequences (kept_prompt_indices order)
        "num_tokens": t,
        "seq_len": T,
        "crop": f"first {t} of {T} tokens (exact under causal attention)" if t < T else "none",
        "compute": "attention=xla, dtype=float32; stored as float16",
    }
    if not windows:
        return None, record
    xla_model = with_backend(model, "xla", "float32")
    rows_WxT = np.asarray(tokens_NxT)[windows, :t]
    probs_LxWxHxTxT = np.asarray(_probs(xla_model, jnp.asarray(rows_WxT, jnp.int32)))
    record["token_ids_WxT"] = rows_WxT.tolist()
    record["token_labels_WxT"] = [
        [("<bos>" if bos and j == 0 else tok.decode([int(x)])) for j, x in enumerate(row)]
        for row in rows_WxT
    ]
    return np.moveaxis(probs_LxWxHxTxT, 1, 0).astype(np.float16), record


def save_maps(out_dir: str, maps: dict[str, np.ndarray]) -> str | None:
    """Writes `attention_maps.npz` (one array per layout); returns its path, None if empty."""
    arrays = {f"{layout}_WxLxHxTxT": m for layout, m in maps.items() if m is not None}
    if not arrays:
        return None
    path = os.path.join(out_dir, MAPS_FILE)
    np.savez_compressed(path, **arrays)
    return path
