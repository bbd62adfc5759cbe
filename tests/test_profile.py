"""bench/profile.py: a device trace's time by kernel, from a Perfetto JSON built by hand."""

import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from sinks_jax.bench import profile


def write_trace(path, events):
    path.mkdir(parents=True)
    with gzip.open(path / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)


def meta(kind, pid, name, tid=None):
    e = {"ph": "M", "pid": pid, "name": kind, "args": {"name": name}}
    return e if tid is None else {**e, "tid": tid}


def span(pid, tid, name, dur_us):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": 0, "dur": dur_us}


def test_device_ops_sums_the_streams_kernels_per_step(tmp_path):
    events = [
        meta("process_name", 1, "/host:CPU"),
        meta("process_name", 2, "/device:GPU:0"),
        meta("thread_name", 2, "Stream #13(Compute)", tid=13),
        meta("thread_name", 2, "XLA Ops", tid=100),
        meta("thread_name", 2, "XLA Modules", tid=101),
        meta("thread_name", 1, "python", tid=7),
        span(1, 7, "host_work", 9000),  # not on the device
        span(2, 101, "jit_step", 8000),  # the module: spans its kernels, not counted again
        span(2, 13, "cudnn_sdpa", 3000), span(2, 13, "cudnn_sdpa", 3000),
        span(2, 13, "loop_fusion", 1000), span(2, 13, "gemm", 1000),
        span(2, 100, "custom-call.1", 6000), span(2, 100, "fusion.2", 1000),
    ]  # fmt: skip
    write_trace(tmp_path / "plugins" / "profile" / "run", events)
    ops = profile.device_ops(str(tmp_path), steps=2)
    assert ops["device_ms_per_step"] == pytest.approx(4.0)  # (3 + 3 + 1 + 1) ms over 2 steps
    assert ops["kernels_per_step"] == 2
    top = ops["kernels"][0]
    assert (top["name"], top["ms_per_step"], top["calls"], top["share"]) == (
        "cudnn_sdpa", pytest.approx(3.0), 1, pytest.approx(0.75),
    )  # fmt: skip
    assert [o["name"] for o in ops["xla_ops"]] == ["custom-call.1", "fusion.2"]
    assert ops["device_lines"] == ["Stream #13(Compute)", "XLA Modules", "XLA Ops"]
    trace = tmp_path / "plugins" / "profile" / "run" / "perfetto_trace.json.gz"
    assert profile.device_ops(str(trace), steps=2) == {**ops, "trace": trace.name}  # a file too
    kinds = {k: v["ms_per_step"] for k, v in ops["by_kind"].items()}
    assert kinds == {"attention": 3.0, "fusion": 0.5, "matmul": 0.5}
    assert profile.summary_line(ops) == (
        "device time 4.0 ms per step: attention 3.0 ms (75%), fusion 0.5 ms (12%), "
        "matmul 0.5 ms (12%)"
    )


def test_trace_steps_writes_a_trace_and_reads_it_back(tmp_path):
    f = jax.jit(lambda x: jnp.sin(x) @ x)
    x = jnp.ones((64, 64))
    ops = profile.trace_steps(lambda: f(x), str(tmp_path / "trace"), steps=2)
    assert ops["trace"].endswith("perfetto_trace.json.gz")
    assert ops["device_ms_per_step"] >= 0  # a CPU has no device lines: 0
    if not ops["by_kind"]:
        assert profile.summary_line(ops) == "no device kernels in the trace (a CPU run)"


def test_device_ops_without_a_trace_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        profile.device_ops(str(tmp_path))
