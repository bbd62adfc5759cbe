"""Device traces of a few steps, and where their time goes (`bench ... --profile DIR`).

`trace_steps` records a jax profiler trace of `steps` calls (TensorBoard/xprof files and a
Perfetto JSON beside them); `device_ops` reads the Perfetto JSON back and sums the time of
every kernel that ran on an accelerator, by name, so a run can say where a step's time went
without a profiler UI. On a CPU there are no device events and the table is empty.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Callable

import jax


def trace_steps(run: Callable, directory: str, steps: int = 2) -> dict:
    """Trace `steps` calls of `run` into `directory`; returns `device_ops` of the trace with
    the time per step (the kernels' time divided by `steps`)."""
    os.makedirs(directory, exist_ok=True)
    jax.block_until_ready(run())  # compiled and warm before the trace starts
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    try:
        for _ in range(steps):
            jax.block_until_ready(run())
    finally:
        jax.profiler.stop_trace()
    return device_ops(directory, steps)


KINDS = {  # a kernel's kind, by the first of these words its name contains
    "attention": ("cudnn", "sdpa", "fmha", "flash", "mosaic", "triton"),
    "matmul": ("nvjet", "gemm", "cutlass", "xmma"),
    "copy": ("memcpy", "memset"),
    "fusion": ("fusion", "reduce", "wrapped_"),
}


def kernel_kind(name: str) -> str:
    """"attention", "matmul", "copy", "fusion" (XLA's elementwise and reduction kernels) or
    "other", from a kernel's name."""
    lower = name.lower()
    return next((k for k, words in KINDS.items() if any(w in lower for w in words)), "other")


def device_ops(where: str, steps: int = 1, top: int = 40) -> dict:
    """Where the device time of a Perfetto trace went (`where`: the trace file, or a folder
    whose newest perfetto_trace.json.gz is read): {"trace" (its path, relative to a folder),
    "device_lines", "device_ms_per_step", "kernels_per_step", "by_kind" (`kernel_kind`: ms
    and calls per step), "kernels": [...], "xla_ops": [...]}, each list the `top` largest
    {"name", "ms_per_step", "calls", "share"}: "kernels" from the streams' lines (what ran),
    "xla_ops" from the "XLA Ops" line (the HLO ops they belong to), where the trace has one."""
    path = where
    if os.path.isdir(where):
        paths = glob.glob(os.path.join(where, "**", "perfetto_trace.json.gz"), recursive=True)
        if not paths:
            raise FileNotFoundError(f"no perfetto_trace.json.gz under {where}")
        path = max(paths, key=os.path.getmtime)
    with gzip.open(path, "rt") as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    meta = lambda kind: {  # noqa: E731
        (e["pid"], e.get("tid")) if kind == "thread_name" else e["pid"]: str(e["args"]["name"])
        for e in events
        if e.get("ph") == "M" and e.get("name") == kind and "name" in e.get("args", {})
    }
    devices = {pid for pid, name in meta("process_name").items() if "/device:" in name}
    threads = meta("thread_name")
    lines: dict[str, dict[str, list[float]]] = {"kernels": {}, "xla_ops": {}}
    for e in events:
        if e.get("ph") != "X" or e.get("pid") not in devices or "dur" not in e:
            continue
        thread = threads.get((e["pid"], e.get("tid")), "")
        line = "xla_ops" if thread == "XLA Ops" else "kernels" if "Stream" in thread else None
        if line:
            t = lines[line].setdefault(e["name"], [0.0, 0])
            t[0] += float(e["dur"]) / 1e3
            t[1] += 1

    def table(totals):
        total_ms = sum(t[0] for t in totals.values())
        return [
            {"name": name, "ms_per_step": ms / steps, "calls": n / steps,
             "share": ms / total_ms if total_ms else 0.0}
            for name, (ms, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
        ]  # fmt: skip

    kernels = lines["kernels"]
    kinds: dict[str, list[float]] = {}
    for name, (ms, n) in kernels.items():
        t = kinds.setdefault(kernel_kind(name), [0.0, 0])
        t[0] += ms
        t[1] += n
    return {
        "by_kind": {k: {"ms_per_step": ms / steps, "calls": n / steps} for k, (ms, n) in kinds.items()},
        "trace": os.path.relpath(path, where) if path != where else os.path.basename(path),
        "device_lines": sorted({t for (pid, _), t in threads.items() if pid in devices}),
        "device_ms_per_step": sum(t[0] for t in kernels.values()) / steps,
        "kernels_per_step": sum(t[1] for t in kernels.values()) / steps,
        "kernels": table(kernels),
        "xla_ops": table(lines["xla_ops"]),
    }


def summary_line(ops: dict) -> str:
    """One line: the device time per step and its share by kind, largest first."""
    total = ops["device_ms_per_step"]
    kinds = sorted(ops["by_kind"].items(), key=lambda kv: -kv[1]["ms_per_step"])
    parts = [
        f"{kind} {v['ms_per_step']:.1f} ms ({v['ms_per_step'] / total:.0%})" if total else kind
        for kind, v in kinds
    ]
    return f"device time {total:.1f} ms per step: " + ", ".join(parts) if parts else (
        "no device kernels in the trace (a CPU run)"
    )
