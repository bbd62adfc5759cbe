"""The `sinks-jax` dispatcher: usage, unknown commands, bad input as one line of error (and
no workdir left behind by a run that could not start)."""

import pytest

from sinks_jax import cli

TINY = ["--config", "configs/context_length.py:tiny,32"]


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
    assert not (tmp_path / "run").exists()  # a run that failed to start leaves nothing.


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config", "configs/nope.py"], "config file 'configs/nope.py' does not exist; files"),
        (
            [*TINY, "--config.num_stepz=3"],
            'the config has no key \'num_stepz\'. Did you mean "num_steps" instead of "num_stepz"?',
        ),
        (
            [*TINY, "--config.model.num_layerz", "3"],
            'model has no key \'num_layerz\'. Did you mean "num_layers"',
        ),
        ([*TINY, "--config.seq_len=0"], "seq_len=0 must be a positive int; set --config.seq_len"),
        ([*TINY, "--config.seq_len=-1"], "seq_len=-1 must be a positive int"),
        ([*TINY, "--config.num_steps=abc"], "--config.num_steps=abc: invalid literal"),
        (
            ["--config", "configs/context_length.py:small,512"],
            "model.attention='cudnn' runs only on gpu, and JAX's platform here is 'cpu'",
        ),
        (  # fails after the data pipeline is set up.
            [*TINY, "--config.model.vocab_size=100"],
            "set --config.model.vocab_size=259",
        ),
    ],
)
def test_config_mistakes_are_one_line_and_leave_no_workdir(
    tmp_path, capsys, monkeypatch, args, expected
):
    monkeypatch.delenv("SINKS_JAX_DEBUG", raising=False)
    workdir = tmp_path / "run"
    assert cli.main(["train", *args, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[1] == "(set SINKS_JAX_DEBUG=1 for the traceback)", err
    assert err[0].startswith("sinks-jax train: error: ") and expected in err[0], err[0]
    assert not workdir.exists()


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SINKS_JAX_DEBUG", "1")
    with pytest.raises(ValueError, match="seq_len=0"):
        cli.main(["train", *TINY, "--config.seq_len=0", "--workdir", str(tmp_path / "run")])
