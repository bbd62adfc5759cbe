"""The final sink scores of a run, on disk: OUT_DIR/sink_scores.npz holds one float32
`[L, N, H]` array per held-out set (`scores_bos`, `scores_nobos`), so that the bootstrap
intervals of the sink profile can be recomputed without the model (`profiles_from_scores`).
Runs since the intervals went over documents also keep, per window, the held-out document it
was cut from (`doc_ids`, int32 `[N]`) and its mean next-token loss in each set (`loss_bos`,
`loss_nobos`, float32 `[N]`, nats per target); `load_windows` reads them.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from sinks_jax import analysis

SCORES_FILE = "sink_scores.npz"
BOOTSTRAP_SEED = 0  # the resampling key: fixed, so reruns give the same intervals.
SINK_EPS = (0.3, 0.8)  # the sink-rate thresholds a run records (`sink_rate_0.3`, ...).
DOC_IDS = "doc_ids"  # [N] the held-out document of each window.
LOSS_PREFIX = "loss_"  # loss_{set}: [N] each window's mean next-token loss.


def save_scores(
    out_dir: str,
    scores: dict[str, np.ndarray],
    *,
    doc_ids: np.ndarray | None = None,
    window_loss: dict[str, np.ndarray] | None = None,
) -> None:
    """Write `{set: [L, N, H] scores}` to `out_dir/sink_scores.npz` (atomically), with the
    windows' document ids `[N]` and `{set: [N] mean loss per window}` when given."""
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, SCORES_FILE + ".tmp.npz")
    arrays = {f"scores_{k}": np.asarray(v).astype(np.float32) for k, v in scores.items()}
    if doc_ids is not None:
        arrays[DOC_IDS] = np.asarray(doc_ids).astype(np.int32)
    for k, v in (window_loss or {}).items():
        arrays[LOSS_PREFIX + k] = np.asarray(v).astype(np.float32)
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(out_dir, SCORES_FILE))


def load_scores(workdir: str) -> dict[str, np.ndarray] | None:
    """The scores `save_scores` wrote in `workdir`, or None if there are none."""
    path = os.path.join(workdir, SCORES_FILE)
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as f:
        return {k.removeprefix("scores_"): f[k] for k in f.files if k.startswith("scores_")}


def load_windows(workdir: str) -> dict:
    """`{"doc_ids": [N] or None, "loss": {set: [N]}}` from `workdir/sink_scores.npz` (None
    and {} for files written before these were kept, or when there is no file)."""
    path = os.path.join(workdir, SCORES_FILE)
    out: dict = {"doc_ids": None, "loss": {}}
    if os.path.isfile(path):
        with np.load(path, allow_pickle=False) as f:
            if DOC_IDS in f.files:
                out["doc_ids"] = f[DOC_IDS]
            out["loss"] = {k.removeprefix(LOSS_PREFIX): f[k] for k in f.files
                           if k.startswith(LOSS_PREFIX)}  # fmt: skip
    return out


def profiles_from_scores(
    scores: dict[str, np.ndarray],
    eps: tuple[float, ...] = SINK_EPS,
    num_resamples: int = 1000,
    doc_ids: np.ndarray | None = None,
) -> dict[str, dict[str, dict]]:
    """`{set: {str(eps): sink_profile as floats and nested lists}}` from `[L, N, H]` scores;
    intervals over documents when `doc_ids` (`[N]`) is given, else over windows."""
    key = jax.random.key(BOOTSTRAP_SEED)
    out: dict[str, dict[str, dict]] = {}
    for name, scores_LxNxH in scores.items():
        out[name] = {}
        for e in eps:
            prof = analysis.sink_profile(scores_LxNxH, e, key, num_resamples=num_resamples,
                                         clusters=doc_ids)  # fmt: skip
            out[name][str(e)] = {k: np.asarray(v).tolist() for k, v in prof.items()}
    return out
