"""`sinks-jax report DIR`: the table and figures of a family of runs (or of one run).

DIR holds one training workdir per variant (as `sinks-jax sweep` writes them), or is itself a
workdir. Prints a table that fits 100 columns (the losses and the sink rate at eps 0.3;
`--wide`: every column) under notes that say at which T each column is measured and what the
intervals are; writes DIR/report.md (the notes and every column) and the figures:

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

import os
import shlex
import sys
import textwrap
from typing import Any

from sinks_jax import cli_args
from sinks_jax.plots.training import figures
from sinks_jax.records.runs import eval_len, find_runs, load_run, sink_interval

__all__ = ["COLUMNS", "NARROW_COLUMNS", "eval_len", "figures", "find_runs", "load_run", "main",
           "notes", "table", "write_report"]

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


# The default table (fits 100 columns): the losses and the sink rate at eps 0.3.
NARROW_COLUMNS = (
    ("val_loss", "val loss"),
    ("val_loss_bos", "loss <bos>"),
    ("val_loss_nobos", "loss no<bos>"),
    ("val_sink_rate_0.3_bos", "sink% <bos>"),
    ("val_sink_rate_0.3_nobos", "sink% no<bos>"),
)


def _cell(run: dict[str, Any], key: str, wide: bool) -> str:
    """`value [low, high]` (sink rates in percent); "-" where the run has no such number."""
    v = run["final"].get(key)
    if v is None:
        return "-"
    pct = key.startswith("val_sink_rate")
    cell = f"{100 * v:.1f}" if pct else f"{v:.3f}"
    interval = sink_interval(run, key)
    if interval is not None:
        low, high = (100 * x if pct else x for x in interval)
        sep = ", " if wide else ","
        cell += f" [{low:.1f}{sep}{high:.1f}]" if pct else f" [{low:.3f}{sep}{high:.3f}]"
    return cell


def table(runs: list[dict[str, Any]], wide: bool = True) -> str:
    """Markdown table, columns aligned: one row per run (its workdir name), the swept value
    when it says more than the name, then the final evaluation's numbers (sink rates in
    percent). `wide`: every column of COLUMNS; otherwise NARROW_COLUMNS, and the step only
    where the runs stopped at different steps (`notes` names it)."""
    key = runs[0]["sweep_key"] if runs else ""
    swept = bool(key) and any(str(r["swept"]) != r["name"] for r in runs)
    columns = COLUMNS if wide else NARROW_COLUMNS
    show_step = wide or len({r["final"].get("step") for r in runs}) > 1
    head = ["run", *([key] if swept else []), *(["step"] if show_step else [])]
    head += [c[1] for c in columns]
    rows = []
    for r in runs:
        cells = [r["name"], *([str(r["swept"])] if swept else [])]
        cells += [str(r["final"].get("step", "-"))] if show_step else []
        rows.append(cells + [_cell(r, k, wide) for k, _ in columns])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    numeric = [i > 0 for i in range(len(head))]  # numbers right-aligned, names left

    def line(cells):
        padded = (c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1)) + (":" if num else "-")
                          for w, num in zip(widths, numeric)) + "|"  # fmt: skip
    return "\n".join([line(head), rule, *(line(row) for row in rows)])


def notes(runs: list[dict[str, Any]], wide: bool = True) -> str:
    """The lines above the table: the step, the lengths each column is measured at, what the
    sink columns count and what the intervals are."""
    steps = sorted({r["final"]["step"] for r in runs if "step" in r["final"]})
    at = f" (step {steps[0]})" if len(steps) == 1 else ""
    trained = sorted({str(r["config"].get("seq_len", "?")) for r in runs}, key=_natural)
    parts = [
        f"Final evaluation of each run{at}. val loss: held-out loss at the training length "
        f"T = {'/'.join(trained)} (seq_len); every other column at T = {eval_len(runs)} "
        "(eval_sink_len), on rows that start with <bos> and on the same text without it "
        "(no<bos>).",
        "sink%: heads whose mean attention to the first token is at least eps"
        + (" (eps 0.3 here; --wide adds eps 0.8 and alpha_0, the mean score)." if not wide
           else "; alpha_0: that mean score.")
        + " [low, high]: 95 % bootstrap intervals over the held-out documents (over the"
        " sequences for runs that kept no document ids).",
    ]
    return "\n".join(textwrap.fill(p, 100) for p in parts)


def _natural(s: str) -> tuple:
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def write_report(directory: str) -> tuple[str, list[str]]:
    """Write DIR/report.md (the notes and every column) and the figures; returns (the
    markdown table, figure paths)."""
    _, text, paths = _write(directory)
    return text, paths


def _write(directory: str) -> tuple[list[dict[str, Any]], str, list[str]]:
    runs = find_runs(directory)
    if not runs:
        raise FileNotFoundError(f"{directory!r} holds no training workdir (no config.json found).")
    if not any(r["final"] for r in runs):
        raise FileNotFoundError(
            f"no run in {directory!r} has reached its first evaluation yet; train further "
            "(the same train command resumes) and run `sinks-jax report` again."
        )
    text = table(runs)
    paths = figures(runs, directory)
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write(
            notes(runs)
            + "\n\n"
            + text
            + "\n\n"
            + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in paths)
            + "\n"
        )
    return runs, text, paths


def print_report(directory: str, wide: bool = False) -> None:
    """Write the report (`write_report`) and print its notes, table and file names."""
    runs, _, paths = _write(directory)
    print(notes(runs, wide))
    print()
    print(table(runs, wide))
    print("\nfigures:")
    for p in paths:
        print(f"  {p}")
    print(f"table (every column): {os.path.join(directory, 'report.md')}")


def main(argv: list[str]) -> int:
    parser = cli_args.ArgumentParser(prog="sinks-jax report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a sweep directory or one training workdir")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="print every column (eps 0.8, alpha_0, the step); the default fits 100 columns",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="also write DIR/report.html: an interactive page of the runs that opens from disk",
    )
    args = parser.parse_args(argv)
    try:
        print_report(args.directory, args.wide)
        if args.html:
            from sinks_jax.html import write_report_page

            page = write_report_page(
                find_runs(args.directory),
                args.directory,
                command="sinks-jax " + shlex.join(["report", *argv]),
            )
            print(f"page: {page}")
    except FileNotFoundError as e:
        print(f"sinks-jax report: error: {e}", file=sys.stderr)
        return 2
    return 0
