"""The report's figures, drawn from report.json's numbers by `sinks_jax.plots`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sinks_jax import analysis, plots


def _caption(settings: dict[str, Any]) -> str:
    """The figures' footer: the model's file name (not the path it was read from: figures
    carry no machine's paths) and the measurement's settings."""
    keys = ("model", "seq_len", "num_sequences", "short", "eps")
    shown = dict(settings)
    if "model" in shown:
        shown["model"] = os.path.basename(str(shown["model"]).split(":", 1)[-1].rstrip("/"))
    return "  ".join(f"{k}={shown[k]}" for k in keys if k in shown)


def write_figures(report: dict[str, Any], out_dir: str) -> list[str]:
    """Draws the report's figures; returns their paths."""
    cap = _caption(report["settings"])
    main_key = "with_bos" if "with_bos" in report["sinks"] else "text_only"
    sinks = report["sinks"][main_key]
    paths = [
        plots.sink_score_heatmap(
            np.asarray(sinks["sink_score_mean_LxH"]),
            os.path.join(out_dir, "sink_scores.png"),
            caption=cap,
            title=rf"Sink score $\alpha_0$ ({main_key}, mean over prompts)",
        ),
        plots.sink_rate_per_layer(
            {
                float(e): np.asarray(r) / 100
                for e, r in sinks["sink_rate_per_layer_percent"].items()
            },
            os.path.join(out_dir, "sink_rate_per_layer.png"),
            caption=cap,
            title=f"Sink rate per layer ({main_key})",
        ),
        plots.value_norms_sink_vs_rest(
            np.asarray(sinks["value_norm_sink_LxH"]),
            np.asarray(sinks["value_norm_rest_LxH"]),
            np.asarray(sinks["sink_score_mean_LxH"]),
            os.path.join(out_dir, "value_norms.png"),
            caption=cap,
        ),
    ]
    spread = report["spread"]
    without = np.asarray(spread["divergence_without_bos_Lp1xT"])
    with_bos = np.asarray(spread.get("divergence_with_bos_Lp1xT", np.zeros_like(without)))
    ratio_L = None
    if "divergence_with_bos_Lp1xT" in spread:  # per layer, with / without <bos>, after the swap
        after = max(spread.get("changed_positions") or [spread["swap_position"]]) + 1
        if after < without.shape[1]:
            ratio_L = analysis.spread_ratio(with_bos, without, after)
    spread_cap = (
        cap + f"  swap '{spread['old']}'->'{spread['new']}' at token {spread['swap_position']}"
    )
    paths.append(
        plots.spread_heatmaps(
            with_bos,
            without,
            os.path.join(out_dir, "spread.png"),
            swap_position=spread["swap_position"],
            token_labels=spread["token_labels"],
            ratio_L=ratio_L,
            caption=spread_cap,
        )
    )
    cvl = spread["collapse_vs_length"]
    paths.append(
        plots.collapse_curves(
            sinks["rank_collapse_Lp1"],
            cvl["lengths"],
            np.asarray(cvl["repeat_last_token_Lp1xR"])[-1],
            np.asarray(cvl["last_two_tokens_Lp1xR"])[-1],
            os.path.join(out_dir, "collapse.png"),
            caption=cap + f"  sequence={cvl['sequence']}",
        )
    )
    jac = spread.get("jacobian")
    if jac is None:
        return paths
    paths.append(
        plots.sensitivity_vs_bound(
            np.asarray(jac["sensitivity_NxT"])[-1],
            np.asarray(jac["path_bound_T"]),
            jac["target"],
            os.path.join(out_dir, "jacobian_vs_path_bound.png"),
            caption=cap + f"  sequence={jac['sequence']}",
        )
    )
    return paths
