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


def test_default_table_fits_100_columns_and_says_what_it_measures(tmp_path, capsys):
    final = {
        "val_loss_bos": 3.02, "val_loss_nobos": 3.022, "val_sink_rate_0.3_bos": 0.5,
        "val_sink_rate_0.8_bos": 0.0, "val_sink_rate_0.3_nobos": 0.0078,
        "val_sink_rate_0.8_nobos": 0.0, "val_sink_score_bos": 0.362, "val_sink_score_nobos": 0.071,
    }  # fmt: skip
    for T in (64, 128, 256):
        config = {"sweep_key": "seq_len", "seq_len": T, "eval_sink_len": 48}
        make_run(tmp_path, f"T{T}", config, final)
    runs = report.find_runs(str(tmp_path))
    narrow, wide = report.table(runs, wide=False), report.table(runs, wide=True)
    assert max(len(line) for line in narrow.splitlines()) <= 100
    assert len(header(narrow)) == 7 and len(header(wide)) == 12  # run, seq_len, 5 | 10 numbers
    assert len({len(line) for line in narrow.splitlines()}) == 1  # aligned columns
    row = [c.strip() for c in narrow.splitlines()[3].strip("|").split("|")]
    assert row == ["T128", "128", "2.500", "3.020", "3.022", "50.0", "0.8"]
    notes = report.notes(runs, wide=False)
    assert max(len(line) for line in notes.splitlines()) <= 100
    flat = " ".join(notes.split())
    assert "(step 10)" in flat and "training length T = 64/128/256 (seq_len)" in flat
    assert "every other column at T = 48 (eval_sink_len)" in flat  # read from the configs
    assert "95 % bootstrap intervals" in flat and "--wide adds eps 0.8" in flat
    # `sinks-jax report` prints the notes and the narrow table; report.md keeps every column.
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert narrow in out
    # Every line fits 100 columns but the ones naming files, whose length is the path's.
    assert max(len(line) for line in out.splitlines() if str(tmp_path) not in line) <= 100
    md = (tmp_path / "report.md").read_text()
    assert wide in md and "95 % bootstrap" in md
    assert report.main([str(tmp_path), "--wide"]) == 0
    assert wide in capsys.readouterr().out


def test_report_of_runs_never_evaluated_is_refused(tmp_path, capsys):
    d = tmp_path / "T64"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"seq_len": 64}))
    assert report.main([str(tmp_path)]) == 2
    assert "has reached its first evaluation yet" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_a_single_run_ends_with_a_readable_summary():
    import ml_collections

    from sinks_jax.train.main import summary_lines

    prof = {"rate": 0.5, "rate_low": 0.25, "rate_high": 0.75}
    summary = {
        "status": "finished", "step": 700, "val_loss": 3.0605, "val_loss_bos": 3.02,
        "val_loss_nobos": 3.0224, "val_sink_rate_0.3_bos": 0.5, "val_sink_rate_0.8_bos": 0.0,
        "val_sink_rate_0.3_nobos": 0.0078, "val_sink_rate_0.8_nobos": 0.0,
        "sink_profile": {"bos": {"0.3": prof}}, "perturbation_spread": {"rows": 3},
    }  # fmt: skip
    config = ml_collections.ConfigDict({"seq_len": 128, "eval_sink_len": 48})
    lines = summary_lines(summary, config, "runs/q")
    assert lines[0] == "finished 700 steps in runs/q"
    assert lines[1] == "  validation loss at T = 128 (seq_len): 3.061 nats"
    assert lines[2].startswith("  at T = 48 (eval_sink_len)")
    assert lines[3].split() == ["with", "<bos>", "3.020", "50.0", "%", "[25.0,", "75.0]", "0.0",
                                "%"]  # fmt: skip
    assert lines[4].split() == ["text", "only", "3.022", "0.8", "%", "0.0", "%"]
    assert "95 % bootstrap intervals" in lines[5] and lines[-1].endswith("sinks-jax report runs/q")
    assert all(len(line) <= 100 and "{" not in line for line in lines)
