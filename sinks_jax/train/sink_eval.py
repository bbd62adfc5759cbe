"""The final sink evaluation of a run: per-sequence scores, bootstrap intervals, profiles.

    profiles = final_sink_profiles(score_fn, sink_sets, out_dir=workdir, window_loss=losses)

scores every held-out sequence set (`{"bos": tokens_NxT, "nobos": ...}`, see
`DataPipeline.sink_eval_sequences`, whose `"doc_ids"` names each window's document), writes
the scores to OUT_DIR/sink_scores.npz (one float32 `[L, N, H]` array per set, with the
windows' document ids and per-window losses, so that the intervals can be recomputed without
the model), and returns, per set and threshold, `analysis.sink_profile` as JSON-ready lists
with 95 % intervals over documents (over windows when the sets carry no document ids):
`{"bos": {"0.3": {"rate": .., "rate_low": .., "layer_rate": [..], "head_rate": [[..]], ...}}}`.
`sinks-jax report` reads the same file through `records.scores.profiles_from_scores`.

    loss = final_window_losses(losses, sink_sets)

is the held-out loss with `<bos>` and text only on the same targets, with intervals over
documents (paired for the difference), from each window's mean loss.

    spread = final_perturbation_spread(divergence_fn, sink_sets)

is the paper's first claim on the same held-out rows: how far a one-token change travels
through the layers, read with `<bos>` and without it (see the function).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from sinks_jax import analysis
from sinks_jax.records.scores import BOOTSTRAP_SEED, DOC_IDS, profiles_from_scores, save_scores


def _token_sets(sink_sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The token sets of `sink_sets` (everything but the document ids)."""
    return {name: t for name, t in sink_sets.items() if name != DOC_IDS}


def final_sink_profiles(
    score_fn: Callable[[np.ndarray], jax.Array],
    sink_sets: dict[str, np.ndarray],
    *,
    out_dir: str | None,
    num_resamples: int = 1000,
    window_loss: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, dict]]:
    """Score every set with `score_fn(tokens_NxT) -> [L, N, H]`, save the scores (with the
    windows' document ids and `window_loss`, `{set: [N]}`, when given) to
    `out_dir/sink_scores.npz` (skipped when `out_dir` is None, e.g. on non-main processes)
    and return their profiles (see the module docstring)."""
    doc_ids = sink_sets.get(DOC_IDS)
    scores = {
        name: np.asarray(jax.device_get(score_fn(t))) for name, t in _token_sets(sink_sets).items()
    }
    if out_dir is not None:
        save_scores(out_dir, scores, doc_ids=doc_ids, window_loss=window_loss)
    return profiles_from_scores(scores, num_resamples=num_resamples, doc_ids=doc_ids)


def final_window_losses(
    window_loss: dict[str, np.ndarray],
    sink_sets: dict[str, np.ndarray],
    num_resamples: int = 1000,
) -> dict:
    """JSON-ready `{"bos": [mean, low, high], "nobos": [...], "nobos_minus_bos": [...],
    "windows": N, "documents": G}`: the mean over windows of each window's mean next-token
    loss (nats; the windows all have the same number of targets, so this is the loss over
    all targets) with 95 % bootstrap intervals over documents (over windows without document
    ids), the difference paired (the same targets read two ways)."""
    doc_ids = sink_sets.get(DOC_IDS)
    key = jax.random.key(BOOTSTRAP_SEED)
    values_Nx3 = np.stack(
        [window_loss["bos"], window_loss["nobos"], window_loss["nobos"] - window_loss["bos"]],
        axis=1,
    ).astype(np.float64)
    mean, low, high = (np.asarray(x) for x in analysis.bootstrap_interval(
        values_Nx3, key, num_resamples, clusters=doc_ids))  # fmt: skip
    out = {name: [float(mean[i]), float(low[i]), float(high[i])]
           for i, name in enumerate(("bos", "nobos", "nobos_minus_bos"))}  # fmt: skip
    out["windows"] = int(values_Nx3.shape[0])
    out["documents"] = int(len(np.unique(doc_ids))) if doc_ids is not None else out["windows"]
    return out


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
    ..., "last_bos_minus_nobos": [mean, low, high]}` with 95 % bootstrap intervals over the
    rows' documents (over rows when `sink_sets` has no `"doc_ids"`; paired for the
    difference).
    """
    text_NxT = sink_sets["nobos"]
    N, T = text_NxT.shape
    p = T // 2
    new_N = np.roll(text_NxT[:, p], 1)
    keep = new_N != text_NxT[:, p]
    out: dict = {"position": p, "rows": int(keep.sum())}
    docs = sink_sets.get(DOC_IDS)
    docs = None if docs is None else np.asarray(docs)[keep]
    key = jax.random.key(BOOTSTRAP_SEED)
    per_row = {}
    for name, shift in (("bos", 1), ("nobos", 0)):  # "bos" rows are <bos> + text[:T-1].
        tokens = np.asarray(sink_sets[name])
        swapped = tokens.copy()
        swapped[:, p + shift] = new_N
        rel_Lp1xNxT = np.asarray(divergence_fn(tokens, swapped), np.float32)
        per_row[name] = rel_Lp1xNxT[:, keep, p + shift + 1 : T - 1 + shift].mean(axis=-1).T
        mean_Lp1, low, high = analysis.bootstrap_interval(
            per_row[name], key, num_resamples, clusters=docs
        )
        out[name] = {"layer": np.asarray(mean_Lp1).tolist(), "last": float(mean_Lp1[-1]),
                     "last_low": float(low[-1]), "last_high": float(high[-1])}  # fmt: skip
    diff_N = per_row["bos"][:, -1] - per_row["nobos"][:, -1]  # paired: the same rows.
    out["last_bos_minus_nobos"] = [
        float(x) for x in analysis.bootstrap_interval(diff_N, key, num_resamples, clusters=docs)
    ]
    return out
