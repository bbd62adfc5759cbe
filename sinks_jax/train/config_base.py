"""The base training config: every key a training config has, with its default and meaning.

Config files (the built-in ones in `sinks_jax/configs/`) start from `base_config()` and change what their experiment needs;
`--config.key=value` overrides any of these keys on the command line.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from sinks_jax.model import backends


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameter init and data sampling/shuffling seed.
    c.num_steps = 1000  # optimizer steps.
    c.seq_len = 256  # training context length T (tokens per row).
    c.tokens_per_step = 2**16  # tokens per optimizer step, held constant across seq_len.
    c.micro_batch_size = 64  # rows per micro-batch, global across devices (grad accumulation).

    m = c.model = ml_collections.ConfigDict()  # sinks_jax.model.ModelConfig fields.
    m.vocab_size = 259  # >= the tokenizer's vocabulary (byte tokenizer: 259).
    m.num_layers = 2  # decoder layers (stacked and scanned).
    m.d_model = 64  # residual width.
    m.num_heads = 4  # query heads.
    m.num_kv_heads = 4  # key/value heads (1 = multi-query, as the paper's 120M model).
    m.d_ff = 256  # SwiGLU hidden width.
    m.head_dim = placeholder(int)  # None: d_model // num_heads.
    m.rope_theta = 10000.0  # RoPE base.
    m.norm_eps = 1e-5  # RMSNorm epsilon.
    m.tie_embeddings = False  # share input embedding and output head.
    m.dtype = "float32"  # compute dtype ("bfloat16" on accelerators).
    m.param_dtype = "float32"  # parameter (master weight) dtype.
    m.logits_dtype = "float32"  # output-head result dtype ("bfloat16": faster, CE still fp32).
    m.attention = "blockwise"  # backend: xla | blockwise | cudnn | pallas | splash.
    m.attention_variant = "softmax"  # softmax | sink_logit | softmax_plus_one | gated | kv_bias
    # | sigmoid: how a head can do nothing (model/variants.py; sigmoid: xla or blockwise).
    m.remat = False  # recompute layers in the backward pass (saves memory).
    m.scan_unroll = 1  # layers per iteration of the layer scan (num_layers: fully unrolled).
    m.head_chunk = 0  # > 0: the training loss fuses head and CE over this many tokens at a time.
    m.global_first_key = False  # key 0 visible to every query under intra-doc masking.
    m.sink_key = "window"  # sink statistics against key 0 ("window") or each doc's first key.
    m.block_size = 512  # query/key block of the blockwise and splash backends.
    m.norm_type = "rms"  # rms | layer.
    m.activation = "silu"  # MLP activation.
    m.gated_mlp = True  # SwiGLU (gated) or a plain MLP.
    m.position_type = "rope"  # rope | learned | none.
    m.qkv_bias = False  # biases on q/k/v projections.
    m.init_std = 0.02  # std of the normal initialiser.

    d = c.data = ml_collections.ConfigDict()
    d.source = "synthetic:bigram_backcopy"  # text:GLOB | synthetic:KIND | tfds:NAME | prepared:DIR.
    d.tokenizer = "byte"  # byte | sp:PATH.model | hf:PATH/tokenizer.json.
    d.packing = "concat_bos"  # none | concat | concat_bos | fixed_bos (PAPER.md section 3).
    d.intra_doc = False  # attend only within the document (segment masking).
    d.reset_positions = False  # positions restart at every document.

    o = c.optim = ml_collections.ConfigDict()
    o.lr = 4e-4  # peak learning rate (after warm-up).
    o.min_lr = 4e-5  # cosine floor reached at num_steps.
    o.warmup_steps = 100  # linear warm-up from 0.
    o.b1 = 0.9  # Adam beta1.
    o.b2 = 0.95  # Adam beta2.
    o.eps = 1e-8  # Adam epsilon.
    o.weight_decay = 0.1  # AdamW decay (matrices only; not norms/biases).
    o.clip_norm = 1.0  # global gradient-norm clip (<= 0: off).

    c.eval_every = 200  # steps between evaluations (and at the last step).
    c.eval_batches = 4  # held-out micro-batches for the validation loss.
    c.eval_sink_sequences = 32  # held-out documents for sink scores at T = eval_sink_len.
    c.eval_sink_len = 64  # the literature's T for sink rates (Gu et al.; paper Table 1).
    c.eval_sink_windows = False  # sink sequences: document starts (False) or windows anywhere.
    c.eval_bootstrap = 1000  # bootstrap resamples of the final sink profile (summary.json).
    c.sink_stats_every = 50  # steps between in-step sink statistics at full context (0: off).
    c.log_every = 10  # steps between metrics.jsonl / TensorBoard records.
    c.checkpoint_every = 500  # steps between checkpoints (and at the last step).
    c.keep_checkpoints = 3  # checkpoints kept (older ones deleted).
    c.peak_flops_per_device = 0.0  # for MFU; 0 = look up the device kind (CPU: no MFU).

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel axis size (-1: all remaining devices).
    c.mesh.fsdp = 1  # FSDP axis size (parameters and optimizer state sharded).

    c.sweep_key = ""  # dotted key that a config family varies (for reports), e.g. "seq_len".
    c.train_all_variants = False  # `train` runs every variant of the file (the quickstart).
    return c


# Model and batch presets shared by the experiment families (configs/*.py).
#   paper: the reconstructed 120M LLaMA-style model and recipe of PAPER.md section 3.
#   small: a ~20M byte-level model for minutes on one GPU.
#   tiny:  a CPU smoke-test size (seconds).
SIZES = {
    "paper": {
        "model": {
            "vocab_size": 32000,
            "num_layers": 12,
            "d_model": 768,
            "num_heads": 12,
            "num_kv_heads": 1,
            "d_ff": 2048,
            "dtype": "bfloat16",
            "attention": "cudnn",
            "scan_unroll": 12,  # no layer loop: +24 % tokens/s on an H200 (BENCHMARKS.md)
            "head_chunk": 8192,  # head + CE fused by 8192 tokens: 2.5x less memory
        },
        "tokenizer": "sp:tokenizer.model",
        "source": "prepared:data/prepared",
        "tokens_per_step": 2**20,
        "micro_tokens": 2**16,
        "num_steps": 4768,  # 5B tokens.
        "optim": {"lr": 4e-4, "min_lr": 4e-5, "warmup_steps": 2000},
        "eval_every": 500,
        "checkpoint_every": 500,
        "sink_stats_every": 100,
    },
    "small": {
        "model": {
            "vocab_size": 259,
            "num_layers": 6,
            "d_model": 384,
            "num_heads": 6,
            "num_kv_heads": 1,
            "d_ff": 1024,
            "dtype": "bfloat16",
            "attention": "cudnn",
        },
        "tokenizer": "byte",
        "source": "text:data/*.jsonl*",
        "tokens_per_step": 2**17,
        "micro_tokens": 2**17,
        "num_steps": 600,  # 79M tokens.
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 60},
        "eval_every": 100,
        "checkpoint_every": 300,
        "sink_stats_every": 25,
    },
    "tiny": {
        "model": {
            "vocab_size": 259,
            "num_layers": 2,
            "d_model": 32,
            "num_heads": 2,
            "num_kv_heads": 1,
            "d_ff": 64,
            "dtype": "float32",
            "attention": "blockwise",
            "block_size": 32,
        },
        "tokenizer": "byte",
        "source": "synthetic:bigram_backcopy",
        "tokens_per_step": 512,
        "micro_tokens": 256,
        "num_steps": 4,
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1},
        "eval_every": 4,
        "checkpoint_every": 4,
        "sink_stats_every": 2,
    },
}


# The data-packing grid of PAPER.md section 3 (Table 2): cell name -> (packing mode, intra-doc).
PACKING_GRID = {
    "causal_bos": ("concat_bos", False),  # causal, <bos> at document starts.
    "causal_fixed_bos": ("fixed_bos", False),  # causal, <bos> fixed at position 0.
    "intra_eos": ("concat", True),  # intra-doc, documents separated by <eos> only.
    "intra_bos": ("concat_bos", True),  # intra-doc, <bos> at document starts.
    "intra_fixed_bos": ("fixed_bos", True),  # intra-doc, fixed <bos> visible to all.
}


def apply_packing_cell(c: ml_collections.ConfigDict, name: str) -> None:
    """Set `c.data` (and the model keys the cell needs) to the packing grid's cell `name`."""
    if name not in PACKING_GRID:
        raise ValueError(f"packing variant {name!r} is not one of {sorted(PACKING_GRID)}.")
    c.data.packing, c.data.intra_doc = PACKING_GRID[name]
    c.data.reset_positions = c.data.intra_doc  # documents start at position 0 when masked apart.
    # The fixed <bos> must stay visible to every document under intra-doc masking.
    c.model.global_first_key = c.data.packing == "fixed_bos" and c.data.intra_doc
    # The sink the in-step statistic measures: under intra-doc masking without a fixed <bos>,
    # each document's first token (the only key every query of the document sees first);
    # otherwise key 0 (the fixed <bos>, or the window's first token under causal masking).
    fixed = c.data.packing == "fixed_bos"
    c.model.sink_key = "segment" if c.data.intra_doc and not fixed else "window"
    # cuDNN has no segment masking (nor sigmoid attention): the fastest backend that masks
    # documents apart (and keeps the fixed <bos> visible, runs the variant) instead.
    needs = {"segment_ids": c.data.intra_doc, "global_first_key": c.model.global_first_key,
             "variant": c.model.get("attention_variant")}  # fmt: skip
    if backends.problems(c.model.attention, **needs):
        c.model.attention = "pallas" if "pallas" in backends.supporting(**needs) else "blockwise"


