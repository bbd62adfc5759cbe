"""The `sinks-jax` dispatcher: usage, unknown commands, bad input as one line of error."""

from sinks_jax import cli


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 0
    assert "analyze" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_bad_input_is_one_actionable_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SINKS_JAX_DEBUG", raising=False)
    argv = [
        "train",
        "--config",
        "configs/context_length.py:tiny,32",
        "--workdir",
        str(tmp_path / "run"),
        "--config.data.source=text:/nonexistent/*.txt",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no file matches '/nonexistent/*.txt'" in err and "Traceback" not in err
