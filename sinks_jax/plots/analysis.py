"""Figures for the analysis report (matplotlib, no display needed).

Every function takes numpy-compatible arrays, draws one figure with a title, axis labels,
colour bars where colour carries a number, and a caption line with the settings, writes a PNG
to `path`, and returns the path. Figures are built with `matplotlib.figure.Figure` directly,
so no GUI backend and no global pyplot state are involved.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _save(fig: Figure, caption: str, path: str) -> str:
    if caption:  # a figure-level x label, so constrained layout keeps it clear of the axes
        width_chars = int(fig.get_figwidth() * 15)  # about 15 characters per inch at 7 pt
        fig.supxlabel(textwrap.fill(caption, width_chars), fontsize=7, color="0.3")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def sink_score_heatmap(
    scores_LxH: np.ndarray,
    path: str,
    *,
    caption: str = "",
    title: str = r"Sink score $\alpha_0$ of the first token (mean over prompts)",
) -> str:
    """Layer x head heatmap of sink scores alpha_0 in [0, 1]."""
    scores_LxH = np.asarray(scores_LxH)
    L, H = scores_LxH.shape
    fig = Figure(figsize=(max(5.5, 0.45 * H + 2.5), max(3.2, 0.3 * L + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(
        scores_LxH, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest"
    )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if H <= 32:
        ax.set_xticks(range(H))
    if L <= 40:
        ax.set_yticks(range(L))
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=r"sink score $\alpha_0$")
    return _save(fig, caption, path)


def sink_rate_per_layer(
    rates_by_eps: Mapping[float, Sequence[float]],
    path: str,
    *,
    caption: str = "",
    title: str = "Sink rate per layer",
) -> str:
    """Line plot: percentage of heads with alpha_0 > eps in each layer, one line per eps."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for eps, rates_L in rates_by_eps.items():
        rates_L = 100.0 * np.asarray(rates_L)
        ax.plot(np.arange(len(rates_L)), rates_L, marker="o", label=rf"$\epsilon$ = {eps:g}")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("sink rate (% of heads)")
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, caption, path)


