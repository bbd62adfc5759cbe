"""`sinks-jax bench --quick` runs on CPU and writes records with numbers, not errors."""

import json

import pytest

from sinks_jax import bench


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("attention", marks=pytest.mark.slow),  # 4 backends x 2 lengths: likewise
        pytest.param("train", marks=pytest.mark.slow),  # several train steps: second CI stage
        pytest.param("analysis", marks=pytest.mark.slow),  # 120M-shaped model: likewise
        pytest.param("scaling", marks=pytest.mark.slow),  # two train cases: second CI stage
        pytest.param("breakdown", marks=pytest.mark.slow),  # a dozen compiled pieces: likewise
    ],
)
def test_bench_quick(mode, tmp_path, capsys):
    out = tmp_path / f"{mode}.json"
    assert bench.main([mode, "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    rule = next(i for i, line in enumerate(printed) if line.startswith("---"))
    assert "error" in printed[rule - 1].split()  # the header, above a rule of dashes
    assert not any("=" in line for line in printed[rule:]), printed  # a table, not key=value
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


def test_table_columns_line_up(capsys):
    keys = ("backend", "T", "collect", "steady_s", "error")
    table = bench.Table(keys)
    table.row({"backend": "blockwise", "T": 64, "collect": ["sink_attn", "received_attn"]})
    table.row({"backend": "xla", "T": 131072, "steady_s": 0.123456, "error": "out of memory"})
    header, rule, *rows = capsys.readouterr().out.splitlines()
    starts = [header.index(k) for k in keys]
    assert rule.split() == ["-" * len(c) for c in rule.split()] and len(rows) == 2
    for row in rows:  # every cell starts where its header starts
        cells = row.split()
        assert [row.index(c, p) for c, p in zip(cells, starts)] == starts[: len(cells)]
    assert rows[0].split()[2] == "sink_attn+received_attn" and rows[1].split()[3] == "0.1235"


def test_bench_compile_quick(tmp_path, capsys):
    out = tmp_path / "compile.json"
    assert bench.main(["compile", "--quick", "--depths", "2", "4", "--out", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert [r["num_layers"] for r in records] == [2, 4]
    assert all(r["lower_s"] > 0 and r["compile_s"] > 0 for r in records)
