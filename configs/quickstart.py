"""Quickstart: tiny models on the built-in Bigram-Backcopy task at three context lengths.

    sinks-jax train --config configs/quickstart.py --workdir runs/quickstart

trains every variant into runs/quickstart/<variant> (offline, a few minutes on a laptop
CPU) and prints final sink rates and validation losses. One variant alone:
`--config configs/quickstart.py:128`.
"""

from sinks_jax.train.config_base import base_config

CONTEXTS = (32, 128, 512)  # training context lengths compared.
TINY_ARG = "32"  # the CPU smoke-test variant.


def variants(arg=None) -> dict[str, str]:
    """Variant name -> the `get_config` argument that builds it."""
    del arg
    return {f"T{t}": str(t) for t in CONTEXTS}


def get_config(arg=None):
    c = base_config()
    c.seed = 0  # init and data seed.
    c.num_steps = 300  # optimizer steps per variant.
    c.seq_len = CONTEXTS[-1] if arg is None else int(arg)  # training context (the swept value).
    c.tokens_per_step = 4096  # tokens per step, the same at every context length.
    c.micro_batch_size = 128  # rows per micro-batch (whole step in one micro-batch here).

    c.model.num_layers = 2  # tiny decoder.
    c.model.d_model = 64  # residual width.
    c.model.num_heads = 4  # query heads.
    c.model.num_kv_heads = 4  # multi-head attention.
    c.model.d_ff = 256  # SwiGLU width.
    c.model.attention = "blockwise"  # fused path: sink statistics come from the LSE.
    c.model.block_size = 128  # blockwise tile.

    c.data.source = "synthetic:bigram_backcopy"  # built-in task where a first-token sink forms.
    c.data.packing = "concat_bos"  # <bos> starts every document.

    c.optim.lr = 3e-3  # a tiny model trains fast at a large learning rate.
    c.optim.min_lr = 3e-4  # cosine floor.
    c.optim.warmup_steps = 30  # short warm-up.

    c.eval_every = 100  # evaluations per variant: 3.
    c.eval_batches = 2  # validation micro-batches.
    c.sink_stats_every = 25  # in-step sink statistics.
    c.log_every = 10  # metrics records.
    c.checkpoint_every = 300  # one checkpoint at the end.
    c.sweep_key = "seq_len"  # the family varies the context length.
    c.train_all_variants = arg is None  # the bare config runs the whole family.
    return c
