"""The `sinks-jax` dispatcher: usage, unknown commands, bad input as one line of error (and
no workdir left behind by a run that could not start)."""

import pytest

import sinks_jax
from sinks_jax import cli

TINY = ["--config", "configs/context_length.py:tiny,32"]


def test_usage_version_and_unknown_command(capsys):
    assert cli.main([]) == 2  # a missing command is a usage error (argparse's convention)
    assert "analyze" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "analyze" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sinks-jax {sinks_jax.__version__}"
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


# One bad value per numeric flag of every command: one line naming the value and the fix.
ANALYZE = ["analyze", "--init-tiny"]
BAD_FLAGS = [
    ([*ANALYZE, "--num-prompts", "-3"], "--num-prompts: -3 is too small; give a whole number >= 1"),
    ([*ANALYZE, "--num-prompts", "all"], "--num-prompts: 'all' is not a whole number"),
    ([*ANALYZE, "--seq-len", "1"], "--seq-len: 1 is too small; give a whole number >= 2"),
    ([*ANALYZE, "--eps", "0.3", "0"], "--eps: '0' is outside (0, 1]"),
    ([*ANALYZE, "--eps", "nan"], "--eps: 'nan' is outside (0, 1]"),
    ([*ANALYZE, "--batch-size", "0"], "--batch-size: 0 is too small"),
    ([*ANALYZE, "--spread-len", "0"], "--spread-len: 0 is too small"),
    ([*ANALYZE, "--jacobian-chunk", "0"], "--jacobian-chunk: 0 is too small"),
    ([*ANALYZE, "--jacobian-directions", "0"], "'0' is neither a whole number >= 1 nor 'all'"),
    ([*ANALYZE, "--long-context", "1"], "--long-context: 1 is too small"),
    ([*ANALYZE, "--seed", "-1"], "--seed: -1 is too small; give a whole number >= 0"),
    (["prepare", "--source", "x", "--shard-tokens", "0"], "--shard-tokens: 0 is too small"),
    (["prepare", "--source", "x", "--max-documents", "-5"], "--max-documents: -5 is too small"),
    (["prepare", "--source", "x", "--seq-len", "0"], "--seq-len: 0 is too small"),
    (["tokenizer", "train", "--source", "x", "--vocab-size", "0"], "--vocab-size: 0 is too small"),
    (
        ["tokenizer", "train", "--source", "x", "--vocab-size", "8", "--character-coverage", "2"],
        "--character-coverage: '2' is outside (0, 1]",
    ),
    (["bench", "attention", "--iters", "0"], "--iters: 0 is too small"),
    (["bench", "attention", "--seq-lens", "128", "-1"], "--seq-lens: -1 is too small"),
    (
        ["bench", "attention", "--warmup", "-1"],
        "--warmup: -1 is too small; give a whole number >= 0",
    ),
    (["bench", "scaling", "--accumulation", "0"], "--accumulation: 0 is too small"),
    (["report", "d", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv, expected", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_numeric_flags_are_one_line_and_exit_2(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", "/nonexistent/out"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"sinks-jax {argv[0]}"), err
    assert expected in err[0] and "--help` lists the options" in err[0], err[0]


def test_no_command_parses_a_number_unchecked():
    """Every numeric flag goes through cli_args.whole / cli_args.number (checked, one line)."""
    import pathlib
    import re

    root = pathlib.Path(sinks_jax.__file__).parent
    bare = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\btype=(int|float)\b", line)
    ]
    assert not bare, bare


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
    from sinks_jax.train.config_file import load_config
    from sinks_jax.train.sweep import family_variants

    monkeypatch.chdir(tmp_path)
    for spec in ("configs/quickstart.py:128", "quickstart.py:128"):
        assert load_config(spec).seq_len == 128
    variants = family_variants("configs/quickstart.py")
    assert variants["T64"] == "configs/quickstart.py:64"  # as the user spelled it
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.py").write_text(
        "from sinks_jax.train.config_base import base_config\n\n\n"
        "def get_config(arg=None):\n    c = base_config()\n    c.seq_len = 96\n    return c\n"
    )
    assert load_config("configs/quickstart.py").seq_len == 96
    with pytest.raises(ValueError, match="does not exist"):
        load_config("configs/no_such_family.py")


def test_analyze_help_names_gguf_and_a_bad_gguf_file_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SINKS_JAX_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["analyze", "--help"])
    assert "GGUF file (.gguf" in " ".join(capsys.readouterr().out.split())
    bad = tmp_path / "model.gguf"
    bad.write_text("not a model\n")
    assert cli.main(["analyze", "--hf", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{str(bad)!r} is not a valid GGUF file (it does not start with b'GGUF'" in err
    assert "sinks-jax models fetch smollm2-135m" in err and "Traceback" not in err


def test_sweep_only_names_the_variants(tmp_path, capsys):
    argv = ["sweep", "quickstart", "--workdir", str(tmp_path), "--only", "T64,T99"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--only T99: no such variant of quickstart; choose from T64, T128, T256." in err
