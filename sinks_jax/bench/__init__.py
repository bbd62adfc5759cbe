"""`sinks-jax bench`: throughput and memory of training, attention backends and sink statistics.

One module per mode (attention, train, scaling, breakdown, compile, analysis), each a function
`bench_MODE(args) -> records`; `measure` (timing, memory), `table` (the printed table) and
`shapes` (model shapes, from the config presets) serve them; `command` parses the arguments
and dispatches.
"""

from sinks_jax.bench.analysis import bench_analysis
from sinks_jax.bench.attention import bench_attention
from sinks_jax.bench.breakdown import bench_breakdown
from sinks_jax.bench.command import main
from sinks_jax.bench.compile import bench_compile
from sinks_jax.bench.measure import compiled_memory_bytes, time_fn
from sinks_jax.bench.scaling import bench_scaling
from sinks_jax.bench.shapes import PAPER_120M, QUICK_SHAPE
from sinks_jax.bench.table import Table
from sinks_jax.bench.train import bench_train

__all__ = [
    "PAPER_120M",
    "QUICK_SHAPE",
    "Table",
    "bench_analysis",
    "bench_attention",
    "bench_breakdown",
    "bench_compile",
    "bench_scaling",
    "bench_train",
    "compiled_memory_bytes",
    "main",
    "time_fn",
]
