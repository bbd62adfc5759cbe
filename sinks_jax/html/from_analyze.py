"""Page data from `sinks-jax analyze` outputs: report.json (and attention_maps.npz beside it).

Every rate and mean alpha_0 is copied from report.json (percentages divided by 100); the 95 %
intervals are not in report.json and are recomputed from its per-sequence scores
(`sink_score_per_sequence_LxNxH`) with `analysis.sink_profile`: a percentile bootstrap over
the sequences, 1000 resamples, PRNG key 0 (the same recipe as the training runs' profiles).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from sinks_jax.analysis.sinks import sink_profile
from sinks_jax.html.maps import DEFAULT_BUDGET_CHARS, embed_maps

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
INTERVAL_NOTE = (
    "95 % percentile bootstrap over the sequences ({n} resamples, PRNG key {seed}), "
    "recomputed from sink_score_per_sequence_LxNxH"
)
SETTING_KEYS = (
    "model", "tokenizer", "prompts", "num_prompts", "num_sequences", "seq_len", "eps", "short",
    "bos_id", "batch_size", "loss_file", "backend", "jax_version", "seconds",
)  # fmt: skip


def model_name(settings: dict[str, Any]) -> str:
    """A short name of the analysed model: the file or folder name of its path."""
    model = str(settings.get("model", "model"))
    path = model.split(":", 1)[-1].rstrip("/")
    return os.path.basename(path) or model


def layout_profile(res: dict[str, Any]) -> dict[str, Any]:
    """One layout's rates (from the JSON) and intervals (bootstrap of its per-sequence scores)."""
    scores_LxNxH = np.asarray(res["sink_score_per_sequence_LxNxH"], np.float32)
    key = jax.random.key(BOOTSTRAP_SEED)
    out: dict[str, Any] = {
        "num_sequences": res["num_sequences"],
        "head_score": res["sink_score_mean_LxH"],
        "eps": {},
    }
    for eps, rate in res["sink_rate_percent"].items():
        prof = {
            k: np.asarray(v).tolist()
            for k, v in sink_profile(
                scores_LxNxH, float(eps), key, num_resamples=BOOTSTRAP_RESAMPLES
            ).items()
        }
        out["eps"][eps] = {
            "rate": rate / 100,
            "rate_low": prof["rate_low"],
            "rate_high": prof["rate_high"],
            "layer_rate": [v / 100 for v in res["sink_rate_per_layer_percent"][eps]],
            "layer_low": prof["layer_low"],
            "layer_high": prof["layer_high"],
            "head_rate": [[v / 100 for v in row] for row in res["sink_rate_per_head_percent"][eps]],
            "head_low": prof["head_low"],
            "head_high": prof["head_high"],
        }
        out.update(score=prof["score"], score_low=prof["score_low"], score_high=prof["score_high"])
    return out


def _saved_maps(report: dict[str, Any], directory: str, sources: list[str]) -> dict[str, tuple]:
    """{layout: (maps [W, L, H, t, t], record)} from the report's attention_maps records."""
    out = {}
    for layout, res in report.get("sinks", {}).items():
        record = res.get("attention_maps")
        if not record or not record.get("windows"):
            continue
        path = os.path.join(directory, record["file"])
        if not os.path.isfile(path):
            continue
        with np.load(path) as f:
            if record["key"] not in f.files:
                continue
            out[layout] = (f[record["key"]], record)
        if path not in sources:
            sources.append(path)
    return out


def settings_block(report: dict[str, Any], name: str) -> dict[str, Any]:
    settings = report.get("settings", {})
    items = {k: settings[k] for k in SETTING_KEYS if k in settings}
    loss = report.get("bos_loss")
    if loss:
        items["loss <bos>+text / text only (nats)"] = (
            f"{loss['loss_with_bos']:.4f} / {loss['loss_text_only']:.4f} "
            f"({loss['targets']} targets)"
        )
    for lc in report.get("long_context", []):
        rates = ", ".join(f"eps {e}: {r:.2f} %" for e, r in lc["sink_rate_percent"].items())
        items[f"sink rate at T={lc['seq_len']} ({lc['backend']})"] = rates
    return {"name": name, "items": items, "details": {"model_config": settings.get("model_config")}}


def analyze_page_data(
    report_paths: list[str],
    command: str | None = None,
    map_budget_chars: int = DEFAULT_BUDGET_CHARS,
) -> dict[str, Any]:
    """The page data of one or more analyze reports (one profile per report)."""
    profiles, settings, sources, notes = [], [], [], []
    budget = map_budget_chars // max(len(report_paths), 1)
    for path in report_paths:
        with open(path) as f:
            report = json.load(f)
        sources.append(path)
        name = model_name(report.get("settings", {}))
        layouts = {k: layout_profile(v) for k, v in report.get("sinks", {}).items()}
        maps, map_notes = embed_maps(_saved_maps(report, os.path.dirname(path), sources), budget)
        notes += [f"{name}: {n}" for n in map_notes]
        settings.append(settings_block(report, name))
        if not layouts:  # --long-context-only: settings and long-context rates alone
            continue
        n = next(iter(layouts.values()))["num_sequences"]
        profiles.append(
            {
                "name": name,
                "layouts": layouts,
                "maps": maps,
                "interval": INTERVAL_NOTE.format(n=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
                + f" ({n} sequences)",
            }
        )
    names = ", ".join(s["name"] for s in settings)
    return {
        "kind": "analyze",
        "title": f"Attention sinks: {names}",
        "profiles": profiles,
        "settings": settings,
        "sources": sources,
        "notes": notes,
        "command": command,
    }
