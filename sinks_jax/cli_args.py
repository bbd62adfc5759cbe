"""Arguments that several commands share, declared once: `--seq-len`, `--tokenizer`, `--out`;
the checked number types every numeric flag uses (`whole`, `number`); and `ArgumentParser`,
whose errors are one line.

Each command says what the value means for it (`what`); name, type and spelling of the
choices are the same everywhere.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

TOKENIZER_SPECS = "'byte', 'sp:PATH.model' or 'hf:PATH/tokenizer.json'"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (`PROG: error: MESSAGE ...`), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def whole(minimum: int = 1) -> Callable[[str], int]:
    """An argparse `type`: a whole number >= `minimum`, else one line naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; give one >= {minimum}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is too small; give a whole number >= {minimum}"
            )
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def number(low: float, high: float = math.inf, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse `type`: a finite number in [low, high] ((low, high] with `low_open`)."""
    span = f"{'(' if low_open else '['}{low:g}, {high:g}]" if high < math.inf else (
        f"{'>' if low_open else '>='} {low:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r} is outside {span}; give a number in it")
        return value

    parse.__name__ = f"number {span}"
    return parse


def add_seq_len(
    parser: argparse.ArgumentParser, default: int, what: str = "tokens per row T", minimum: int = 2
):
    """`--seq-len T` (a whole number >= `minimum`)."""
    return parser.add_argument(
        "--seq-len", type=whole(minimum), default=default, help=f"{what} (default {default})"
    )


def add_model_source(parser: argparse.ArgumentParser):
    """The model a command reads, one of four (`sinks_jax.analyze.loading.load_model` reads
    them): `--workdir`, `--hf`, `--init-hf-config`, `--init-tiny`."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a training run's workdir (latest checkpoint is used)")
    src.add_argument(
        "--hf",
        help="a pretrained model: a GGUF file (.gguf, e.g. from `sinks-jax models fetch`), a "
        "folder holding one, or a Hugging Face checkpoint folder (config.json, *.safetensors)",
    )
    src.add_argument(
        "--init-hf-config",
        help="a randomly initialised model of a Hugging Face shape: a config.json path, or "
        "'llama-3.1-8b' (bf16; tokens from --tokenizer, default byte)",
    )
    src.add_argument(
        "--init-tiny",
        action="store_true",
        help="a freshly initialised tiny model (byte vocabulary): smoke tests",
    )
    return src


def add_tokenizer(parser: argparse.ArgumentParser, default: str = "byte", note: str = ""):
    """`--tokenizer SPEC`: a tokenizer spec, as `sinks_jax.data.get_tokenizer` reads it."""
    help_ = f"tokenizer spec: {TOKENIZER_SPECS} (default {default})" + (f"; {note}" if note else "")
    return parser.add_argument("--tokenizer", default=default, help=help_)


def add_out(parser: argparse.ArgumentParser, what: str, required: bool = True):
    """`--out PATH`: where the command writes (`what`: a folder, a file, a prefix)."""
    return parser.add_argument("--out", required=required, default=None, help=what)
