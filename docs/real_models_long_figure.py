"""Sink rate and mean first-token score against context length, both GGUF models.

    python docs/real_models_long_figure.py results/real_models/long_context

Reads `DIR/smollm2_long.json` and `DIR/gemma3_long.json` (length -> `sinks-jax analyze
--long-context` settings and results), prints the Markdown rows of docs/real_models.md's
long-context table and draws `DIR/sink_rate_vs_context.png`.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

MODELS = {"smollm2": "SmolLM2-135M", "gemma3": "Gemma 3 270M"}


def load(root: str, name: str) -> list[dict]:
    """The long-context results of one model, by increasing length."""
    with open(os.path.join(root, f"{name}_long.json")) as f:
        runs = json.load(f)
    out = []
    for k in sorted(runs, key=int):
        r = runs[k]["long_context"]
        r = dict(r[0] if isinstance(r, list) else r)  # one length per analyze run.
        scores = [x for row in r["sink_scores_LxH"] for x in row]
        r["alpha0_mean"] = sum(scores) / len(scores)  # mean over layers and heads.
        out.append(r)
    return out


def rows(name: str, results: list[dict]) -> list[str]:
    out = []
    for r in results:
        compiled = r.get("seconds_compiled", r.get("seconds"))
        out.append(
            f"| {MODELS[name]} | {r['seq_len']:,} | {r['backend']} bf16 "
            f"| {r['sink_rate_percent']['0.3']:.1f} | {r['sink_rate_percent']['0.8']:.1f} "
            f"| {r['alpha0_mean']:.3f} | {compiled:.3f} "
            f"| {r['seconds_incl_compile']:.2f} | {r['peak_device_bytes'] / 2**30:.2f} GiB |"
        )
    return out


def main(root: str) -> None:
    fig = Figure(figsize=(9, 3.6))
    ax_rate, ax_score = fig.subplots(1, 2)
    for name, marker, color in zip(MODELS, "os", ("C0", "C1")):
        results = load(root, name)
        print("\n".join(rows(name, results)))
        t = [r["seq_len"] for r in results]
        for eps, style in (("0.3", "-"), ("0.8", ":")):
            ax_rate.plot(
                t,
                [r["sink_rate_percent"][eps] for r in results],
                style,
                marker=marker,
                color=color,
                label=f"{MODELS[name]}, eps {eps}",
            )
        ax_score.plot(
            t, [r["alpha0_mean"] for r in results], marker=marker, color=color, label=MODELS[name]
        )
    ax_rate.set(
        xscale="log",
        xlabel="context T (tokens, <bos> first)",
        ylabel="sink rate (%)",
        title="heads whose mean alpha_0 exceeds eps",
    )
    ax_score.set(
        xscale="log",
        xlabel="context T (tokens, <bos> first)",
        ylabel="mean alpha_0",
        title="mean attention to the first token",
    )
    for ax in (ax_rate, ax_score):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(root, "sink_rate_vs_context.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/real_models/long_context")
