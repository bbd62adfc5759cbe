"""A packing-grid run trained from a prepared corpus, end to end on CPU: evaluation records the
loss with and without <bos> on the same targets, `report` tables and plots it, and `analyze`
reads the run's own (prepared) held-out documents."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from sinks_jax import analyze
from sinks_jax.analysis import prompts
from sinks_jax.data.command import prepare_main
from sinks_jax.train import checkpoint as ckpt_lib
from sinks_jax.train import data as data_lib
from sinks_jax.train import loop, report
from sinks_jax.train.main import load_config

SOURCE = "synthetic:bigram_backcopy?min_len=70&max_len=200"


def numpy_nll(logits_NxTxV, targets_NxT):
    """Summed negative log-likelihood of the targets, float64 log-softmax."""
    x = np.asarray(logits_NxTxV, np.float64)
    m = x.max(-1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.asarray(targets_NxT)[..., None], -1).sum()


@pytest.mark.slow  # end to end: in the second CI stage
def test_prepared_run_evaluates_reports_and_analyses(tmp_path):
    prep = str(tmp_path / "prep")
    assert prepare_main(["--source", SOURCE, "--out", prep, "--max-documents", "48"]) == 0
    overrides = {
        "data.source": f"prepared:{prep}",
        "num_steps": 2,
        "eval_every": 2,
        "checkpoint_every": 2,
        "sink_stats_every": 0,
        "micro_batch_size": 16,  # one micro-batch per step, and the explicit backend:
        "model.attention": "xla",  # the fewest compilations.
    }
    config = load_config(
        "configs/packing.py:tiny,intra_fixed_bos", [f"--config.{k}={v}" for k, v in overrides.items()]
    )
    sweep = tmp_path / "packing"
    workdir = str(sweep / "intra_fixed_bos")
    summary = loop.train(config, workdir)
    assert summary["status"] == "finished"
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == summary

    # The loss columns against numpy on the held-out documents the run evaluated on.
    model, _ = ckpt_lib.load_model(workdir)
    pipe = data_lib.DataPipeline(config, micro_batch=8, accumulation=1)
    seqs = pipe.sink_eval_sequences(config.eval_sink_sequences, config.eval_sink_len)
    text_NxT = seqs["nobos"]
    N, T = text_NxT.shape
    with_bos_NxT = np.concatenate([np.full((N, 1), pipe.tokenizer.bos_id), text_NxT[:, :-1]], 1)
    np.testing.assert_array_equal(seqs["bos"], with_bos_NxT)
    logits_w = model(jnp.asarray(with_bos_NxT))[0]
    logits_t = model(jnp.asarray(text_NxT))[0]
    targets = text_NxT[:, 1:]
    n = N * (T - 1)
    np.testing.assert_allclose(
        summary["val_loss_bos"], numpy_nll(logits_w[:, 1:], targets) / n, rtol=1e-5
    )
    np.testing.assert_allclose(
        summary["val_loss_nobos"], numpy_nll(logits_t[:, :-1], targets) / n, rtol=1e-5
    )

    # The report's table and figures carry both losses.
    assert report.main([str(sweep)]) == 0
    table = (sweep / "report.md").read_text()
    assert "loss <bos>+text" in table and "loss text only" in table
    assert f"{summary['val_loss_nobos']:.3f}" in table
    assert (sweep / "bos_loss_vs_variant.png").read_bytes()[:4] == b"\x89PNG"

    # analyze reads the run's prepared held-out documents and a loss file.
    loss_file = tmp_path / "heldout.txt"
    loss_file.write_text("\n".join(prompts.DEFAULT_PROMPTS[:2]) + "\n")
    out = tmp_path / "analysis"
    argv = ["--workdir", workdir, "--prompts-source", "run", "--num-prompts", "3"]
    argv += ["--seq-len", "16", "--spread-len", "32", "--skip-jacobian"]
    argv += ["--loss-file", str(loss_file), "--out", str(out)]
    assert analyze.main(argv) == 0
    result = json.loads((out / "report.json").read_text())
    assert result["settings"]["prompts"] == (
        f"source:prepared:{prep} (the run's held-out documents, valid split)"
    )
    assert result["sinks"]["text_only"]["num_sequences"] == 3
    assert result["bos_loss"]["num_sequences"] == 2
