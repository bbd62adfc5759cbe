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
import json
import os
import sys
from typing import Any

from sinks_jax.train import sink_eval

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
    scores = sink_eval.load_scores(workdir)
    return {
        "name": os.path.basename(os.path.normpath(workdir)),
        "config": config,
        "records": records,
        "evals": evals,
        "final": evals[-1] if evals else {},
        "sweep_key": key,
        "swept": _dotted(config, key) if key else None,
        "profile": sink_eval.profiles_from_scores(scores) if scores is not None else {},
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


def _interval(run: dict[str, Any], column: str) -> tuple[float, float] | None:
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
            interval = _interval(r, k)
            if v is not None and interval is not None:
                low, high = (100 * x if pct else x for x in interval)
                cell += f" [{low:.1f}, {high:.1f}]" if pct else f" [{low:.3f}, {high:.3f}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_len(runs: list[dict[str, Any]]) -> str:
    """The sequence length of the held-out sink evaluation (`eval_sink_len`), e.g. "64"; runs
    trained at any context are evaluated at it."""
    lengths = sorted({str(r["config"].get("eval_sink_len", "?")) for r in runs})
    return "/".join(lengths)


def _save(fig, ax, path: str, plt) -> str:
    """Grid, legend, tight layout; write the figure to `path` and close it."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    at = f"eval T={eval_len(runs)}, <bos>"
    axes[0].set(xlabel="training step", ylabel=f"sink rate % (eps=0.3, {at})", ylim=(-3, 103))
    axes[1].set(xlabel="training step", ylabel=f"mean alpha_0 ({at})", ylim=(0, 1))
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
    repeated = len(set(map(str, xs))) < len(xs)  # several seeds per value: points, no lines.
    for k, label, style in (
        ("val_sink_rate_0.3_bos", "eps 0.3, <bos>", "o-"),
        ("val_sink_rate_0.8_bos", "eps 0.8, <bos>", "s-"),
        ("val_sink_rate_0.3_nobos", "eps 0.3, no <bos>", "o--"),
        ("val_sink_rate_0.8_nobos", "eps 0.8, no <bos>", "s--"),
    ):
        ys = [100 * r["final"].get(k, float("nan")) for r in runs]
        bounds = [_interval(r, k) for r in runs]
        err = [[y - 100 * b[0] if b else 0.0 for y, b in zip(ys, bounds)],
               [100 * b[1] - y if b else 0.0 for y, b in zip(ys, bounds)]]
        ax.errorbar(pos, ys, yerr=err, fmt=style[0] if repeated else style, capsize=3,
                    label=label)
    _swept_axis(ax, xs)
    title = f"final sink rate (eval T={eval_len(runs)}) vs {key}"
    ax.set(xlabel=key, ylabel="final sink rate %", title=title)
    short_key = key.split(".")[-1]
    paths.append(_save(fig, ax, os.path.join(out_dir, f"sink_rate_vs_{short_key}.png"), plt))

    profiled = [r for r in runs if "0.3" in r["profile"].get("bos", {})]
    if profiled:
        paths.append(profile_figure(profiled, out_dir, plt))
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
            title=f"final held-out loss with and without <bos> (eval T={eval_len(runs)}) vs {key}",
        )
        paths.append(_save(fig, ax, os.path.join(out_dir, f"bos_loss_vs_{short_key}.png"), plt))

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in runs:
        ax.plot(
            [e["step"] for e in r["evals"]],
            [e["val_loss"] for e in r["evals"]],
            marker="o",
            label=r["name"],
        )
    ax.set(xlabel="training step", ylabel="validation loss (nats/token)", title="validation loss")
    paths.append(_save(fig, ax, os.path.join(out_dir, "val_loss.png"), plt))
    return paths


def profile_figure(runs: list[dict[str, Any]], out_dir: str, plt) -> str:
    """sink_profile.png: per-layer rates with intervals (left), per-head rates (one row each)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 2.4 * len(runs) + 0.6), squeeze=False)
    for (ax_l, ax_h), r in zip(axes, runs):
        prof = r["profile"]["bos"]["0.3"]
        layers = range(1, len(prof["layer_rate"]) + 1)
        rate, low, high = (prof[k] for k in ("layer_rate", "layer_low", "layer_high"))
        ax_l.errorbar(layers, [100 * v for v in rate],
                      yerr=[[100 * (v - lo) for v, lo in zip(rate, low)],
                            [100 * (hi - v) for v, hi in zip(rate, high)]],
                      fmt="o-", capsize=3)
        ax_l.set(xlabel="layer", ylabel="sink rate %", ylim=(-3, 103),
                 title=f"{r['name']}: per layer (eps 0.3, <bos>, 95% CI)")
        ax_l.grid(alpha=0.3)
        image = ax_h.imshow([[100 * v for v in row] for row in prof["head_rate"]], vmin=0, vmax=100,
                            aspect="auto", cmap="viridis", origin="lower",
                            extent=(0.5, len(prof["head_rate"][0]) + 0.5, 0.5, len(layers) + 0.5))
        ax_h.set(xlabel="head", ylabel="layer", title=f"{r['name']}: % of sequences, per head")
        for axis in (ax_l.xaxis, ax_h.xaxis, ax_h.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax_h)
    fig.tight_layout()
    path = os.path.join(out_dir, "sink_profile.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