def spread_heatmaps(
    div_with_LxT: np.ndarray,
    div_without_LxT: np.ndarray,
    path: str,
    *,
    swap_position: int | None = None,
    token_labels: Sequence[str] | None = None,
    ratio_L: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    caption: str = "",
    title: str = r"Perturbation spread $\|v - v'\|_2$ (layer $\times$ token)",
) -> str:
    """Two heatmaps with one shared log colour scale: with `<bos>` (its row dropped) and
    without; with `ratio_L = (ratio, low, high)` (`analysis.spread_ratio`) a third panel shows,
    per layer, the mean spread after the swap with `<bos>` over without it and its interval,
    where a difference too small to see in the colours shows."""
    a, b = np.asarray(div_with_LxT, np.float64), np.asarray(div_without_LxT, np.float64)
    positive = np.concatenate([a[a > 0], b[b > 0]])
    lo = float(positive.min()) if positive.size else 1e-6
    hi = float(positive.max()) if positive.size else 1.0
    norm = LogNorm(vmin=max(lo, hi * 1e-6), vmax=max(hi, lo * 10))
    T = a.shape[1]
    width = min(14.0, max(8.0, 0.12 * T * 2 + 3)) + (3.0 if ratio_L is not None else 0.0)
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    ncols = 3 if ratio_L is not None else 2
    axes = fig.subplots(
        1, ncols, sharey=True, width_ratios=[1, 1, 0.45] if ncols == 3 else None
    )
    for ax, data, name in ((axes[0], a, "with <bos>"), (axes[1], b, "without <bos>")):
        im = ax.imshow(
            np.where(data > 0, data, np.nan),
            norm=norm,
            cmap="magma",
            aspect="auto",
            interpolation="nearest",
            origin="lower",
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("text token position")
        if swap_position is not None:
            ax.axvline(swap_position, color="cyan", lw=0.8, ls="--")
        if token_labels is not None and T <= 48:
            ax.set_xticks(range(T))
            ax.set_xticklabels(token_labels, rotation=90, fontsize=6)
    axes[0].set_ylabel("layer (0 = embeddings)")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=list(axes[:2]), label=r"$\|v - v'\|_2$ (blank = exactly 0)")
    if ratio_L is not None:
        ratio, low, high = (np.asarray(x, np.float64) for x in ratio_L)
        layers = np.arange(len(ratio))
        ok = np.isfinite(ratio)
        ax = axes[2]
        ax.errorbar(
            ratio[ok], layers[ok],
            xerr=[np.maximum(ratio - low, 0)[ok], np.maximum(high - ratio, 0)[ok]],
            fmt="o", ms=3, capsize=2,
        )
        ax.axvline(1.0, color="0.5", lw=0.8, ls="--")  # 1: <bos> changes nothing
        ax.set_xlabel("with / without <bos>")
        ax.set_title("ratio after the swap (95% CI)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, caption, path)


def sensitivity_vs_bound(
    sensitivity_T: np.ndarray,
    bound_T: np.ndarray,
    target: int,
    path: str,
    *,
    caption: str = "",
    title: str = "Jacobian sensitivity vs path bound",
) -> str:
    """Log-scale lines over source position i <= target, each normalised by its own maximum."""
    s = np.asarray(sensitivity_T, np.float64)[: target + 1]
    p = np.asarray(bound_T, np.float64)[: target + 1]
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    pos = np.arange(target + 1)
    ax.semilogy(
        pos,
        s / max(s.max(), 1e-30),
        marker=".",
        label=r"$\|\partial v_j^{(L)} / \partial v_i^{(0)}\|_F$",
    )
    ax.semilogy(
        pos,
        p / max(p.max(), 1e-30),
        marker=".",
        ls="--",
        label=r"path sum $[\prod_l (\sum_h A_l + I)]_{j,i}$",
    )
    ax.set_xlabel(f"source position i (target j = {target})")
    ax.set_ylabel("value / its maximum (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, caption, path)


def value_norms_sink_vs_rest(
    sink_vn_LxH: np.ndarray,
    rest_vn_LxH: np.ndarray,
    scores_LxH: np.ndarray,
    path: str,
    *,
    caption: str = "",
    title: str = "Value norms: sink token vs the rest",
) -> str:
    """Left: per-layer mean ||W_V x|| of token 0 vs other tokens. Right: per head, ratio vs alpha_0."""
    sink_vn_LxH, rest_vn_LxH = np.asarray(sink_vn_LxH), np.asarray(rest_vn_LxH)
    L, H = sink_vn_LxH.shape
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    layers = np.arange(L)
    ax0.plot(layers, sink_vn_LxH.mean(1), marker="o", label="token 0 (sink)")
    ax0.plot(layers, rest_vn_LxH.mean(1), marker="s", label="other tokens (mean)")
    ax0.set_xlabel("layer")
    ax0.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax0.set_ylabel(r"$\|W_V x\|$ (mean over heads, prompts)")
    ax0.legend(fontsize=8)
    ax0.grid(alpha=0.3)
    ratio = sink_vn_LxH / np.where(rest_vn_LxH > 0, rest_vn_LxH, 1.0)
    sc = ax1.scatter(
        np.asarray(scores_LxH).ravel(),
        ratio.ravel(),
        c=np.repeat(layers, H),
        cmap=matplotlib.colormaps["viridis"].resampled(max(L, 2)),
        vmin=-0.5,
        vmax=L - 0.5,
        s=14,
    )
    ax1.axhline(1.0, color="0.5", lw=0.8, ls="--")
    if np.all(ratio > 0):
        ax1.set_yscale("log")
    ax1.set_xlabel(r"sink score $\alpha_0$ of the head")
    ax1.set_ylabel(r"$\|v_0\|$ / mean $\|v_j\|$, $j > 0$")
    cbar = fig.colorbar(sc, ax=ax1, label="layer")
    cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    return _save(fig, caption, path)


def collapse_curves(
    rank_collapse_Lp1: Sequence[float] | None,
    lengths_R: Sequence[int],
    repeat_R: Sequence[float],
    last_two_R: Sequence[float],
    path: str,
    *,
    caption: str = "",
    title: str = "Rank and representational collapse",
) -> str:
    """Left: rank collapse per layer. Right: last-layer representational collapse vs length n."""
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    if rank_collapse_Lp1 is not None:
        rc = np.asarray(rank_collapse_Lp1)
        ax0.plot(np.arange(len(rc)), rc, marker="o")
    ax0.set_xlabel("layer (0 = embeddings)")
    ax0.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax0.set_ylabel(r"$\|V - \mathbf{1}\mu^T\|_F \,/\, \|V\|_F$")
    ax0.set_title("rank collapse (mean over prompts)", fontsize=9)
    ax0.grid(alpha=0.3)
    ax1.loglog(
        lengths_R,
        np.maximum(np.asarray(repeat_R), 1e-12),
        marker="o",
        label=r"$\|v_n - v'_n\|$, last token repeated",
    )
    ax1.loglog(
        lengths_R,
        np.maximum(np.asarray(last_two_R), 1e-12),
        marker="s",
        label=r"$\|v_{n-1} - v_{n-2}\|$, last two tokens",
    )
    ax1.set_xlabel("sequence length n (tokens)")
    ax1.set_ylabel("distance at the last layer")
    ax1.set_title("representational collapse (perturbation prompt)", fontsize=9)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    return _save(fig, caption, path)
