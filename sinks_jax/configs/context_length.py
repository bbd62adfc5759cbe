"""Context length ablation (PAPER.md section 3, Fig. 5/7): sinks vs training context.

The same model is trained at T = 128 ... 2048 with the number of tokens per optimizer step
held constant (the batch in sequences shrinks as T grows). Argument: `SIZE[,T]` with SIZE in
paper | small | tiny, e.g.

    sinks-jax train --config context_length:small,512 --workdir runs/ctx/T512
    sinks-jax sweep context_length:small --workdir runs/ctx
"""

from sinks_jax.train.config_base import parse_arg, sized_config

CONTEXTS = {
    "paper": (128, 256, 512, 1024, 2048),
    "small": (128, 256, 512, 1024, 2048),
    "tiny": (32, 64),
}
TINY_ARG = "tiny,32"  # the CPU smoke-test variant.


def variants(arg=None) -> dict[str, str]:
    """Variant name -> `get_config` argument: one per context length of the size."""
    size, _ = parse_arg(arg, "paper", "0")
    return {f"T{t}": f"{size},{t}" for t in CONTEXTS[size]}


def get_config(arg=None):
    size, seq_len = parse_arg(arg, "paper", "2048")
    c = sized_config(size, int(seq_len))  # model/optimizer preset of the size at this T.
    c.data.packing = "concat_bos"  # <bos> at every document start, causal attention.
    c.data.intra_doc = False  # causal over the whole window (the paper's default).
    c.sweep_key = "seq_len"  # the swept value, for reports.
    return c
