"""Tables, bootstrap intervals and profile figures for docs/real_models.md.

    python docs/real_models_summary.py results/real_models smollm2 gemma3

Reads `DIR/NAME/report.json` (written by `sinks-jax analyze`) for each NAME and writes
`DIR/metrics.json` (the T = 64 numbers quoted in docs/real_models.md), `DIR/sink_rate_per_layer.png`
(per-layer sink rate with 95 % bootstrap intervals over the held-out documents of the windows,
`DIR/windows.jsonl`'s `doc`, both layouts, both eps), `DIR/NAME_heads.png` (per-head sink
rate), redraws `analyze`'s own figures in `DIR/NAME/` from report.json (their footers name the
model file, not the path it was read from) and prints the Markdown tables.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sinks_jax import analysis

LAYOUTS = {"with_bos": "<bos> + 63 tokens", "text_only": "64 text tokens"}


def window_docs(root: str) -> np.ndarray:
    """The held-out document of each window of `root/windows.jsonl`."""
    with open(os.path.join(root, "windows.jsonl"), encoding="utf-8") as f:
        return np.asarray([json.loads(x)["doc"] for x in f if x.strip()])


def profiles(report: dict, docs: np.ndarray) -> dict:
    """Sink rate and alpha_0 with bootstrap intervals over documents, per layout and eps."""
    out = {}
    for layout, res in report["sinks"].items():
        scores = np.asarray(res["sink_score_per_sequence_LxNxH"], np.float32)
        clusters = docs[np.asarray(res["kept_prompt_indices"])]
        out[layout] = {}
        for eps in report["settings"]["eps"]:
            p = analysis.sink_profile(scores, eps, jax.random.key(0), num_resamples=2000,
                                      clusters=clusters)  # fmt: skip
            out[layout][f"{eps:g}"] = {k: np.asarray(v).tolist() for k, v in p.items()}
    return out


def spread_summary(spread: dict) -> dict:
    """Divergence after the swapped token, per layer, with and without <bos>."""
    pos = spread["swap_position"]
    out = {"old": spread["old"], "new": spread["new"], "swap_position": pos}
    for key, name in (
        ("divergence_with_bos_Lp1xT", "with_bos"),
        ("divergence_without_bos_Lp1xT", "text_only"),
    ):
        d = np.asarray(spread[key])[:, pos + 1 :]  # the tokens after the swap
        out[f"{name}_mean_after_swap_Lp1"] = d.mean(1).tolist()
        out[f"{name}_mean_after_swap_last_layer"] = float(d[-1].mean())
        out[f"{name}_mean_after_swap_all_layers"] = float(d[1:].mean())
    out["ratio_text_only_over_with_bos_last_layer"] = (
        out["text_only_mean_after_swap_last_layer"] / out["with_bos_mean_after_swap_last_layer"]
    )
    return out


def jacobian_summary(jac: dict) -> dict:
    s = np.asarray(jac["sensitivity_NxT"], np.float64)[-1][: jac["target"] + 1]
    b = np.asarray(jac["path_bound_T"], np.float64)[: jac["target"] + 1]
    rank = lambda x: np.argsort(np.argsort(x))
    return {
        "target": jac["target"],
        "spearman_log_sensitivity_vs_bound": float(np.corrcoef(rank(s), rank(b))[0, 1]),
        "pearson_log_sensitivity_vs_log_bound": float(np.corrcoef(np.log(s), np.log(b))[0, 1]),
        "sensitivity_sink_over_median_other": float(s[0] / np.median(s[1:-1])),
        "bound_sink_over_median_other": float(b[0] / np.median(b[1:-1])),
        "sensitivity_self_over_median_other": float(s[-1] / np.median(s[1:-1])),
        "bound_self_over_median_other": float(b[-1] / np.median(b[1:-1])),
    }


def value_summary(res: dict, eps: float = 0.8) -> dict:
    sink = np.asarray(res["value_norm_sink_LxH"])
    rest = np.asarray(res["value_norm_rest_LxH"])
    score = np.asarray(res["sink_score_mean_LxH"])
    ratio = sink / rest
    heads = score > eps
    return {
        "eps": eps,
        "num_sink_heads": int(heads.sum()),
        "median_ratio_sink_heads": float(np.median(ratio[heads])) if heads.any() else None,
        "median_ratio_other_heads": float(np.median(ratio[~heads])) if (~heads).any() else None,
        "fraction_of_heads_with_ratio_below_1": float((ratio < 1).mean()),
        "spearman_ratio_vs_score": float(
            np.corrcoef(
                np.argsort(np.argsort(ratio.ravel())), np.argsort(np.argsort(score.ravel()))
            )[0, 1]
        ),
    }


def layer_figure(prof: dict, names: list[str], path: str) -> None:
    fig = Figure(figsize=(10, 3.6 * len(names)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(names), 2))
    for r, name in enumerate(names):
        for c, eps in enumerate(("0.3", "0.8")):
            ax = axes[r, c]
            for layout, label in LAYOUTS.items():
                p = prof[name][layout][eps]
                y = 100 * np.asarray(p["layer_rate"])
                lo, hi = 100 * np.asarray(p["layer_low"]), 100 * np.asarray(p["layer_high"])
                x = np.arange(len(y))
                ax.plot(x, y, marker="o", ms=3, label=label)
                ax.fill_between(x, lo, hi, alpha=0.25)
            ax.set_title(f"{name}, eps = {eps}", fontsize=10)
            ax.set_xlabel("layer")
            ax.set_ylabel("sink rate (% of heads)")
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Per-layer sink rate, T = 64, 95 % bootstrap intervals over documents",
                 fontsize=11)  # fmt: skip
    fig.savefig(path, dpi=110)


def head_figure(prof: dict, name: str, path: str) -> None:
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for r, eps in enumerate(("0.3", "0.8")):
        for c, (layout, label) in enumerate(LAYOUTS.items()):
            rate = 100 * np.asarray(prof[name][layout][eps]["head_rate"])
            im = axes[r, c].imshow(
                rate.T,
                vmin=0,
                vmax=100,
                cmap="viridis",
                aspect="auto",
                origin="lower",
                interpolation="nearest",
            )
            axes[r, c].set_title(f"{label}, eps = {eps}", fontsize=9)
            axes[r, c].set_xlabel("layer")
            axes[r, c].set_ylabel("head")
            axes[r, c].xaxis.set_major_locator(MaxNLocator(integer=True))
            axes[r, c].yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=axes.ravel().tolist(), label="% of windows on which the head is a sink")
    fig.suptitle(f"{name}: per-head sink rate (T = 64)", fontsize=11)
    fig.savefig(path, dpi=110)


def main(root: str, names: list[str]) -> None:
    reports = {}
    for n in names:
        with open(os.path.join(root, n, "report.json")) as f:
            reports[n] = json.load(f)
    from sinks_jax.analyze.figures import write_figures

    docs = window_docs(root)
    metrics, prof = {}, {}
    for name, rep in reports.items():
        write_figures(rep, os.path.join(root, name))
        prof[name] = profiles(rep, docs)
        m = {
            "settings": {
                k: rep["settings"][k]
                for k in ("model", "seq_len", "eps", "bos_id", "prompts", "num_sequences")
            }
        }
        m["settings"]["model"] = os.path.basename(str(m["settings"]["model"]))
        m["settings"]["documents"] = int(len(np.unique(docs)))
        m["sinks"] = {
            layout: {
                eps: {
                    k: p[k]
                    for k in (
                        "rate",
                        "rate_low",
                        "rate_high",
                        "score",
                        "score_low",
                        "score_high",
                        "max_head_score",
                    )
                }
                for eps, p in by_eps.items()
            }
            for layout, by_eps in prof[name].items()
        }
        m["per_layer"] = {
            layout: {
                eps: {k: p[k] for k in ("layer_rate", "layer_low", "layer_high")}
                for eps, p in by_eps.items()
            }
            for layout, by_eps in prof[name].items()
        }
        m["bos_loss"] = rep.get("bos_loss")
        m["spread"] = spread_summary(rep["spread"])
        m["value_norms"] = {layout: value_summary(rep["sinks"][layout]) for layout in rep["sinks"]}
        if "jacobian" in rep["spread"]:
            m["jacobian"] = jacobian_summary(rep["spread"]["jacobian"])
        metrics[name] = m
        head_figure(prof, name, os.path.join(root, f"{name}_heads.png"))
    layer_figure(prof, names, os.path.join(root, "sink_rate_per_layer.png"))
    with open(os.path.join(root, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print("| model | layout | eps | sink rate % [95 % CI] | mean alpha_0 [95 % CI] |")
    print("|---|---|---|---|---|")
    for name, m in metrics.items():
        for layout, by_eps in m["sinks"].items():
            for eps, p in by_eps.items():
                print(
                    f"| {name} | {LAYOUTS[layout]} | {eps} | {100 * p['rate']:.2f} "
                    f"[{100 * p['rate_low']:.2f}, {100 * p['rate_high']:.2f}] | {p['score']:.3f} "
                    f"[{p['score_low']:.3f}, {p['score_high']:.3f}] |"
                )
    print(
        json.dumps(
            {n: {k: m[k] for k in ("bos_loss", "value_norms")} for n, m in metrics.items()},
            indent=1,
        )
    )
    print(json.dumps({n: m.get("jacobian") for n, m in metrics.items()}, indent=1))
    print(
        json.dumps(
            {
                n: {k: v for k, v in m["spread"].items() if "Lp1" not in k}
                for n, m in metrics.items()
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
