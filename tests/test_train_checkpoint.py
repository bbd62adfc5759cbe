"""End-to-end loop on CPU: resume equals an uninterrupted run, SIGTERM and Ctrl-C leave a
loadable checkpoint and a summary, a resumed run logs each step once, a corrupted newest
checkpoint fails loudly with one line of advice."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sinks_jax import cli
from sinks_jax.train import checkpoint as ckpt_lib
from sinks_jax.train import data as data_lib
from sinks_jax.train import loop
from sinks_jax.train.main import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.mark.slow  # end to end: in the second CI stage
def test_resume_after_sigterm_equals_uninterrupted(tmp_path, record_batches):
    seen, plan = record_batches
    config = tiny_config()
    full = loop.train(config, str(tmp_path / "full"))
    assert full["status"] == "finished" and full["step"] == 20
    full_batches = list(seen)
    seen.clear()

    plan["sigterm_at"] = 10  # SIGTERM arrives while step 10 is being prepared.
    part = loop.train(config, str(tmp_path / "part"))
    assert (part["status"], part["step"], part["signal"]) == ("preempted", 10, "SIGTERM")
    assert json.loads((tmp_path / "part" / "summary.json").read_text()) == part
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored.
    # The checkpoint written on SIGTERM loads on its own.
    _, run_config = params_of(str(tmp_path / "part"))
    assert run_config["seq_len"] == 32
    # Rows past the checkpoint, as a run killed after step 12 (e.g. a second Ctrl-C) leaves
    # them, the last one torn: the resumed run logs those steps again, each once.
    with open(tmp_path / "part" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "loss": -1.0}\n{"step": 12, "loss": -1.0}\n{"step": 13, "lo')
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
    assert logged_steps(tmp_path / "part") == logged_steps(tmp_path / "full") == [5, 10, 15, 20]
    assert all(r["loss"] > 0 for r in metrics_rows(tmp_path / "part"))


def metrics_rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def logged_steps(workdir):
    return [row["step"] for row in metrics_rows(workdir)]


def test_keep_metrics_through(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert loop.keep_metrics_through(str(path), 3) == 0  # no file: nothing to do.
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4, 5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    assert loop.keep_metrics_through(str(path), 3) == 3
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:3]
    assert loop.keep_metrics_through(str(path), 3) == 0


def test_stop_request_first_ctrl_c_asks_the_second_aborts(capsys):
    before = signal.getsignal(signal.SIGINT)
    with loop.StopRequest() as stop:
        assert stop.signal is None
        os.kill(os.getpid(), signal.SIGINT)  # handled: no KeyboardInterrupt.
        assert stop.signal == "SIGINT"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the next one kills at once.
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == "SIGINT"  # the first signal is the one reported.
    assert signal.getsignal(signal.SIGINT) is before
    assert "Ctrl-C again aborts" in capsys.readouterr().err


@pytest.mark.slow  # end to end: in the second CI stage
def test_corrupted_newest_checkpoint_fails_loudly(tmp_path, monkeypatch, capsys):
    config = tiny_config(num_steps=4, checkpoint_every=2, eval_every=4)
    workdir = str(tmp_path / "run")
    loop.train(config, workdir)
    newest = os.path.join(workdir, "checkpoints", "4")
    assert os.path.isdir(newest)
    for root, _, files in os.walk(os.path.join(newest, "params")):
        if os.path.basename(root) != "d":
            continue
        for name in files:  # overwrite the parameters' data files with garbage.
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"not a checkpoint")
    with pytest.raises(ckpt_lib.CheckpointError, match=f"checkpoint {newest} exists"):
        loop.train(tiny_config(num_steps=6, checkpoint_every=2, eval_every=6), workdir)
    with pytest.raises(ckpt_lib.CheckpointError):
        ckpt_lib.load_model(workdir)
    # The command shows the advice alone: one line, not orbax's TensorStore dump.
    monkeypatch.delenv("SINKS_JAX_DEBUG", raising=False)
    capsys.readouterr()  # drop the training runs' progress lines.
    argv = ["train", "--config", "configs/context_length.py:tiny,32", "--workdir", workdir]
    assert cli.main([*argv, "--config.num_steps=6"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[1] == "(set SINKS_JAX_DEBUG=1 for the traceback)", err
    assert "delete that folder" in err[0] and newest in err[0] and len(err[0]) < 400


@pytest.mark.slow  # end to end: in the second CI stage
def test_ctrl_c_saves_writes_summary_and_resumes(tmp_path):
    """`sinks-jax train` in a subprocess: Ctrl-C once it is stepping, then the same run resumed."""
    workdir, log = tmp_path / "run", tmp_path / "stderr.txt"
    args = [
        sys.executable, "-m", "sinks_jax.cli", "train",
        "--config", "configs/context_length.py:tiny,32", "--workdir", str(workdir),
        "--config.checkpoint_every=100000", "--config.eval_every=100000",
        "--config.sink_stats_every=0", "--config.log_every=1",
    ]  # fmt: skip
    env = {**os.environ, "SINKS_JAX_PROGRESS_EVERY": "0", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*args, "--config.num_steps=100000"], cwd=ROOT, env=env, stderr=err,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while "train: 2/100000" not in log.read_text():  # a progress line per step.
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "Ctrl-C again aborts" in text
    assert "resume with: sinks-jax train --config configs/context_length.py:tiny,32" in text
    summary = json.loads((workdir / "summary.json").read_text())
    step = summary["step"]
    assert (summary["status"], summary["signal"]) == ("interrupted", "SIGINT") and step >= 2
    assert os.path.isdir(summary["checkpoint"]) and summary["checkpoint"].endswith(f"/{step}")
    assert f"saved checkpoint {summary['checkpoint']}" in text
    assert logged_steps(workdir) == list(range(1, step + 1))

    # Resume (a shorter run, so that it ends): it continues from the saved step.
    done = subprocess.run(
        [*args, f"--config.num_steps={step + 2}"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"(step {step})" in done.stdout  # "resumed from .../checkpoints/STEP (step STEP)".
    assert json.loads((workdir / "summary.json").read_text())["status"] == "finished"
    assert logged_steps(workdir) == list(range(1, step + 3))
