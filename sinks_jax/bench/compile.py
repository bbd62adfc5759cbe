"""`sinks-jax bench compile`: lower and compile time of the forward pass against depth."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.bench.shapes import model_shape
from sinks_jax.bench.table import Table
from sinks_jax.model import ModelConfig, Transformer, forward


def bench_compile(args) -> list[dict[str, Any]]:
    """Seconds to lower and compile the model's forward pass at several depths: with the layers
    scanned over stacked parameters it should barely grow with depth."""
    records = []
    table = Table(("num_layers", "lower_s", "compile_s"))
    shape = dict(model_shape("paper_120m", args.quick), attention=args.backends[0])
    tokens_BxT = jnp.zeros((1, args.seq_len), jnp.int32)
    for i, depth in enumerate([args.depths[0], *args.depths]):  # the first: a warm-up.
        cfg = ModelConfig(**{**shape, "num_layers": depth})
        graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
        fn = jax.jit(lambda p, t, graphdef=graphdef: forward(graphdef, p, t)[0])
        start = time.perf_counter()
        lowered = fn.lower(params, tokens_BxT)
        mid = time.perf_counter()
        lowered.compile()
        if i == 0:
            continue
        rec = dict(mode="compile", num_layers=depth, lower_s=mid - start,
                   compile_s=time.perf_counter() - mid)  # fmt: skip
        records.append(rec)
        table.row(rec)
    return records
