"""Every config file builds (default and every variant), its tiny variant trains one step, and
configs that cannot run are refused before anything is built, with one line naming the fix."""

import glob
import importlib.util
import os

import jax
import numpy as np
import pytest
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.train import optim
from sinks_jax.train.config_base import PACKING_GRID
from sinks_jax.train import step as step_lib
from sinks_jax.train.data import DataPipeline
from sinks_jax.train.validate import ConfigError, validate_config
from sinks_jax.train.main import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(ROOT, "sinks_jax", "configs")  # package data
CONFIGS = sorted(glob.glob(os.path.join(CONFIGS_DIR, "[!_]*.py")))
KEYS = (
    "seed",
    "num_steps",
    "seq_len",
    "tokens_per_step",
    "micro_batch_size",
    "eval_every",
    "checkpoint_every",
)


def module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_there_are_configs():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {
        "quickstart.py",
        "paper_120m.py",
        "context_length.py",
        "depth.py",
        "packing.py",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_and_variants_build(path):
    mod = module(path)
    specs = [path] + [
        f"{path}:{arg}" for arg in getattr(mod, "variants", lambda a=None: {})().values()
    ]
    for spec in specs:
        c = load_config(spec)
        for key in KEYS:
            assert key in c, f"{spec} lacks {key}"
        for key in ("source", "tokenizer", "packing", "intra_doc"):
            assert key in c.data
        validate_config(c)  # machine-independent checks (paper/small are GPU configs).
        optim.accumulation_steps(c.tokens_per_step, c.seq_len, c.micro_batch_size)


def test_paper_config_is_the_reconstructed_recipe():
    c = load_config(os.path.join(CONFIGS_DIR, "paper_120m.py"))
    m = c.model
    assert (m.num_layers, m.num_heads, m.d_model, m.d_ff, m.num_kv_heads, m.vocab_size) == (
        12,
        12,
        768,
        2048,
        1,
        32000,
    )
    assert (c.optim.lr, c.optim.min_lr, c.optim.warmup_steps) == (4e-4, 4e-5, 2000)
    assert (c.optim.b1, c.optim.b2, c.optim.weight_decay, c.optim.clip_norm) == (
        0.9,
        0.95,
        0.1,
        1.0,
    )
    assert c.tokens_per_step == 2**20
    n = ModelConfig.from_dict(m.to_dict()).param_count()
    assert 100e6 < n < 160e6, n


def test_context_length_family_holds_tokens_per_step_constant():
    path = os.path.join(CONFIGS_DIR, "context_length.py")
    configs = [load_config(f"{path}:{a}") for a in module(path).variants("small").values()]
    assert [c.seq_len for c in configs] == [128, 256, 512, 1024, 2048]
    assert len({c.tokens_per_step for c in configs}) == 1


# quickstart (the README's) and repro in the default suite, the rest in the second CI stage:
# the step is the same code, only the config differs (each case compiles a train step).
TINY_STEP_CASES = [
    p
    if os.path.basename(p) in ("quickstart.py", "repro.py")
    else pytest.param(p, marks=pytest.mark.slow)
    for p in CONFIGS
]


@pytest.mark.parametrize("path", TINY_STEP_CASES, ids=os.path.basename)
def test_tiny_variant_runs_one_step(path):
    mod = module(path)
    c = load_config(
        f"{path}:{mod.TINY_ARG}", ["--config.num_steps=2", "--config.optim.warmup_steps=1"]
    )
    model_cfg = validate_config(c, platform="cpu")
    k = optim.accumulation_steps(c.tokens_per_step, c.seq_len, c.micro_batch_size)
    data = DataPipeline(c, micro_batch=c.tokens_per_step // c.seq_len // k, accumulation=k)
    graphdef, state = nnx.split(Transformer(model_cfg, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    tx = optim.make_optimizer(c.optim, c.num_steps)
    batch = data.next_train()
    assert batch["tokens"].shape == (k, c.tokens_per_step // c.seq_len // k, c.seq_len)
    _, _, metrics = jax.jit(
        lambda p, o, b: step_lib.train_step(
            p,
            o,
            b,
            graphdef=graphdef,
            tx=tx,
            use_segments=bool(c.data.intra_doc),
            sink_stats=True,
        )
    )(params, tx.init(params), batch)
    assert np.isfinite(float(metrics["loss"])) and bool(metrics["finite"])
    assert metrics["sink_attn"].shape == (model_cfg.num_layers, model_cfg.num_heads)


def tiny(*overrides):
    return load_config(os.path.join(CONFIGS_DIR, "context_length.py:tiny,32"), list(overrides))


@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_seq_len_is_refused(value):
    with pytest.raises(ConfigError, match=f"seq_len={value} must be a positive int; set --config"):
        validate_config(tiny(f"--config.seq_len={value}"))


def test_backend_capabilities_are_checked_before_compiling():
    # cuDNN and Pallas need a GPU: refused on a CPU, accepted for a GPU.
    c = load_config(os.path.join(CONFIGS_DIR, "context_length.py:small,512"))
    with pytest.raises(ConfigError, match="only on gpu.*'cpu'.*--config.model.attention=blockwise"):
        validate_config(c, platform="cpu")
    assert validate_config(c, platform="gpu").attention == "cudnn"
    # Intra-document packing needs segment ids, which cuDNN does not have.
    c = tiny("--config.model.attention=cudnn", "--config.model.dtype=bfloat16")
    validate_config(c, platform="gpu")
    c = tiny("--config.model.attention=cudnn", "--config.model.dtype=bfloat16",
             "--config.data.intra_doc=True")  # fmt: skip
    with pytest.raises(ConfigError, match="has no segment ids.*can: xla, blockwise, pallas"):
        validate_config(c, platform="gpu")
    # Pallas tiles T by 128 (powers of two below): T=192 fails, 256 and the sink eval's 64 run.
    for t, ok in ((192, False), (256, True), (96, False), (64, True)):
        c = tiny("--config.model.attention=pallas", f"--config.seq_len={t}")
        if ok:
            validate_config(c, platform="gpu")
        else:
            with pytest.raises(ConfigError, match=f"multiples of 128.*not {t}"):
                validate_config(c, platform="gpu")
    # What the model config alone decides fails when the ModelConfig is built.
    with pytest.raises(ValueError, match="attention='cudnn' does not compute in dtype='float32'"):
        ModelConfig(attention="cudnn", dtype="float32")
    with pytest.raises(ValueError, match="attention='pallas' has no sliding window"):
        ModelConfig(attention="pallas", sliding_window=16)


def test_capability_table_agrees_with_the_kernels():
    """Every combination the table refuses is also refused by the kernel itself (the guards
    that fire at trace time), so the early check never lets through what would fail later."""
    import jax.numpy as jnp

    from sinks_jax.model import attention as attn
    from sinks_jax.model import backends

    def call(name, dtype, segments, first_key):
        q = jnp.zeros((1, 8, 2, 4), dtype)
        seg = jnp.ones((1, 8), jnp.int32) if segments else None
        return attn.attention(q, q, q, backend=name, segment_ids=seg, global_first_key=first_key)

    for name in backends.BACKENDS:
        for dtype in backends.ALL_DTYPES:
            for segments, first_key in ((False, False), (True, False), (True, True)):
                found = backends.problems(
                    name, dtype=dtype, segment_ids=segments, global_first_key=first_key
                )
                if found:
                    with pytest.raises(ValueError):
                        call(name, dtype, segments, first_key)
    assert backends.supporting(segment_ids=True, global_first_key=True, platform="gpu") == [
        "xla",
        "blockwise",
        "pallas",
    ]


@pytest.mark.parametrize("size", ["paper", "small"])
def test_packing_grid_picks_a_backend_that_can_mask(size):
    path = os.path.join(CONFIGS_DIR, "packing.py")
    for name, arg in module(path).variants(size).items():
        c = load_config(f"{path}:{arg}")
        model_cfg = validate_config(c, platform="gpu")
        if c.data.intra_doc:
            assert model_cfg.attention in ("pallas", "blockwise"), name


def test_packing_measures_each_document_first_token_under_intra_doc_masking():
    path = os.path.join(CONFIGS_DIR, "packing.py")
    got = {name: load_config(f"{path}:tiny,{name}").model.sink_key for name in PACKING_GRID}
    assert got == {
        "causal_bos": "window",  # causal: key 0 of the window.
        "causal_fixed_bos": "window",
        "intra_eos": "segment",  # intra-doc: each document's first token.
        "intra_bos": "segment",
        "intra_fixed_bos": "window",  # the fixed <bos>, visible to all (global_first_key).
    }


def test_packing_grid_trains_every_cell_on_a_fused_gpu_kernel():
    """No cell falls back to the slow pure-JAX path on GPU: causal cells use cuDNN, intra-doc
    cells Pallas (intra_fixed_bos included, with key 0 kept visible)."""
    mod = module(os.path.join(CONFIGS_DIR, "packing.py"))
    for name, arg in mod.variants("paper").items():
        c = mod.get_config(arg)
        assert c.model.attention == ("pallas" if c.data.intra_doc else "cudnn"), name
        assert c.model.global_first_key == (name == "intra_fixed_bos"), name


# ------------------------------------------------------------ where a config is found

def test_builtin_configs_by_name_package_path_and_old_path(tmp_path, monkeypatch):
    """From any directory: a built-in config by name, as `sinks_jax:configs/X.py`, and by
    the old `configs/X.py` / `X.py` paths; a file of that name in the current directory wins;
    a sweep's variants keep the spelling the user gave."""
    from sinks_jax.train.config_file import CONFIGS_DIR as packaged
    from sinks_jax.train.config_file import builtin_configs, resolve_config_spec
    from sinks_jax.train.sweep import family_variants, train_commands

    monkeypatch.chdir(tmp_path)
    assert packaged == CONFIGS_DIR
    assert {"quickstart", "context_length", "depth", "packing", "paper_120m", "repro"} <= set(
        builtin_configs()
    )
    quickstart = os.path.join(CONFIGS_DIR, "quickstart.py")
    for spec in ("quickstart", "sinks_jax:configs/quickstart.py", "configs/quickstart.py",
                 "quickstart.py"):
        assert resolve_config_spec(spec) == quickstart, spec
        assert resolve_config_spec(spec + ":128") == quickstart + ":128", spec
        assert load_config(spec + ":128").seq_len == 128, spec
        assert family_variants(spec)["T64"] == f"{spec}:64", spec
    assert resolve_config_spec("repro:experiment=depth") == os.path.join(
        CONFIGS_DIR, "repro.py:experiment=depth"
    )
    lines = train_commands("sinks_jax:configs/context_length.py:tiny", "w", [])
    assert lines[0].startswith("sinks-jax train --config=sinks_jax:configs/context_length.py:tiny,")
    (tmp_path / "quickstart.py").write_text(
        "from sinks_jax.train.config_base import base_config\n\n\n"
        "def get_config(arg=None):\n    c = base_config()\n    c.seq_len = 96\n    return c\n"
    )
    assert load_config("quickstart.py").seq_len == 96  # a file in the current directory wins
    assert load_config("quickstart").seq_len == 256  # a bare name is the built-in config
    assert load_config(str(tmp_path / "quickstart.py")).seq_len == 96  # any path


def test_config_lookup_errors_name_what_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'nope' does not exist; files built in .*quickstart"):
        load_config("nope")
    with pytest.raises(ConfigError, match=r"'configs/nope.py' does not exist; files built in"):
        load_config("configs/nope.py")
    with pytest.raises(ConfigError, match="no installed package 'no_such_pkg'"):
        load_config("no_such_pkg:configs/quickstart.py")
    with pytest.raises(ConfigError, match=r"does not exist; files next to it: .*quickstart.py"):
        load_config("sinks_jax:configs/nope.py")


@pytest.mark.slow
def test_configs_ship_in_the_wheel(tmp_path):
    """A wheel built from the source tree, installed without dependencies in a fresh venv
    (which borrows this environment's site-packages for jax & co.), runs the quickstart's
    config by name and by package path from a directory that has no configs/."""
    import shutil
    import site
    import subprocess
    import sys
    import zipfile

    try:  # the build runs without isolation (offline): it needs these in this environment.
        import setuptools
        import wheel
    except ImportError:
        pytest.skip("building the wheel offline needs setuptools>=68 and wheel (the parity extra)")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip(f"setuptools {setuptools.__version__} < 68 (pip install -e '.[parity]')")
    src = tmp_path / "src"  # a copy, so the build writes nothing into the repository.
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "sinks_jax"), src / "sinks_jax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(args, **kw):
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, **kw)
        assert out.returncode == 0, f"{args}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("sinks_jax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "sinks_jax/configs/quickstart.py" in z.namelist()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    (new_site,) = (venv / "lib").glob("python*/site-packages")
    # This environment's packages, after the venv's own (its .pth files are not run, so an
    # editable install of sinks_jax here does not shadow the wheel's).
    (new_site / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([py, "-c", "import sinks_jax.train.config_file as c; print(c.CONFIGS_DIR)"],
                cwd=work)
    assert where.strip().startswith(str(new_site)), where
    sinks_jax = str(venv / "bin" / "sinks-jax")
    printed = run([sinks_jax, "sweep", "quickstart", "--workdir", "runs", "--print"], cwd=work)
    assert printed.split()[:4] == ["sinks-jax", "train", "--config=quickstart:64",
                                    "--workdir=runs/T64"]
    out = run([sinks_jax, "train", "--config", "sinks_jax:configs/quickstart.py:64",
               "--workdir", "runs/T64", "--config.num_steps=2", "--config.eval_every=2",
               "--config.eval_batches=1", "--config.checkpoint_every=2",
               "--config.optim.warmup_steps=1"], cwd=work)
    assert (work / "runs" / "T64" / "summary.json").exists(), out
