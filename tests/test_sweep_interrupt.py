"""Ctrl-C during a sweep (the quickstart is one): exit 130, each variant's state, the command
that resumes, no report of unfinished runs; the printed command then finishes the sweep."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A family of three tiny variants: A ends at once, B runs until interrupted (its length comes
# from the environment, so that the resumed sweep can end), C comes after it.
FAMILY = '''
import os

from sinks_jax.train.config_base import sized_config


def variants(arg=None):
    return {"A": "4", "B": os.environ.get("B_STEPS", "100000"), "C": "4"}


def get_config(arg=None):
    c = sized_config("tiny", 32)
    c.num_steps = int(arg or 4)
    c.eval_every = c.checkpoint_every = min(c.num_steps, 100000)
    c.eval_bootstrap = 20
    c.sink_stats_every = 0
    c.sweep_key = "num_steps"
    c.train_all_variants = arg is None
    return c
'''


@pytest.mark.slow  # end to end, three trainings in subprocesses: the second CI stage
def test_ctrl_c_during_a_sweep_reports_each_variant_and_resumes(tmp_path):
    family, workdir, log = tmp_path / "family.py", tmp_path / "sweep", tmp_path / "stderr.txt"
    family.write_text(FAMILY)
    argv = ["train", "--config", str(family), "--workdir", str(workdir)]
    env = {**os.environ, "SINKS_JAX_PROGRESS_EVERY": "0", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sinks_jax.cli", *argv], cwd=tmp_path, env=env, stderr=err,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            metrics = workdir / "B" / "metrics.jsonl"
            while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:  # a failed wait: no training left behind
                proc.kill()
    text = log.read_text()
    assert proc.returncode == 130, text
    summary = json.loads((workdir / "B" / "summary.json").read_text())
    step = summary["step"]
    assert summary["status"] == "interrupted" and step >= 2
    lines = text[text.index("[sweep] stopped by Ctrl-C:") :].splitlines()
    assert lines == [
        "[sweep] stopped by Ctrl-C:",
        "  finished:     A",
        f"  interrupted:  B (checkpoint at step {step})",
        "  not started:  C",
        f"resume with: sinks-jax {shlex.join(argv)}",
    ], text
    assert "Traceback" not in text
    # No report of runs that never ended: no table, no figures.
    assert not (workdir / "report.md").exists() and not list(workdir.glob("*.png"))
    assert "| run" not in out

    # The printed command resumes: A is skipped, B continues from its checkpoint, C runs.
    env["B_STEPS"] = str(step + 2)
    done = subprocess.run(
        [sys.executable, "-m", "sinks_jax.cli", *argv], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[sweep] A: finished, skipped" in done.stdout
    for name in "ABC":
        assert json.loads((workdir / name / "summary.json").read_text())["status"] == "finished"
    assert (workdir / "report.md").exists() and "95 % bootstrap intervals" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines() if line.startswith("|")) <= 100
