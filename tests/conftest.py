"""Test set-up: 8 fake CPU devices, set before jax is imported anywhere.

JAX is pinned to the CPU unless the marker expression selects the GPU tests
(`pytest -m gpu tests`): those then run on the machine's accelerator, with memory allocated as
needed rather than preallocated, so that the suite's worker processes share the GPU.
"""

import os

from _pytest.mark.expression import Expression

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def selects_gpu(markexpr: str) -> bool:
    """Whether the `-m` expression selects a test marked `gpu` (pytest's own evaluation:
    `gpu`, `gpu and not slow`, `slow or gpu` do; `not gpu`, `not (gpu or slow)` do not)."""
    if not markexpr:
        return False
    return Expression.compile(markexpr).evaluate(lambda name, **kwargs: name == "gpu")


def pytest_configure(config):
    # Runs before any test module (and so jax) is imported, in every worker process too.
    if selects_gpu(config.getoption("markexpr", "")):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
