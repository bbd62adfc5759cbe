"""Data packing grid (PAPER.md section 3, Table 2): masking x use of <bos>.

Every variant is evaluated with and without a leading <bos> (the loop does both). Argument
`SIZE[,VARIANT]`, e.g.

    sinks-jax sweep packing:small --workdir runs/packing
"""

from sinks_jax.train.config_base import PACKING_GRID, apply_packing_cell, parse_arg, sized_config

SEQ_LEN = {"paper": 2048, "small": 1024, "tiny": 32}  # training context per size.
TINY_ARG = "tiny,intra_fixed_bos"  # the CPU smoke-test variant.


def variants(arg=None) -> dict[str, str]:
    """Variant name -> `get_config` argument: one per cell of the grid."""
    size, _ = parse_arg(arg, "paper", "")
    return {name: f"{size},{name}" for name in PACKING_GRID}


def get_config(arg=None):
    size, name = parse_arg(arg, "paper", "causal_bos")
    c = sized_config(size, SEQ_LEN[size])  # model/optimizer preset of the size.
    apply_packing_cell(c, name)  # the swept cell (config_base.PACKING_GRID).
    c.sweep_key = "variant"  # categorical sweep: reported by name.
    c.variant = name  # the cell's name.
    return c
