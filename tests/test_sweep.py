"""`sweep.run_all` with a stand-in for training: which variants finished, were interrupted (and
at which checkpoint) or never started, whatever moment a signal arrives."""

import json
import os
import signal

import pytest

from sinks_jax.train import loop, sweep
from sinks_jax.train.stop import StopRequest

FAMILY = '''
from sinks_jax.train.config_base import base_config


def variants(arg=None):
    return {"A": "1", "B": "2", "C": "3"}


def get_config(arg=None):
    c = base_config()
    c.seq_len = 16 * int(arg or 1)
    c.train_all_variants = arg is None
    return c
'''


@pytest.fixture
def family(tmp_path):
    path = tmp_path / "family.py"
    path.write_text(FAMILY)
    return str(path)


def fake_train(event):
    """A `train` that finishes A, and meets `event` on B: "steps" (Ctrl-C while stepping),
    "setup" (Ctrl-C before the steps), "final" (Ctrl-C during the final evaluation)."""

    def train(config, workdir):
        name = os.path.basename(workdir)
        if name == "B" and event == "setup":
            raise KeyboardInterrupt
        if name == "B" and event == "steps":
            os.makedirs(os.path.join(workdir, "checkpoints", "7"))
            return {"status": "interrupted", "step": 7, "signal": "SIGINT"}
        if name == "B" and event == "final":
            StopRequest.last_signal = "SIGINT"
        summary = {"status": "finished", "step": 10}
        os.makedirs(workdir, exist_ok=True)
        with open(f"{workdir}/summary.json", "w") as f:
            json.dump(summary, f)
        return summary

    return train


@pytest.mark.parametrize(
    "event, interrupted, finished",
    [("steps", {"B": 7}, ["A"]), ("setup", {"B": None}, ["A"]), ("final", {}, ["A", "B"])],
)
def test_a_signal_stops_the_sweep_and_says_where_each_variant_stands(
    tmp_path, family, monkeypatch, event, interrupted, finished
):
    monkeypatch.setattr(loop, "train", fake_train(event))
    outcome = sweep.run_all(family, str(tmp_path / "w"), [])
    assert (outcome.finished, outcome.interrupted, outcome.failed) == (finished, interrupted, [])
    assert outcome.not_started == ["C"] and outcome.signal == "SIGINT"
    assert outcome.exit_code == 128 + signal.SIGINT == 130
    lines = outcome.lines("sinks-jax train --config f --workdir w")
    assert lines[0] == "[sweep] stopped by Ctrl-C:" and lines[-1].startswith("resume with: ")
    if event == "steps":
        assert "  interrupted:  B (checkpoint at step 7)" in lines
    if event == "setup":
        assert "  interrupted:  B (before its first checkpoint)" in lines

    # The next run skips what finished; Ctrl-C before B's steps now finds B's checkpoint.
    monkeypatch.setattr(loop, "train", fake_train("setup"))
    again = sweep.run_all(family, str(tmp_path / "w"), [])
    if event == "final":  # B finished: C runs, and this time nothing stops the sweep
        assert again.finished == ["A", "B", "C"] and again.exit_code == 0
    else:
        assert again.finished == ["A"] and again.not_started == ["C"]
        assert again.interrupted == {"B": 7 if event == "steps" else None}


def test_an_error_in_one_variant_does_not_stop_the_others(tmp_path, family, monkeypatch, capsys):
    def train(config, workdir):
        if workdir.endswith("B"):
            raise ValueError("B is broken; set --config.x=1")
        return fake_train(None)(config, workdir)

    monkeypatch.setattr(loop, "train", train)
    monkeypatch.delenv("SINKS_JAX_DEBUG", raising=False)
    outcome = sweep.run_all(family, str(tmp_path / "w"), [])
    assert (outcome.finished, outcome.failed, outcome.signal) == (["A", "C"], ["B"], None)
    assert outcome.exit_code == 1
    assert "[sweep] B: error: B is broken; set --config.x=1" in capsys.readouterr().err
    assert outcome.lines("cmd")[0] == "[sweep] not every variant finished:"
