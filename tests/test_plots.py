"""Figures: the spread ratio with its interval (against a loop over resamples), every analysis
figure renders (math labels are parsed by mathtext when drawn), and the `<bos>` loss figure
shows the difference around zero."""

import numpy as np
import pytest

from sinks_jax import analysis, plots


def test_spread_ratio_matches_a_loop_over_resamples():
    rng = np.random.default_rng(3)
    a_LxT = rng.uniform(0.5, 2.0, (4, 12))
    b_LxT = rng.uniform(0.5, 2.0, (4, 12))
    a_LxT[0] = b_LxT[0] = 0.0  # the embeddings' row: no spread at all
    start, R = 5, 400
    ratio, low, high = analysis.spread_ratio(a_LxT, b_LxT, start, seed=7, num_resamples=R)
    assert np.isnan(ratio[0]) and np.isnan(low[0]) and np.isnan(high[0])
    np.testing.assert_allclose(ratio[1:], a_LxT[1:, start:].mean(1) / b_LxT[1:, start:].mean(1))
    draws = np.random.default_rng(7).integers(0, 12 - start, size=(R, 12 - start))
    loop = np.array([[a_LxT[l, start:][d].mean() / b_LxT[l, start:][d].mean() for l in range(1, 4)]
                     for d in draws])  # fmt: skip
    np.testing.assert_allclose(low[1:], np.percentile(loop, 2.5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(high[1:], np.percentile(loop, 97.5, axis=0), rtol=1e-12)
    assert np.all(low[1:] <= ratio[1:]) and np.all(ratio[1:] <= high[1:])


def test_spread_ratio_of_a_scaled_map_is_exact():
    b = np.random.default_rng(0).uniform(0.1, 1.0, (3, 9))
    ratio, low, high = analysis.spread_ratio(2.0 * b, b, 2)
    for x in (ratio, low, high):
        np.testing.assert_allclose(x, 2.0)
    with pytest.raises(ValueError, match="at least one position"):
        analysis.spread_ratio(b, b, 9)


def test_every_analysis_figure_renders(tmp_path):
    rng = np.random.default_rng(1)
    L, H, T = 3, 4, 10
    scores = rng.uniform(0, 1, (L, H))
    div = np.abs(rng.normal(size=(L + 1, T)))
    div[:, :4] = 0.0
    ratio = analysis.spread_ratio(div * 0.9, div, 5)
    paths = [
        plots.sink_score_heatmap(scores, str(tmp_path / "a.png"), caption="c"),
        plots.sink_rate_per_layer({0.3: scores.mean(1)}, str(tmp_path / "b.png")),
        plots.spread_heatmaps(div * 0.9, div, str(tmp_path / "c.png"), swap_position=4,
                              token_labels=[f"t{i}" for i in range(T)], ratio_L=ratio),
        plots.spread_heatmaps(div * 0.9, div, str(tmp_path / "c2.png")),
        plots.sensitivity_vs_bound(rng.uniform(size=T), rng.uniform(size=T), T - 1,
                                   str(tmp_path / "d.png")),
        plots.value_norms_sink_vs_rest(scores + 1, scores + 2, scores, str(tmp_path / "e.png")),
        plots.collapse_curves(rng.uniform(size=L + 1), [2, 4, 8], [1.0, 0.5, 0.2],
                              [2.0, 1.0, 0.5], str(tmp_path / "f.png")),
    ]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(4) == b"\x89PNG"


def test_bos_loss_figure_shows_the_difference_around_zero(tmp_path, monkeypatch):
    from sinks_jax.plots import training

    captured = {}
    real_save = training._save

    def spy(fig, ax, path, plt):
        captured[path] = [a.get_ylim() for a in fig.axes]
        return real_save(fig, ax, path, plt)

    monkeypatch.setattr(training, "_save", spy)

    def run(t, bos, nobos):
        final = {"step": 10, "val_loss": bos, "val_loss_bos": bos, "val_loss_nobos": nobos,
                 "val_sink_rate_0.3_bos": 0.5, "val_sink_score_bos": 0.4}  # fmt: skip
        return {"name": f"T{t}", "evals": [final], "final": final, "sweep_key": "seq_len",
                "swept": t, "profile": {}, "config": {"eval_sink_len": 64}}  # fmt: skip

    runs = [run(64, 3.20, 3.21), run(128, 3.10, 3.13), run(256, 3.00, 3.02)]
    paths = training.figures(runs, str(tmp_path))
    bos_path = str(tmp_path / "bos_loss_vs_seq_len.png")
    assert bos_path in paths
    (losses_lo, _), (diff_lo, diff_hi) = captured[bos_path]
    assert losses_lo == 0.0  # both losses from zero: a 0.01 gap looks like one
    assert diff_lo <= 0.0 <= diff_hi < 0.1  # the gap itself, with zero in view
