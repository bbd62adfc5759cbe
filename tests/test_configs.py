"""Every config file builds (default and every variant), and its tiny variant trains one step."""

import glob
import importlib.util
import os

import jax
import numpy as np
import pytest
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.train import optim
from sinks_jax.train import step as step_lib
from sinks_jax.train.data import DataPipeline
from sinks_jax.train.loop import validate_config
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
        model_cfg = ModelConfig.from_dict(c.model.to_dict())
        validate_config(c, model_cfg)
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


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_tiny_variant_runs_one_step(path):
    mod = module(path)
    c = load_config(
        f"{path}:{mod.TINY_ARG}", ["--config.num_steps=2", "--config.optim.warmup_steps=1"]
    )
    model_cfg = ModelConfig.from_dict(c.model.to_dict())
    validate_config(c, model_cfg)
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


def test_packing_grid_trains_every_cell_on_a_fused_gpu_kernel():
    """No cell falls back to the slow pure-JAX path on GPU: causal cells use cuDNN, intra-doc
    cells Pallas (intra_fixed_bos included, with key 0 kept visible)."""
    mod = module(os.path.join(ROOT, "configs", "packing.py"))
    for name, arg in mod.variants("paper").items():
        c = mod.get_config(arg)
        assert c.model.attention == ("pallas" if c.data.intra_doc else "cudnn"), name
        assert c.model.global_first_key == (name == "intra_fixed_bos"), name
