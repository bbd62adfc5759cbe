"""Test set-up: 8 fake CPU devices, set before jax is imported anywhere.

JAX is pinned to the CPU unless the marker expression selects the GPU tests
(`pytest -m gpu tests/test_gpu.py`): those then run on the machine's accelerator.
"""

import os
import re

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def selects_gpu(markexpr: str) -> bool:
    """Whether a `-m` expression asks for the `gpu` tests (`gpu`, `gpu and not slow`, but not
    `not gpu`)."""
    return re.search(r"(?<!not )\bgpu\b", markexpr or "") is not None


def pytest_configure(config):
    # Runs before any test module (and so jax) is imported.
    if not selects_gpu(config.getoption("markexpr", "")):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
