"""The final sink evaluation of a run: per-sequence scores, bootstrap intervals, profiles.

    profiles = final_sink_profiles(score_fn, sink_sets, out_dir=workdir)

scores every held-out sequence set (`{"bos": tokens_NxT, "nobos": ...}`, see
`DataPipeline.sink_eval_sequences`), writes the scores to OUT_DIR/sink_scores.npz (one
float32 `[L, N, H]` array per set, so that the intervals can be recomputed without the
model), and returns, per set and threshold, `analysis.sink_profile` as JSON-ready lists:
`{"bos": {"0.3": {"rate": .., "rate_low": .., "layer_rate": [..], "head_rate": [[..]], ...}}}`.
`sinks-jax report` reads the same file through `profiles_from_scores`.

    spread = final_perturbation_spread(divergence_fn, sink_sets)

is the paper's first claim on the same held-out rows: how far a one-token change travels
through the layers, read with `<bos>` and without it (see the function).
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


def final_perturbation_spread(
    divergence_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    sink_sets: dict[str, np.ndarray],
    num_resamples: int = 1000,
) -> dict:
    """One text token, the middle one (text position p = T // 2), swapped in every held-out
    row for the token at the same position of the next row (a real token of the corpus; rows
    where the two agree are left out), read with `<bos>` ("bos") and without it ("nobos").

    `divergence_fn(tokens_NxT, swapped_NxT) -> [L+1, N, T]` relative divergence of the residual
    stream (`step.spread_eval`). The spread is its mean over the text tokens after the swap
    that both reads hold (text positions p+1 .. T-2: the change reaches them only through
    attention), per row and layer. Returns JSON-ready `{"position": p, "rows": n, "bos":
    {"layer": [L+1] mean over rows, "last": .., "last_low": .., "last_high": ..}, "nobos":
    ..., "last_bos_minus_nobos": [mean, low, high]}` with 95 % bootstrap intervals over rows
    (paired for the difference).
    """
    text_NxT = sink_sets["nobos"]
    N, T = text_NxT.shape
    p = T // 2
    new_N = np.roll(text_NxT[:, p], 1)
    keep = new_N != text_NxT[:, p]
    out: dict = {"position": p, "rows": int(keep.sum())}
    key = jax.random.key(BOOTSTRAP_SEED)
    per_row = {}
    for name, shift in (("bos", 1), ("nobos", 0)):  # "bos" rows are <bos> + text[:T-1].
        tokens = np.asarray(sink_sets[name])
        swapped = tokens.copy()
        swapped[:, p + shift] = new_N
        rel_Lp1xNxT = np.asarray(divergence_fn(tokens, swapped), np.float32)
        per_row[name] = rel_Lp1xNxT[:, keep, p + shift + 1 : T - 1 + shift].mean(axis=-1).T
        mean_Lp1, low, high = analysis.bootstrap_interval(per_row[name], key, num_resamples)
        out[name] = {"layer": np.asarray(mean_Lp1).tolist(), "last": float(mean_Lp1[-1]),
                     "last_low": float(low[-1]), "last_high": float(high[-1])}  # fmt: skip
    diff_N = per_row["bos"][:, -1] - per_row["nobos"][:, -1]  # paired: the same rows.
    out["last_bos_minus_nobos"] = [
        float(x) for x in analysis.bootstrap_interval(diff_N, key, num_resamples)
    ]
    return out
