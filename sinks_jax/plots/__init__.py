"""Figures (matplotlib, no display needed): `analysis` draws the `analyze` report's figures
from arrays, `training` the `report` command's figures from training-run records."""

from sinks_jax.plots.analysis import (
    collapse_curves,
    sensitivity_vs_bound,
    sink_rate_per_layer,
    sink_score_heatmap,
    spread_heatmaps,
    value_norms_sink_vs_rest,
)

__all__ = [
    "collapse_curves",
    "sensitivity_vs_bound",
    "sink_rate_per_layer",
    "sink_score_heatmap",
    "spread_heatmaps",
    "value_norms_sink_vs_rest",
]
