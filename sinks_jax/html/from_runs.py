"""Page data from training runs: the records `sinks_jax.records.runs.load_run` reads from each
workdir (config.json, metrics.jsonl, sink_scores.npz), passed in by the `report` command.

Per run: the training loss per logged step; every held-out evaluation (loss, sink rates,
mean alpha_0, with `<bos>` and text only); the in-training per-(layer, head) statistics
(`sink_attn`: mean alpha_0 over the batch's queries; `noop_mass` where the variant has one)
and the held-out per-(layer, head) alpha_0 at each evaluation (`val_sink_scores_bos/nobos`);
and the final sink profile with its bootstrap intervals (views 1 and 3).
"""

from __future__ import annotations

import os
from typing import Any

LAYOUTS = {"bos": "with_bos", "nobos": "text_only"}  # the runs' set names -> the page's
EVAL_PREFIXES = ("val_loss", "val_sink_rate_", "val_sink_score_")
STEP_STATS = {  # per-(layer, head) statistics logged during training, [L, H] each
    "sink_attn": "mean alpha_0, training batch",
    "noop_mass": "no-op mass, training batch",
    "val_sink_scores_bos": "mean alpha_0, held-out, <bos>+text",
    "val_sink_scores_nobos": "mean alpha_0, held-out, text only",
}
CONFIG_ITEMS = (
    "seq_len", "num_steps", "tokens_per_step", "variant", "sweep_key", "seed", "model.num_layers",
    "model.d_model", "model.num_heads", "model.num_kv_heads", "model.attention",
    "model.attention_variant", "data.source", "data.tokenizer", "data.packing", "eval_sink_len",
    "eval_sink_sequences",
)  # fmt: skip


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every leaf of a nested dict."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_profile(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's final sink profile in the page's layout (None without sink_scores.npz)."""
    if not run.get("profile"):
        return None
    layouts = {}
    for name, per_eps in run["profile"].items():
        first = next(iter(per_eps.values()))
        keys = ("rate", "rate_low", "rate_high", "layer_rate", "layer_low", "layer_high",
                "head_rate", "head_low", "head_high")  # fmt: skip
        layouts[LAYOUTS.get(name, name)] = {
            "num_sequences": int(first["num_sequences"]),
            "head_score": first["head_score"],
            "score": first["score"],
            "score_low": first["score_low"],
            "score_high": first["score_high"],
            "eps": {eps: {k: prof[k] for k in keys} for eps, prof in per_eps.items()},
        }
    n = next(iter(layouts.values()))["num_sequences"]
    return {
        "name": run["name"],
        "layouts": layouts,
        "maps": {},
        "interval": "95 % percentile bootstrap over the held-out sequences (1000 resamples), "
        f"from sink_scores.npz ({n} sequences)",
    }


def run_series(run: dict[str, Any]) -> dict[str, Any]:
    """Loss, evaluations and per-(layer, head) statistics of one run against step."""
    records = run["records"]
    train = [r for r in records if "loss" in r]
    evals = run["evals"]
    eval_keys = sorted(
        {k for e in evals for k, v in e.items() if k.startswith(EVAL_PREFIXES) and not
         isinstance(v, list)}
    )  # fmt: skip
    stats = {}
    for key, label in STEP_STATS.items():
        rows = [r for r in records if isinstance(r.get(key), list)]
        if rows:
            stats[key] = {
                "label": label,
                "steps": [r["step"] for r in rows],
                "values": [r[key] for r in rows],
            }
    train_rates = sorted({k for r in records for k in r if k.startswith("sink_rate_")})
    return {
        "name": run["name"],
        "swept": run.get("swept"),
        "sweep_key": run.get("sweep_key"),
        "train": {"steps": [r["step"] for r in train], "loss": [r["loss"] for r in train]},
        "train_rates": {
            k: {
                "steps": [r["step"] for r in records if k in r],
                "values": [r[k] for r in records if k in r],
            }
            for k in train_rates
        },
        "evals": {
            "steps": [e["step"] for e in evals],
            **{k: [e.get(k) for e in evals] for k in eval_keys},
        },
        "step_stats": stats,
    }


def run_sources(workdir: str) -> list[str]:
    names = ("config.json", "metrics.jsonl", "summary.json", "sink_scores.npz")
    return [os.path.join(workdir, n) for n in names if os.path.isfile(os.path.join(workdir, n))]


def runs_page_data(
    runs: list[dict[str, Any]], workdirs: list[str], title: str, command: str | None = None
) -> dict[str, Any]:
    """The page data of a family of runs (`runs[i]` read from `workdirs[i]`)."""
    profiles = [p for p in (run_profile(r) for r in runs) if p is not None]
    settings = []
    for r in runs:
        flat = flatten(r["config"])
        items = {k: flat[k] for k in CONFIG_ITEMS if k in flat}
        if r.get("swept") is not None:
            items["swept value"] = r["swept"]
        final = r.get("final") or {}
        if "step" in final:
            items["last evaluation at step"] = final["step"]
        settings.append({"name": r["name"], "items": items, "details": {"config": flat}})
    return {
        "kind": "report",
        "title": title,
        "profiles": profiles,
        "runs": [run_series(r) for r in runs],
        "settings": settings,
        "sources": [p for w in workdirs for p in run_sources(w)],
        "notes": [],
        "command": command,
    }
