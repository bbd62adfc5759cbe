"""`sinks-jax stream` and `sinks-jax generate`: the table, stream.json's schema, the files
beside it, and one-line errors (exit 2) on bad input. Tiny random models only."""

import json

import numpy as np
import pytest

from sinks_jax import cli

TINY = ["stream", "--init-tiny", "--max-tokens", "160", "--bin", "40", "--curve-bin", "20"]

RECORD_KEYS = {
    "name",
    "kind",
    "sinks",
    "window",
    "cache_size",
    "group",
    "mode",
    "num_tokens",
    "num_predicted",
    "mean_nll",
    "ppl",
    "ppl_low",
    "ppl_high",
    "nll_low",
    "nll_high",
    "after_eviction",
    "curve",
    "nll_key",
    "seconds",
    "tokens_per_second",
}
SETTINGS_KEYS = {
    "command",
    "model",
    "model_name",
    "family",
    "context",
    "tokenizer",
    "text",
    "bos",
    "num_tokens",
    "streams",
    "mode",
    "backend",
    "dtype",
    "bin",
    "curve_bin",
    "bootstrap",
    "device",
    "platform",
    "jax",
    "date",
}


def test_stream_writes_table_json_npz_and_figure(tmp_path, capsys):
    out = tmp_path / "s"
    argv = [*TINY, "--size", "32", "--sinks", "0", "2", "--dense", "--bos", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 sinks" in printed and "2 sinks" in printed and "dense" in printed
    assert "tiny size 32" in printed
    result = json.loads((out / "stream.json").read_text())
    assert result["schema"] == "sinks_jax.stream/1"
    assert SETTINGS_KEYS <= set(result["settings"])
    assert result["settings"]["bos"] is True and result["settings"]["num_tokens"] == 160
    names = [r["name"] for r in result["records"]]
    assert names == ["0+32", "2+30", "dense"]
    nll = np.load(out / "stream_nll.npz")
    for rec in result["records"]:
        assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
        arr = nll[rec["nll_key"]]
        assert arr.shape == (1, 159) and rec["num_predicted"] == 159
        assert rec["mean_nll"] == pytest.approx(float(arr.astype(np.float64).mean()), rel=1e-6)
        assert rec["ppl"] == pytest.approx(np.exp(rec["mean_nll"]))
        assert rec["ppl_low"] <= rec["ppl"] <= rec["ppl_high"]
        assert rec["curve"]["tokens"][-1] == 160 and len(rec["curve"]["ppl_bin"]) == 8
    cache = result["records"][1]
    assert (cache["kind"], cache["sinks"], cache["window"], cache["cache_size"]) == (
        "cache",
        2,
        30,
        32,
    )
    assert cache["after_eviction"]["num_predicted"] == 159 - 32
    dense = result["records"][2]
    assert dense["window"] is None and dense["after_eviction"] is None
    table = result["table"]
    assert table["columns"] == ["0", "2", "dense"]
    assert table["rows"][0]["cells"]["dense"] == dense["ppl"]
    assert (out / "stream.png").stat().st_size > 0 and "| cache |" in (
        out / "stream.md"
    ).read_text()


def test_stream_token_file_and_both_modes_agree(tmp_path, capsys):
    ids = tmp_path / "ids.jsonl"
    ids.write_text("\n".join(json.dumps({"ids": list(range(i, i + 50))}) for i in (0, 60, 120)))
    out = tmp_path / "s"
    argv = [
        *TINY,
        "--tokens",
        str(ids),
        "--cache",
        "1+15",
        "--mode",
        "both",
        "--doc-sep",
        "none",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    rec = json.loads((out / "stream.json").read_text())["records"][0]
    assert rec["num_tokens"] == 150 and rec["check"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--cache", "4-60"], "write SINKS+WINDOW"),
        (["--size", "4", "--sinks", "4"], "the window would be 0"),
        (["--size", "400"], "nothing would be evicted"),
        (["--text", "/nonexistent/book.txt", "--size", "32"], "no such file"),
        (["--tokens", "IDS", "--size", "16"], "outside the model's vocabulary"),
        (["--recompute"], "--recompute needs a window"),
        ([], "no cache to read with"),
    ],
)
def test_stream_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, extra, expected):
    monkeypatch.delenv("SINKS_JAX_DEBUG", raising=False)
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([1, 2, 3, 10**6] + list(range(40))))
    extra = [str(ids) if a == "IDS" else a for a in extra]
    assert cli.main([*TINY, *extra, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("sinks-jax stream: error:")]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err


def test_stream_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*TINY, "--window", "0", "--out", "/nonexistent"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--window: 0 is too small" in err[0]


def test_generate_with_a_bounded_cache(capsys):
    argv = [
        "generate",
        "--init-tiny",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "12",
        "--window",
        "4",
        "--sinks",
        "1",
    ]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("Hello")
    assert cli.main(["generate", "--init-tiny", "--prompt", "x", "--sinks", "2"]) == 2
    assert "--sinks needs --window" in capsys.readouterr().err
