"""The final sink evaluation of a run: per-sequence scores, bootstrap intervals, profiles.

    profiles = final_sink_profiles(score_fn, sink_sets, out_dir=workdir)

scores every held-out sequence set (`{"bos": tokens_NxT, "nobos": ...}`, see
`DataPipeline.sink_eval_sequences`), writes the scores to OUT_DIR/sink_scores.npz (one
float32 `[L, N, H]` array per set, so that the intervals can be recomputed without the
model), and returns, per set and threshold, `analysis.sink_profile` as JSON-ready lists:
`{"bos": {"0.3": {"rate": .., "rate_low": .., "layer_rate": [..], "head_rate": [[..]], ...}}}`.
`sinks-jax report` reads the same file through `profiles_from_scores`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np

from sinks_jax import analysis
from sinks_jax.train.step import SINK_EPS

SCORES_FILE = "sink_scores.npz"
BOOTSTRAP_SEED = 0  # the resampling key: fixed, so reruns give the same intervals.


def profiles_from_scores(
    scores: dict[str, np.ndarray], eps: tuple[float, ...] = SINK_EPS, num_resamples: int = 1000
) -> dict[str, dict[str, dict]]:
    """`{set: {str(eps): sink_profile as floats and nested lists}}` from `[L, N, H]` scores."""
    key = jax.random.key(BOOTSTRAP_SEED)
    out: dict[str, dict[str, dict]] = {}
    for name, scores_LxNxH in scores.items():
        out[name] = {}
        for e in eps:
            prof = analysis.sink_profile(scores_LxNxH, e, key, num_resamples=num_resamples)
            out[name][str(e)] = {k: np.asarray(v).tolist() for k, v in prof.items()}
    return out


def load_scores(workdir: str) -> dict[str, np.ndarray] | None:
    """The scores `final_sink_profiles` wrote in `workdir`, or None if there are none."""
    path = os.path.join(workdir, SCORES_FILE)
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as f:
        return {k.removeprefix("scores_"): f[k] for k in f.files}


def final_sink_profiles(
    score_fn: Callable[[np.ndarray], jax.Array],
    sink_sets: dict[str, np.ndarray],
    *,
    out_dir: str | None,
    num_resamples: int = 1000,
) -> dict[str, dict[str, dict]]:
    """Score every set with `score_fn(tokens_NxT) -> [L, N, H]`, save the scores to
    `out_dir/sink_scores.npz` (skipped when `out_dir` is None, e.g. on non-main processes)
    and return their profiles (see the module docstring)."""
    scores = {name: np.asarray(jax.device_get(score_fn(t))) for name, t in sink_sets.items()}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, SCORES_FILE + ".tmp.npz")
        np.savez(tmp, **{f"scores_{k}": v.astype(np.float32) for k, v in scores.items()})
        os.replace(tmp, os.path.join(out_dir, SCORES_FILE))
    return profiles_from_scores(scores, num_resamples=num_resamples)
