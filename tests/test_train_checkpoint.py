"""End-to-end loop on CPU: resume equals an uninterrupted run, SIGTERM leaves a loadable
checkpoint, a corrupted newest checkpoint fails loudly."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from sinks_jax.train import checkpoint as ckpt_lib
from sinks_jax.train import data as data_lib
from sinks_jax.train import loop
from sinks_jax.train.main import load_config


def tiny_config(**overrides):
    o = {
        "num_steps": 20,
        "checkpoint_every": 5,
        "eval_every": 100,
        "sink_stats_every": 0,
        "log_every": 5,
    }
    o.update(overrides)
    return load_config(
        "configs/context_length.py:tiny,32", [f"--config.{k}={v}" for k, v in o.items()]
    )


@pytest.fixture
def record_batches(monkeypatch):
    """Records every train batch; optionally sends SIGTERM to this process at a given batch."""
    seen, plan = [], {"sigterm_at": None}
    original = data_lib.DataPipeline.next_train

    def next_train(self):
        batch = original(self)
        seen.append(batch["tokens"].copy())
        if plan["sigterm_at"] == len(seen):
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    monkeypatch.setattr(data_lib.DataPipeline, "next_train", next_train)
    return seen, plan


def params_of(workdir):
    model, run_config = ckpt_lib.load_model(workdir)
    from flax import nnx

    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model))), run_config


def test_resume_after_sigterm_equals_uninterrupted(tmp_path, record_batches):
    seen, plan = record_batches
    config = tiny_config()
    full = loop.train(config, str(tmp_path / "full"))
    assert full["status"] == "finished" and full["step"] == 20
    full_batches = list(seen)
    seen.clear()

    plan["sigterm_at"] = 10  # SIGTERM arrives while step 10 is being prepared.
    part = loop.train(config, str(tmp_path / "part"))
    assert part == {"status": "preempted", "step": 10}
    # The checkpoint written on SIGTERM loads on its own.
    _, run_config = params_of(str(tmp_path / "part"))
    assert run_config["seq_len"] == 32
    plan["sigterm_at"] = None
    resumed = loop.train(config, str(tmp_path / "part"))
    assert resumed["status"] == "finished" and resumed["step"] == 20

    assert len(seen) == 20
    for a, b in zip(full_batches, seen):
        np.testing.assert_array_equal(a, b)  # the same batches, in the same order.
    p_full, _ = params_of(str(tmp_path / "full"))
    p_part, _ = params_of(str(tmp_path / "part"))
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_part)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(full["val_loss"], resumed["val_loss"], atol=1e-5)

    # A finished run is not trained again.
    again = loop.train(config, str(tmp_path / "part"))
    assert again["status"] == "finished" and len(seen) == 20
    last = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 20 and "val_sink_rate_0.3_bos" in last


def test_corrupted_newest_checkpoint_fails_loudly(tmp_path):
    config = tiny_config(num_steps=4, checkpoint_every=2, eval_every=4)
    workdir = str(tmp_path / "run")
    loop.train(config, workdir)
    newest = os.path.join(workdir, "checkpoints", "4")
    assert os.path.isdir(newest)
    for root, _, files in os.walk(os.path.join(newest, "params")):
        for name in files:  # overwrite every file of the parameters item with garbage.
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"not a checkpoint")
    with pytest.raises(ckpt_lib.CheckpointError, match="checkpoint step 4"):
        loop.train(tiny_config(num_steps=6, checkpoint_every=2, eval_every=6), workdir)
    with pytest.raises(ckpt_lib.CheckpointError):
        ckpt_lib.load_model(workdir)
