"""A training run as a record: its config, metrics, last evaluation, swept value and final sink
profile (bootstrap intervals recomputed from sink_scores.npz, `records.scores`), read from its
workdir."""

from __future__ import annotations

import json
import os
from typing import Any

from sinks_jax.records import scores as scores_lib


def _dotted(d: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def load_run(workdir: str) -> dict[str, Any]:
    """{name, config, records (metrics.jsonl), final (last evaluation), swept}."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    records = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    evals = [r for r in records if "val_loss" in r]
    key = config.get("sweep_key") or ""
    scores = scores_lib.load_scores(workdir)
    return {
        "name": os.path.basename(os.path.normpath(workdir)),
        "config": config,
        "records": records,
        "evals": evals,
        "final": evals[-1] if evals else {},
        "sweep_key": key,
        "swept": _dotted(config, key) if key else None,
        "profile": (
            scores_lib.profiles_from_scores(
                scores, doc_ids=scores_lib.load_windows(workdir)["doc_ids"]
            )
            if scores is not None
            else {}
        ),
    }


def find_runs(directory: str) -> list[dict[str, Any]]:
    if os.path.exists(os.path.join(directory, "config.json")):
        return [load_run(directory)]
    runs = [
        load_run(os.path.join(directory, d))
        for d in sorted(os.listdir(directory))
        if os.path.exists(os.path.join(directory, d, "config.json"))
    ]

    def order(run):
        v = run["swept"]
        return (
            (0, v, "")
            if isinstance(v, (int, float))
            else (1, 0, str(v if v is not None else run["name"]))
        )

    return sorted(runs, key=order)


def sink_interval(run: dict[str, Any], column: str) -> tuple[float, float] | None:
    """The bootstrap interval of a table column (`val_sink_rate_EPS_SET`, `val_sink_score_SET`)
    from the run's final sink profile, or None."""
    parts = column.split("_")
    if column.startswith("val_sink_rate_"):
        prof = run["profile"].get(parts[-1], {}).get(parts[-2])
        return None if prof is None else (prof["rate_low"], prof["rate_high"])
    if column.startswith("val_sink_score_"):
        prof = next(iter(run["profile"].get(parts[-1], {}).values()), None)
        return None if prof is None else (prof["score_low"], prof["score_high"])
    return None


def eval_len(runs: list[dict[str, Any]]) -> str:
    """The sequence length of the held-out sink evaluation (`eval_sink_len`), e.g. "64"; runs
    trained at any context are evaluated at it."""
    lengths = sorted({str(r["config"].get("eval_sink_len", "?")) for r in runs})
    return "/".join(lengths)
