"""The reconstructed 120M model and recipe of PAPER.md section 3.

12 layers, 12 heads, d_model 768, SwiGLU 2048, RMSNorm, RoPE 10000, multi-query attention,
untied embeddings, vocab 32000 (a LLaMA-2-style SentencePiece model); AdamW (0.9, 0.95),
weight decay 0.1, clip 1.0, cosine 4e-4 -> 4e-5 after 2000 warm-up steps, 2^20 tokens per
step, 5B tokens. Argument `SIZE[,T]` (default `paper,2048`), e.g.

    sinks-jax train --config paper_120m --workdir runs/paper \
        --config.data.source=prepared:/data/prepared --config.data.tokenizer=sp:/data/llama2.model
"""

from sinks_jax.train.config_base import parse_arg, sized_config

TINY_ARG = "tiny,32"  # the CPU smoke-test variant.


def get_config(arg=None):
    size, seq_len = parse_arg(arg, "paper", "2048")
    c = sized_config(size, int(seq_len))  # the paper preset (see config_base.SIZES).
    c.data.packing = "concat_bos"  # <bos> at every document start.
    c.data.intra_doc = False  # causal attention over the window.
    return c
