"""Quickstart: tiny models on the built-in Bigram-Backcopy task at three context lengths.

    sinks-jax train --config configs/quickstart.py --workdir runs/quickstart

trains every variant into runs/quickstart/<variant> (offline, about 3 minutes on a 2-core
CPU) and prints final sink rates and validation losses. One variant alone:
`--config configs/quickstart.py:128`.

Bigram-Backcopy (sinks_jax.data.sources): symbols follow a fixed bigram chain, except after a
trigger symbol, where the next symbol copies the one before the trigger. Attention is needed
only at triggers; heads with nothing to do learn to park their attention on the fixed <bos>
at position 0 (a first-token sink) within a few hundred steps, and the model then depends on
that <bos>: evaluated without it, its heads are not sinks. At this tiny budget whether and
when each head turns into a sink varies with the context length and the seed (measured on a
2-core CPU, seed 0: sink rates at eps 0.3 of 24 %, 41 % and 0 % at T = 64, 128, 256); the
paper's trend (more sinks with longer contexts) concerns long training of larger models.
"""

from sinks_jax.train.config_base import base_config

CONTEXTS = (64, 128, 256)  # training context lengths compared.
TINY_ARG = "64"  # the CPU smoke-test variant.


def variants(arg=None) -> dict[str, str]:
    """Variant name -> the `get_config` argument that builds it."""
    del arg
    return {f"T{t}": str(t) for t in CONTEXTS}


def get_config(arg=None):
    c = base_config()
    c.seed = 0  # init and data seed.
    c.num_steps = 700  # optimizer steps per variant.
    c.seq_len = CONTEXTS[-1] if arg is None else int(arg)  # training context (the swept value).
    c.tokens_per_step = 2048  # tokens per step, the same at every context length.
    c.micro_batch_size = 128  # rows per micro-batch (whole step in one micro-batch here).

    c.model.num_layers = 2  # tiny decoder.
    c.model.d_model = 64  # residual width.
    c.model.num_heads = 4  # query heads: more than the task needs, so some go dormant.
    c.model.num_kv_heads = 4  # multi-head attention.
    c.model.d_ff = 256  # SwiGLU width.
    c.model.attention = "blockwise"  # fused path: sink statistics come from the LSE.
    c.model.block_size = 128  # blockwise tile.

    c.data.source = "synthetic:bigram_backcopy"  # built-in task where a first-token sink forms.
    c.data.packing = "fixed_bos"  # a <bos> at position 0 of every row: the sink's anchor.

    c.optim.lr = 2e-2  # large learning rates make sinks form sooner (Gu et al.).
    c.optim.min_lr = 2e-3  # cosine floor.
    c.optim.warmup_steps = 30  # short warm-up.

    c.eval_every = 100  # evaluations per variant: 7.
    c.eval_batches = 2  # validation micro-batches.
    c.sink_stats_every = 25  # in-step sink statistics.
    c.log_every = 10  # metrics records.
    c.checkpoint_every = 700  # one checkpoint at the end.
    c.sweep_key = "seq_len"  # the family varies the context length.
    c.train_all_variants = arg is None  # the bare config runs the whole family.
    return c
