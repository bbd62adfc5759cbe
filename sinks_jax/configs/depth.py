"""Depth ablation: the same width and data, 2 ... 24 layers (the paper's depth claim, made
controlled). Argument `SIZE[,LAYERS]`, e.g.

    sinks-jax sweep depth:small --workdir runs/depth
"""

from sinks_jax.train.config_base import parse_arg, sized_config

DEPTHS = {"paper": (2, 4, 8, 12, 24), "small": (2, 4, 8, 12, 24), "tiny": (1, 2)}
SEQ_LEN = {"paper": 1024, "small": 512, "tiny": 32}  # fixed training context per size.
TINY_ARG = "tiny,1"  # the CPU smoke-test variant.


def variants(arg=None) -> dict[str, str]:
    """Variant name -> `get_config` argument: one per depth of the size."""
    size, _ = parse_arg(arg, "paper", "0")
    return {f"L{n}": f"{size},{n}" for n in DEPTHS[size]}


def get_config(arg=None):
    size, layers = parse_arg(arg, "paper", "12")
    c = sized_config(size, SEQ_LEN[size])  # model/optimizer preset of the size.
    c.model.num_layers = int(layers)  # the swept value: decoder depth.
    c.data.packing = "concat_bos"  # <bos> at every document start, causal attention.
    c.sweep_key = "model.num_layers"  # the swept value, for reports.
    return c
