"""`sinks-jax report DIR`: the table and figures of a family of runs (or of one run).

DIR holds one training workdir per variant (as `sinks-jax sweep` writes them), or is itself a
workdir. Writes DIR/report.md (the table) and three figures:

    sink_rate_vs_step.png   held-out sink rate (eps 0.3) and mean first-token score alpha_0
                            (T = 64, with <bos>) over training, per variant
    sink_rate_vs_<key>.png  final sink rate (eps 0.3 and 0.8; with and without <bos>) against
                            the swept value
    val_loss.png            validation loss over training, per variant
    bos_loss_vs_<key>.png   final next-token loss on the same held-out targets with <bos>+text
                            and with text only (T = 64), against the swept value (paper Table 2)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

COLUMNS = (
    ("val_loss", "val loss"),
    ("val_loss_bos", "loss <bos>+text"),  # Table 2: the same held-out targets, with <bos> ...
    ("val_loss_nobos", "loss text only"),  # ... and without it.
    ("val_sink_rate_0.3_bos", "sink% eps.3 <bos>"),
    ("val_sink_rate_0.8_bos", "sink% eps.8 <bos>"),
    ("val_sink_rate_0.3_nobos", "sink% eps.3 no<bos>"),
    ("val_sink_rate_0.8_nobos", "sink% eps.8 no<bos>"),
    ("val_sink_score_bos", "alpha_0 <bos>"),
    ("val_sink_score_nobos", "alpha_0 no<bos>"),
)


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
    return {
        "name": os.path.basename(os.path.normpath(workdir)),
        "config": config,
        "records": records,
        "evals": evals,
        "final": evals[-1] if evals else {},
        "sweep_key": key,
        "swept": _dotted(config, key) if key else None,
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


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown table: one row per variant, sink rates in percent."""
    key = runs[0]["sweep_key"] if runs else ""
    head = ["variant", key or "-", "step", *[c[1] for c in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        f = r["final"]
        cells = [r["name"], str(r["swept"]), str(f.get("step", "-"))]
        for k, _ in COLUMNS:
            v = f.get(k)
            pct = k.startswith("val_sink_rate")
            cells.append("-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _swept_axis(ax, xs: list[Any]) -> None:
    """x axis of the swept values: log2 when numeric over a wide range, else named ticks."""
    if all(isinstance(x, (int, float)) for x in xs):
        if len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log", base=2)
    else:
        ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=30, ha="right")


def figures(runs: list[dict[str, Any]], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        steps = [e["step"] for e in r["evals"]]
        axes[0].plot(
            steps,
            [100 * e.get("val_sink_rate_0.3_bos", 0.0) for e in r["evals"]],
            marker="o",
            label=r["name"],
        )
        axes[1].plot(
            steps,
            [e.get("val_sink_score_bos", float("nan")) for e in r["evals"]],
            marker="o",
            label=r["name"],
        )
    axes[0].set(xlabel="training step", ylabel="sink rate % (eps=0.3, T=64, <bos>)", ylim=(-3, 103))
    axes[1].set(xlabel="training step", ylabel="mean alpha_0 (T=64, <bos>)", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("sink rate during training")
    axes[1].set_title("first-token sink score during training")
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "sink_rate_vs_step.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    key = runs[0]["sweep_key"] or "variant"
    xs = [r["swept"] if r["swept"] is not None else r["name"] for r in runs]
    numeric = all(isinstance(x, (int, float)) for x in xs)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    pos = xs if numeric else list(range(len(xs)))
    for k, label, style in (
        ("val_sink_rate_0.3_bos", "eps 0.3, <bos>", "o-"),
        ("val_sink_rate_0.8_bos", "eps 0.8, <bos>", "s-"),
        ("val_sink_rate_0.3_nobos", "eps 0.3, no <bos>", "o--"),
        ("val_sink_rate_0.8_nobos", "eps 0.8, no <bos>", "s--"),
    ):
        ax.plot(pos, [100 * r["final"].get(k, float("nan")) for r in runs], style, label=label)
    _swept_axis(ax, xs)
    ax.set(xlabel=key, ylabel="final sink rate %", title=f"final sink rate (T=64) vs {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"sink_rate_vs_{key.split('.')[-1]}.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if any("val_loss_bos" in r["final"] for r in runs):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for k, label, style in (
            ("val_loss_bos", "<bos> + text", "o-"),
            ("val_loss_nobos", "text only", "s--"),
        ):
            ax.plot(pos, [r["final"].get(k, float("nan")) for r in runs], style, label=label)
        _swept_axis(ax, xs)
        ax.set(
            xlabel=key,
            ylabel="loss (nats/token), same targets",
            title=f"final held-out loss with and without <bos> (T=64) vs {key}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"bos_loss_vs_{key.split('.')[-1]}.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in runs:
        ax.plot(
            [e["step"] for e in r["evals"]],
            [e["val_loss"] for e in r["evals"]],
            marker="o",
            label=r["name"],
        )
    ax.set(xlabel="training step", ylabel="validation loss (nats/token)", title="validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "val_loss.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def write_report(directory: str) -> tuple[str, list[str]]:
    """Write DIR/report.md and the figures; returns (table, figure paths)."""
    runs = find_runs(directory)
    if not runs:
        raise FileNotFoundError(f"{directory!r} holds no training workdir (no config.json found).")
    text = table(runs)
    paths = figures(runs, directory)
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write(
            text
            + "\n\n"
            + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in paths)
            + "\n"
        )
    return text, paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sinks-jax report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a sweep directory or one training workdir")
    args = parser.parse_args(argv)
    try:
        text, paths = write_report(args.directory)
    except FileNotFoundError as e:
        print(f"sinks-jax report: {e}", file=sys.stderr)
        return 2
    print(text)
    print("\nfigures:")
    for p in paths:
        print(f"  {p}")
    print(f"table: {os.path.join(args.directory, 'report.md')}")
    return 0
