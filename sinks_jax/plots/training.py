"""Figures of a family of training runs (the `report` command's), from run records
(`sinks_jax.records.runs.load_run`): sink rate and alpha_0 over training, final sink rate and
loss with and without <bos> against the swept value, per-layer and per-head sink profiles,
validation loss."""

from __future__ import annotations

import os
from typing import Any

from sinks_jax.records.runs import eval_len, sink_interval


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
    axes[0].set(xlabel="training step", ylabel=rf"sink rate % ($\epsilon$=0.3, {at})", ylim=(-3, 103))
    axes[1].set(xlabel="training step", ylabel=rf"mean $\alpha_0$ ({at})", ylim=(0, 1))
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
    joined = numeric and not repeated  # named variants are categories: points, no lines.
    for k, label, style in (
        ("val_sink_rate_0.3_bos", "eps 0.3, <bos>", "o-"),
        ("val_sink_rate_0.8_bos", "eps 0.8, <bos>", "s-"),
        ("val_sink_rate_0.3_nobos", "eps 0.3, no <bos>", "o--"),
        ("val_sink_rate_0.8_nobos", "eps 0.8, no <bos>", "s--"),
    ):
        ys = [100 * r["final"].get(k, float("nan")) for r in runs]
        bounds = [sink_interval(r, k) for r in runs]
        err = [[y - 100 * b[0] if b else 0.0 for y, b in zip(ys, bounds)],
               [100 * b[1] - y if b else 0.0 for y, b in zip(ys, bounds)]]
        ax.errorbar(pos, ys, yerr=err, fmt=style if joined else style[0], capsize=3,
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
        # Left: both losses on an axis from 0, so a small gap looks small. Right: the gap
        # itself around a zero line, where its sign and size can be read.
        fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(10, 3.6))
        final = {k: [r["final"].get(k, float("nan")) for r in runs]
                 for k in ("val_loss_bos", "val_loss_nobos")}  # fmt: skip
        for k, label, style in (
            ("val_loss_bos", "<bos> + text", "o-"),
            ("val_loss_nobos", "text only", "s--"),
        ):
            ax.plot(pos, final[k], style if joined else style[0], label=label)
        _swept_axis(ax, xs)
        ax.set_ylim(bottom=0)
        ax.set(
            xlabel=key,
            ylabel="loss (nats/token), same targets",
            title=f"held-out loss, <bos> + text and text only (T={eval_len(runs)})",
        )
        gap = [b - a for a, b in zip(final["val_loss_bos"], final["val_loss_nobos"])]
        ax_d.plot(pos, gap, "o-" if joined else "o", color="C2", label="text only - <bos> + text")
        ax_d.axhline(0.0, color="0.3", lw=0.8)
        _swept_axis(ax_d, xs)
        ax_d.set(xlabel=key, ylabel="loss difference (nats/token)",
                 title="what the <bos> is worth (> 0: it helps)")  # fmt: skip
        ax_d.grid(alpha=0.3)
        ax_d.legend(fontsize=8)
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
        layers = range(len(prof["layer_rate"]))  # numbered from 0, as in the JSON
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
                            extent=(-0.5, len(prof["head_rate"][0]) - 0.5, -0.5, len(layers) - 0.5))
        ax_h.set(xlabel="head", ylabel="layer", title=f"{r['name']}: % of sequences, per head")
        for axis in (ax_l.xaxis, ax_h.xaxis, ax_h.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax_h)
    fig.tight_layout()
    path = os.path.join(out_dir, "sink_profile.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
