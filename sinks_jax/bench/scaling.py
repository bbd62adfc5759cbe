"""`sinks-jax bench scaling`: the train case on one and on all local devices, the same
per-device batch, and the speed-up."""

from __future__ import annotations

from typing import Any

import jax

from sinks_jax.bench.measure import error_line
from sinks_jax.bench.table import Table
from sinks_jax.bench.train import train_case


def bench_scaling(args) -> list[dict[str, Any]]:
    records = []
    n = jax.local_device_count()
    table = Table(("devices", "micro_batch", "step_ms", "tokens_per_s", "mfu", "error"))
    for count in sorted({1, n}):
        devices = jax.local_devices()[:count]
        try:
            rec = train_case(args, args.backends[0], True, "causal", devices)
        except Exception as exc:
            rec = dict(mode="train", devices=count, error=error_line(exc))
        rec["mode"] = "scaling"
        records.append(rec)
        table.row(rec)
    if len(records) == 2 and "tokens_per_s" in records[0] and "tokens_per_s" in records[1]:
        speedup = records[1]["tokens_per_s"] / records[0]["tokens_per_s"]
        print(f"speed-up on {n} devices: {speedup:.2f}x")
        records[1]["speedup"] = speedup
    return records
