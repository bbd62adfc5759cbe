"""Data packing grid (PAPER.md section 3, Table 2): masking x use of <bos>.

Every variant is evaluated with and without a leading <bos> (the loop does both). Argument
`SIZE[,VARIANT]`, e.g.

    sinks-jax sweep configs/packing.py:small --workdir runs/packing
"""

from sinks_jax.train.config_base import parse_arg, sized_config

# name -> (packing mode, intra-document masking)
GRID = {
    "causal_bos": ("concat_bos", False),  # causal, <bos> at document starts.
    "causal_fixed_bos": ("fixed_bos", False),  # causal, <bos> fixed at position 0.
    "intra_eos": ("concat", True),  # intra-doc, documents separated by <eos> only.
    "intra_bos": ("concat_bos", True),  # intra-doc, <bos> at document starts.
    "intra_fixed_bos": ("fixed_bos", True),  # intra-doc, fixed <bos> visible to all.
}
SEQ_LEN = {"paper": 2048, "small": 1024, "tiny": 32}  # training context per size.
TINY_ARG = "tiny,intra_fixed_bos"  # the CPU smoke-test variant.


def variants(arg=None) -> dict[str, str]:
    """Variant name -> `get_config` argument: one per cell of the grid."""
    size, _ = parse_arg(arg, "paper", "")
    return {name: f"{size},{name}" for name in GRID}


def get_config(arg=None):
    size, name = parse_arg(arg, "paper", "causal_bos")
    if name not in GRID:
        raise ValueError(f"packing variant {name!r} is not one of {sorted(GRID)}.")
    c = sized_config(size, SEQ_LEN[size])  # model/optimizer preset of the size.
    c.data.packing, c.data.intra_doc = GRID[name]  # the swept cell.
    c.data.reset_positions = c.data.intra_doc  # documents start at position 0 when masked apart.
    # The fixed <bos> must stay visible to every document under intra-doc masking.
    c.model.global_first_key = c.data.packing == "fixed_bos" and c.data.intra_doc
    # cuDNN has no segment ids: intra-doc cells use the Pallas kernel (GPU), which also serves
    # intra_fixed_bos at the same speed: key 0 is merged into its segment-masked result through
    # the LSE, exactly (sinks_jax.model.fused.attend_first_key_globally).
    if c.data.intra_doc and c.model.attention == "cudnn":
        c.model.attention = "pallas"
    c.sweep_key = "variant"  # categorical sweep: reported by name.
    c.variant = name  # the cell's name.
    return c
