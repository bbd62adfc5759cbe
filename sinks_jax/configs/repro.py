"""Reduced-scale reproduction of the paper's training claims, one H200 per run (REPRODUCTION.md).

The protocol, shared by every run:
- data: the offline corpus copied to data_repro/ (gutenberg, openstax, kjv_bible); the
  `valid-*` files are the held-out set; a byte-level BPE of 16,384 ids trained on the
  training files into runs_repro/bpe16384; the corpus tokenised once into
  runs_repro/prepared (launch/repro_h200.sh does both; not inside data_repro/, which a
  carried copy of the corpus replaces);
- model: 12 layers, d_model 512, 8 query heads and 1 key/value head (multi-query, as the
  paper's 120M model), SwiGLU 1024, RMSNorm, RoPE 10000, untied embeddings, bf16, cuDNN
  attention (Pallas under intra-document masking);
- optimiser: AdamW (0.9, 0.95), weight decay 0.1, clip 1.0, lr 2e-3 after 100 warm-up
  steps, cosine to 2e-4; 2^17 tokens per step and 1200 steps (157M tokens) for every run,
  whatever the context length or depth;
- evaluation: validation loss on the held-out files; sink rates (eps 0.3 and 0.8) at T = 64
  on 256 held-out windows with and without a leading <bos>, with bootstrap intervals over
  the windows' documents and per-layer / per-head profiles; each window's document and loss
  are kept (summary.json, sink_scores.npz).

Experiments (`experiment=`), each a list of runs (`variants`, trained by `sinks-jax sweep`):
  context  T = 128, 512, 2048 at seed 0, and seed 1 at T = 128 and 2048   (paper Fig. 5)
  depth    4, 12, 24 layers at T = 2048                                 (controlled depth)
  packing  the five cells of config_base.PACKING_GRID at T = 2048       (paper Table 2)
  strong   causal, fixed <bos> at position 0 (where sinks are strong: 35-40 %), T = 128 and
           2048, seeds 0, 1, 2 (T2048_s0 is packing's causal_fixed_bos, the same config)
  variants the softmax baseline and the five attention variants at T = 2048: V_softmax,
           V_sink_logit, V_softmax_plus_one, V_gated, V_kv_bias, V_sigmoid (model/variants.py;
           sigmoid has no cuDNN path and runs on its fused Pallas kernels)

Argument: comma-separated `key=value`, all optional: `experiment=context|depth|packing|
strong|variants`, `seq_len=T`, `layers=N`, `packing=CELL` (default causal_bos, and
causal_fixed_bos for strong), `variant=NAME` (model.attention_variant, default softmax),
`seed=N`, `size=h200|tiny` (`tiny`: a CPU-sized model on built-in synthetic data, the smoke
test; contexts and depths scaled down), e.g.

    sinks-jax train --config repro:experiment=context,seq_len=512,seed=1 \
        --workdir runs_repro/context/T512_s1
    sinks-jax sweep repro:experiment=depth --workdir runs_repro/depth --print
    sinks-jax train --config repro:experiment=variants,variant=sink_logit \
        --workdir runs_repro/variants/V_sink_logit
    sinks-jax train --config configs/repro.py:experiment=strong,seq_len=128,seed=1 \
        --workdir runs_repro/strong/T128_s1
"""

from sinks_jax.model.variants import VARIANTS
from sinks_jax.train.config_base import PACKING_GRID, apply_packing_cell, base_config

DATA = "data_repro"  # the corpus copy (git-ignored).
WORK = "runs_repro"  # what is made from it, and the runs (git-ignored).
TEXT = f"text:{DATA}/*/*.jsonl.xz?valid={DATA}/*/valid-*.jsonl.xz"  # training and held-out files.
TOKENIZER = f"hf:{WORK}/bpe16384/tokenizer.json"  # BPE trained on TEXT's training files.
SOURCE = f"prepared:{WORK}/prepared"  # TEXT tokenised with TOKENIZER.

CONTEXT_RUNS = ((128, 0), (512, 0), (2048, 0), (128, 1), (2048, 1))  # (T, seed), in run order.
STRONG_RUNS = ((2048, 0), (2048, 1), (128, 0), (128, 1), (2048, 2), (128, 2))  # (T, seed).
STRONG_PACKING = "causal_fixed_bos"  # the packing cell of the strong experiment.
DEPTHS = (4, 12, 24)  # layers at T = 2048 (the 12-layer run is context's T2048_s0).
SEQ_LEN = 2048  # context of the depth and packing experiments.
NUM_STEPS = 1200  # 2^17 * 1200 = 157M tokens: ~3.5 min at 0.75M tokens/s (12 layers, T 2048).
TINY_ARG = "size=tiny"  # the CPU smoke-test variant.
KEYS = ("experiment", "seq_len", "layers", "packing", "variant", "seed", "size")
EXPERIMENTS = ("context", "depth", "packing", "strong", "variants")


