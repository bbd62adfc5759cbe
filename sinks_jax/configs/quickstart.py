"""Quickstart: tiny models on the built-in Bigram-Backcopy task at three context lengths.

    sinks-jax train --config quickstart --workdir runs/quickstart

trains every variant into runs/quickstart/<variant> (offline, about 5 minutes on a 2-core
CPU) and prints final sink rates and validation losses. One variant alone:
`--config quickstart:128`.

Bigram-Backcopy (sinks_jax.data.sources): symbols follow a fixed bigram chain, except after a
trigger symbol, where the next symbol copies the one before the trigger. Attention is needed
only at triggers; heads with nothing to do may park their attention on the fixed <bos> at
position 0 (a first-token sink).

What it prints (seed 0, float32 on a 2-core x86 CPU; `sinks-jax report --wide` for every
column): sink rates at eps 0.3 with <bos> of 50 %, 4 %, 7 % at T = 64, 128, 256 (every head
of the first layer is a sink at T = 64, few heads are at the longer contexts), and at most
2 % without <bos> at every T: the sinks sit on the <bos> token, not on whatever comes first.
At this tiny budget (700 steps) whether and when a head turns into a sink depends on the
context length, the seed and even the order of floating-point sums, so other CPUs may print
other rates at T = 128 and 256; the paper's trend (more sinks with longer contexts) concerns
long training of larger models. tests/test_quickstart.py checks the numbers quoted here.
"""

from sinks_jax.train.config_base import base_config

CONTEXTS = (64, 128, 256)  # training context lengths compared.
# Sink rate (eps 0.3, with <bos>, %) that the command prints per variant, as quoted above.
QUOTED_SINK_RATES = {"T64": 50.0, "T128": 4.3, "T256": 6.6}
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
