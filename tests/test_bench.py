"""`sinks-jax bench --quick` runs on CPU and writes records with numbers, not errors."""

import json

import pytest

from sinks_jax import bench


@pytest.mark.parametrize("mode", ["attention", "train", "analysis", "scaling", "breakdown"])
def test_bench_quick(mode, tmp_path):
    out = tmp_path / f"{mode}.json"
    assert bench.main([mode, "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["environment"]["jax"] and data["records"]
    for rec in data["records"]:
        assert "error" not in rec, rec
    timed = {
        "attention": "fwd_bwd_ms",
        "train": "tokens_per_s",
        "analysis": "steady_s",
        "scaling": "tokens_per_s",
        "breakdown": "ms",
    }[mode]
    assert all(rec[timed] > 0 for rec in data["records"])