def sized_config(size: str, seq_len: int) -> ml_collections.ConfigDict:
    """`base_config()` with a SIZES preset at context length `seq_len`.

    tokens_per_step is the preset's (constant across seq_len); micro_batch_size is the
    preset's micro-batch token budget divided by seq_len (at least 1 row).
    """
    if size not in SIZES:
        raise ValueError(f"size {size!r} is unknown; choose one of {sorted(SIZES)}.")
    p = SIZES[size]
    c = base_config()
    c.model.update(p["model"])
    c.optim.update(p["optim"])
    c.data.tokenizer, c.data.source = p["tokenizer"], p["source"]
    c.seq_len = seq_len
    c.tokens_per_step, c.num_steps = p["tokens_per_step"], p["num_steps"]
    c.micro_batch_size = max(1, min(p["micro_tokens"], p["tokens_per_step"]) // seq_len)
    c.eval_every, c.checkpoint_every = p["eval_every"], p["checkpoint_every"]
    c.sink_stats_every = p["sink_stats_every"]
    if size == "tiny":
        c.eval_batches, c.eval_sink_sequences, c.log_every = 1, 4, 1
    return c


def parse_arg(arg: str | None, default_size: str, default_value: str) -> tuple[str, str]:
    """`"SIZE[,VALUE]"` -> (size, value) with defaults, for `get_config(arg)`."""
    parts = [] if not arg else [p.strip() for p in str(arg).split(",")]
    size = parts[0] if parts and parts[0] else default_size
    value = parts[1] if len(parts) > 1 else default_value
    if size not in SIZES:
        raise ValueError(
            f"config argument {arg!r}: size {size!r} is not one of {sorted(SIZES)} "
            "(form: SIZE[,VALUE], e.g. small,512)."
        )
    return size, value
