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


def test_config_paths_resolve_in_the_current_directory_then_the_repository(tmp_path, monkeypatch):
    """`configs/X.py` and `X.py` from any directory find the repository's configs/; a file of
    that name in the current directory wins."""
    import os

    from sinks_jax.train.config_file import load_config
    from sinks_jax.train.sweep import family_variants

    repo_configs = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
    monkeypatch.chdir(tmp_path)
    for spec in ("configs/quickstart.py:128", "quickstart.py:128"):
        assert load_config(spec).seq_len == 128
    variants = family_variants("configs/quickstart.py")
    assert variants["T64"] == os.path.join(repo_configs, "quickstart.py") + ":64"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.py").write_text(
        "from sinks_jax.train.config_base import base_config\n\n\n"
        "def get_config(arg=None):\n    c = base_config()\n    c.seq_len = 96\n    return c\n"
    )
    assert load_config("configs/quickstart.py").seq_len == 96
    with pytest.raises(ValueError, match="does not exist"):
        load_config("configs/no_such_family.py")
