"""The test set-up pins JAX to the CPU, except when `-m` selects the GPU tests."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import selects_gpu

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize(
    "markexpr, gpu",
    [
        ("", False),
        ("gpu", True),
        ("gpu and not slow", True),
        ("slow or gpu", True),
        ("not gpu", False),
        ("not (gpu or slow)", False),
        ("torch or tfds or slow", False),
        ("not gpu and not torch and not tfds and not real_models and not slow", False),
    ],
)
def test_selects_gpu_follows_pytest_marker_logic(markexpr, gpu):
    assert selects_gpu(markexpr) is gpu


PROBE = """
import os

import pytest


@pytest.mark.gpu
def test_gpu_probe():
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write("gpu %s %s\\n" % (
            os.environ.get("JAX_PLATFORMS"), os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")))


def test_cpu_probe():
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write("cpu %s\\n" % os.environ.get("JAX_PLATFORMS"))
"""


def test_default_run_pins_cpu_and_gpu_run_does_not(tmp_path):
    """Two pytest runs over a probe that imports no jax: the default marker expression pins
    JAX_PLATFORMS=cpu; `-m gpu` leaves it unset and turns off preallocation."""
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "PYTEST_ADDOPTS")}
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    lines = {}
    for name, marks in (("default", "not gpu"), ("gpu", "gpu")):
        out = tmp_path / f"{name}.txt"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
               "-m", marks, "--rootdir", str(tmp_path), "-c", os.devnull, tmp_path]  # fmt: skip
        run = subprocess.run(cmd, env={**env, "PROBE_OUT": str(out)}, capture_output=True,
                             text=True, cwd=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        lines[name] = out.read_text().split()
    assert lines["default"] == ["cpu", "cpu"]
    assert lines["gpu"] == ["gpu", "None", "false"]
