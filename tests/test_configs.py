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
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
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
    c = load_config(os.path.join(ROOT, "configs", "paper_120m.py"))
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
    path = os.path.join(ROOT, "configs", "context_length.py")
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
    return load_config(os.path.join(ROOT, "configs", "context_length.py:tiny,32"), list(overrides))


@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_seq_len_is_refused(value):
    with pytest.raises(ConfigError, match=f"seq_len={value} must be a positive int; set --config"):
        validate_config(tiny(f"--config.seq_len={value}"))


def test_backend_capabilities_are_checked_before_compiling():
    # cuDNN and Pallas need a GPU: refused on a CPU, accepted for a GPU.
    c = load_config(os.path.join(ROOT, "configs", "context_length.py:small,512"))
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
    path = os.path.join(ROOT, "configs", "packing.py")
    for name, arg in module(path).variants(size).items():
        c = load_config(f"{path}:{arg}")
        model_cfg = validate_config(c, platform="gpu")
        if c.data.intra_doc:
            assert model_cfg.attention in ("pallas", "blockwise"), name


def test_packing_measures_each_document_first_token_under_intra_doc_masking():
    path = os.path.join(ROOT, "configs", "packing.py")
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
    mod = module(os.path.join(ROOT, "configs", "packing.py"))
    for name, arg in mod.variants("paper").items():
        c = mod.get_config(arg)
        assert c.model.attention == ("pallas" if c.data.intra_doc else "cudnn"), name
        assert c.model.global_first_key == (name == "intra_fixed_bos"), name
