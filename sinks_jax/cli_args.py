"""Arguments that several commands share, declared once: `--seq-len`, `--tokenizer`, `--out`.

Each command says what the value means for it (`what`); name, type and spelling of the
choices are the same everywhere.
"""

from __future__ import annotations

import argparse

TOKENIZER_SPECS = "'byte', 'sp:PATH.model' or 'hf:PATH/tokenizer.json'"


def add_seq_len(parser: argparse.ArgumentParser, default: int, what: str = "tokens per row T"):
    """`--seq-len T` (an int)."""
    return parser.add_argument(
        "--seq-len", type=int, default=default, help=f"{what} (default {default})"
    )


def add_tokenizer(parser: argparse.ArgumentParser, default: str = "byte", note: str = ""):
    """`--tokenizer SPEC`: a tokenizer spec, as `sinks_jax.data.get_tokenizer` reads it."""
    help_ = f"tokenizer spec: {TOKENIZER_SPECS} (default {default})" + (f"; {note}" if note else "")
    return parser.add_argument("--tokenizer", default=default, help=help_)


def add_out(parser: argparse.ArgumentParser, what: str, required: bool = True):
    """`--out PATH`: where the command writes (`what`: a folder, a file, a prefix)."""
    return parser.add_argument("--out", required=required, default=None, help=what)
