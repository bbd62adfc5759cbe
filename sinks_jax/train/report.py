"""`sinks-jax report DIR`: the table and figures of a family of runs (or of one run).

DIR holds one training workdir per variant (as `sinks-jax sweep` writes them), or is itself a
workdir. Writes DIR/report.md (the table) and the figures:

    sink_rate_vs_step.png   held-out sink rate (eps 0.3) and mean first-token score alpha_0
                            (at the evaluation length eval_sink_len, default T = 64, with
                            <bos>) over training, per variant
    sink_rate_vs_<key>.png  final sink rate (eps 0.3 and 0.8; with and without <bos>) against
                            the swept value, with 95 % bootstrap intervals where known
    val_loss.png            validation loss over training, per variant
    sink_profile.png        per-layer sink rate (eps 0.3, <bos>) with 95 % intervals, and the
                            per-head rates, per variant (runs that finished with the
                            per-sequence scores of their final evaluation, sink_scores.npz)
    bos_loss_vs_<key>.png   final next-token loss on the same held-out targets with <bos>+text
                            and with text only (T = eval_sink_len), against the swept value
                            (paper Table 2)

Intervals are recomputed from each run's sink_scores.npz (`analysis.sink_profile`: a
percentile bootstrap over the held-out sequences); the table shows them as `rate [low, high]`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sinks_jax.plots.training import figures
from sinks_jax.train.runs import eval_len, find_runs, load_run, sink_interval

__all__ = ["COLUMNS", "eval_len", "figures", "find_runs", "load_run", "main", "table",
           "write_report"]

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


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown table: one row per run (its workdir name), the swept value when it says more
    than the name, then the final step's numbers (sink rates in percent)."""
    key = runs[0]["sweep_key"] if runs else ""
    swept = bool(key) and any(str(r["swept"]) != r["name"] for r in runs)
    head = ["run", *([key] if swept else []), "step", *[c[1] for c in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        f = r["final"]
        cells = [r["name"], *([str(r["swept"])] if swept else []), str(f.get("step", "-"))]
        for k, _ in COLUMNS:
            v = f.get(k)
            pct = k.startswith("val_sink_rate")
            cell = "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")
            interval = sink_interval(r, k)
            if v is not None and interval is not None:
                low, high = (100 * x if pct else x for x in interval)
                cell += f" [{low:.1f}, {high:.1f}]" if pct else f" [{low:.3f}, {high:.3f}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
