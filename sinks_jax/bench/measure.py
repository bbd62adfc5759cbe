"""How the benchmarks measure: median synchronised wall time, the compiled executable's
memory, a failure as one line, and packed rows of random documents as segment ids."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def time_fn(fn: Callable, *args, warmup: int = 2, iters: int = 10) -> float:
    """Median wall seconds of `fn(*args)` (synchronised), after warm-up runs."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_memory_bytes(jitted, *args) -> int | None:
    """Arguments + outputs + temporaries of the compiled executable (None if unknown)."""
    try:
        m = jitted.lower(*args).compile().memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:  # memory analysis is backend dependent
        return None


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def packed_segments(B: int, T: int, docs: int = 4, seed: int = 0) -> jax.Array:
    """Packed rows of `docs` documents of random lengths, as segment ids 1..docs."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((B, T), np.int32)
    for b in range(B):
        cuts = np.sort(rng.choice(np.arange(1, T), docs - 1, replace=False))
        for s, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, T]), start=1):
            seg[b, lo:hi] = s
    return jnp.asarray(seg)
