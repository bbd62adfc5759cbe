"""`sinks-jax report`: the table of a sweep's runs (no jax needed)."""

import json

from sinks_jax.train import report


def make_run(root, name, config, final):
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "val_loss": 2.5, **final}) + "\n")
    return str(d)


def header(text):
    return [c.strip() for c in text.splitlines()[0].strip("|").split("|")]


def test_categorical_sweep_table_has_unique_columns(tmp_path):
    for name in ("causal_bos", "intra_bos"):
        config = {"sweep_key": "variant", "variant": name, "eval_sink_len": 64}
        make_run(tmp_path, name, config, {"val_sink_rate_0.3_bos": 0.5})
    runs = report.find_runs(str(tmp_path))
    cols = header(report.table(runs))
    assert len(cols) == len(set(cols)) and cols[:2] == ["run", "step"]
    row = [c.strip() for c in report.table(runs).splitlines()[2].strip("|").split("|")]
    assert row[:3] == ["causal_bos", "10", "2.500"] and row[cols.index("sink% eps.3 <bos>")] == "50.0"
    assert report.eval_len(runs) == "64"


def test_numeric_sweep_table_keeps_the_swept_value(tmp_path):
    for T in (128, 256):
        config = {"sweep_key": "seq_len", "seq_len": T, "eval_sink_len": 32}
        make_run(tmp_path, f"T{T}", config, {})
    runs = report.find_runs(str(tmp_path))
    cols = header(report.table(runs))
    assert cols[:3] == ["run", "seq_len", "step"] and len(cols) == len(set(cols))
    assert report.eval_len(runs) == "32"