def parse(arg) -> dict:
    """`"k=v,k=v"` -> the run's settings, defaults filled in."""
    out = {"experiment": "context", "seq_len": SEQ_LEN, "layers": 12, "packing": "causal_bos",
           "variant": "softmax", "seed": 0, "size": "h200"}
    given = set()
    for item in [x.strip() for x in str(arg or "").split(",") if x.strip()]:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"configs/repro.py argument {item!r}: use key=value with key in "
                             f"{list(KEYS)}, e.g. experiment=context,seq_len=512,seed=1.")
        out[key] = int(value) if key in ("seq_len", "layers", "seed") else value
        given.add(key)
    if out["experiment"] not in EXPERIMENTS:
        raise ValueError(f"experiment={out['experiment']!r}: choose context, depth, packing, "
                         "strong or variants.")
    if out["experiment"] == "strong" and "packing" not in given:
        out["packing"] = STRONG_PACKING
    if out["variant"] not in VARIANTS:
        raise ValueError(f"variant={out['variant']!r}: choose one of {list(VARIANTS)}.")
    if out["size"] not in ("h200", "tiny"):
        raise ValueError(f"size={out['size']!r}: choose h200 or tiny.")
    return out


def variants(arg=None) -> dict[str, str]:
    """Run name -> `get_config` argument, for the experiment named in `arg` (default context)."""
    p = parse(arg)
    base = f"experiment={p['experiment']},size={p['size']}"
    if p["experiment"] == "context":
        return {f"T{t}_s{s}": f"{base},seq_len={t},seed={s}" for t, s in CONTEXT_RUNS}
    if p["experiment"] == "depth":
        return {f"L{n}": f"{base},layers={n}" for n in DEPTHS}
    if p["experiment"] == "variants":
        return {f"V_{name}": f"{base},variant={name}" for name in VARIANTS}
    if p["experiment"] == "strong":
        return {f"T{t}_s{s}": f"{base},seq_len={t},seed={s}" for t, s in STRONG_RUNS}
    return {name: f"{base},packing={name}" for name in PACKING_GRID}


def get_config(arg=None):
    p = parse(arg)
    c = base_config()
    c.seed = p["seed"]  # parameter init and data order.
    c.seq_len = p["seq_len"]  # training context T (context experiment: the swept value).
    c.tokens_per_step = 2**17  # the same at every T: the batch shrinks as T grows.
    c.micro_batch_size = c.tokens_per_step // c.seq_len  # one micro-batch per step...
    if p["layers"] > 12:
        c.micro_batch_size //= 2  # ...two for the 24-layer model (activation memory).
    c.num_steps = NUM_STEPS  # the same tokens seen by every run.

    m = c.model
    m.vocab_size = 16384  # the BPE's ids.
    m.num_layers = p["layers"]  # depth (depth experiment: the swept value).
    m.d_model = 512  # residual width.
    m.num_heads = 8  # query heads.
    m.num_kv_heads = 1  # multi-query attention, as the paper's 120M model.
    m.d_ff = 1024  # SwiGLU width (that of the probe runs, whose throughput sized NUM_STEPS).
    m.dtype = "bfloat16"  # compute dtype (float32 master weights).
    m.attention = "cudnn"  # fused kernel; sink statistics from its log-sum-exp.
    m.attention_variant = p["variant"]  # how a head can do nothing (variants experiment).

    c.data.source = SOURCE  # runs_repro/prepared: train and valid-* splits, tokenised.
    c.data.tokenizer = TOKENIZER  # byte-level BPE, 16,384 ids, <pad>=0 <bos>=1 <eos>=2.
    apply_packing_cell(c, p["packing"])  # causal, <bos> at document starts, by default.

    o = c.optim
    o.lr = 2e-3  # the probes' larger rate: sinks 3x more frequent than at 1e-3, stable.
    o.min_lr = 2e-4  # cosine floor.
    o.warmup_steps = 100  # linear warm-up.
    o.weight_decay = 0.1  # the paper's recipe (AdamW, matrices only).

    c.eval_every = 300  # evaluations: 4 per run.
    c.eval_batches = 8  # 8 x 2^17 tokens: about the whole held-out set.
    c.eval_sink_sequences = 256  # held-out windows for the sink rate and its interval.
    c.eval_sink_len = 64  # T of the sink rate (Gu et al.; the paper's Table 1).
    c.eval_sink_windows = True  # windows anywhere in the 40 held-out documents.
    c.sink_stats_every = 100  # in-step sink statistics at the training context.
    c.log_every = 20  # metrics.jsonl records.
    c.checkpoint_every = 300  # and on SIGTERM (the launcher's time budget).
    c.keep_checkpoints = 2  # checkpoints kept (about 0.6 GB each).

    c.sweep_key = {"context": "seq_len", "depth": "model.num_layers", "packing": "variant",
                   "strong": "seq_len",
                   "variants": "model.attention_variant"}[p["experiment"]]  # for reports.
    c.variant = p["packing"]  # the packing cell's name.
    if p["size"] == "tiny":
        shrink_for_cpu(c, p)
    return c


def shrink_for_cpu(c, p) -> None:
    """The same experiment at CPU size: 2-layer d32 model, contexts / 4, layers / 4, 4 steps."""
    c.seq_len = max(32, p["seq_len"] // 4)  # 32, 128, 512.
    c.tokens_per_step = 1024
    c.micro_batch_size = c.tokens_per_step // c.seq_len
    c.num_steps = 4
    c.model.update({"vocab_size": 259, "num_layers": max(1, p["layers"] // 4), "d_model": 32,
                    "num_heads": 2, "d_ff": 64, "dtype": "float32", "attention": "blockwise",
                    "block_size": 32})
    c.data.source, c.data.tokenizer = "synthetic:bigram_backcopy", "byte"
    c.optim.warmup_steps = 1
    c.eval_every, c.checkpoint_every, c.sink_stats_every, c.log_every = 2, 2, 2, 1
    c.eval_batches, c.eval_sink_sequences = 1, 16
    c.eval_bootstrap = 200
