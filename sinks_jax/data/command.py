"""The data room's commands: `sinks-jax prepare` (tokenise and pack a source into shards,
`data.prepare`) and `sinks-jax tokenizer train` (a SentencePiece model or a byte-level BPE,
`data.tokenizers`). Arguments are parsed here; the work is the room's functions.
"""

from __future__ import annotations

import sys

from sinks_jax import cli_args
from sinks_jax.data import packing
from sinks_jax.data.prepare import prepare_corpus
from sinks_jax.data.tokenizers import (
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    get_tokenizer,
    train_bpe,
    train_sentencepiece,
)
from sinks_jax.pretrained import gguf  # noqa: F401  (registers the `gguf:` tokenizer kind)


def prepare_main(argv: list[str]) -> int:
    """`sinks-jax prepare --source SPEC --tokenizer SPEC --seq-len T --packing MODE --out DIR`."""
    parser = cli_args.ArgumentParser(
        prog="sinks-jax prepare",
        description="`sinks-jax prepare`: tokenise a source into `.npy` shards plus a manifest.",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="text:GLOB[?valid=GLOB] | synthetic:KIND | tfds:NAME[:SPLIT]",
    )
    cli_args.add_tokenizer(parser)
    cli_args.add_out(parser, "output directory")
    parser.add_argument("--splits", default="train,valid", help="comma-separated: train,valid,all")
    cli_args.add_seq_len(parser, 512, "T of the manifest's packing statistics")
    parser.add_argument("--packing", default="concat_bos", choices=packing.MODES)
    parser.add_argument("--intra-doc", action="store_true")
    parser.add_argument("--reset-positions", action="store_true")
    parser.add_argument("--shard-tokens", type=cli_args.whole(1), default=50_000_000)
    parser.add_argument("--max-documents", type=cli_args.whole(1), default=None)
    args = parser.parse_args(argv)
    try:
        prepare_corpus(
            args.source, get_tokenizer(args.tokenizer), args.out,
            splits=[s for s in args.splits.split(",") if s], seq_len=args.seq_len,
            packing=args.packing, intra_doc=args.intra_doc, reset_positions=args.reset_positions,
            shard_tokens=args.shard_tokens, max_documents=args.max_documents, echo=print,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"sinks-jax prepare: {err}", file=sys.stderr)
        return 2
    return 0


def tokenizer_main(argv: list[str]) -> int:
    """`sinks-jax tokenizer train [--kind sp|bpe] --source SPEC --vocab-size N --out PATH`."""
    parser = cli_args.ArgumentParser(
        prog="sinks-jax tokenizer",
        description="Tokenizers with one small interface, and `sinks-jax tokenizer train` "
        "(SentencePiece or BPE).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train a SentencePiece model or a byte-level BPE (offline)")
    tr.add_argument(
        "--kind",
        default="sp",
        choices=["sp", "bpe"],
        help="sp: SentencePiece .model (default); bpe: byte-level BPE tokenizer.json",
    )
    tr.add_argument("--source", required=True, help="source spec, e.g. text:data/*.jsonl.xz")
    tr.add_argument("--vocab-size", type=cli_args.whole(1), required=True)
    cli_args.add_out(tr, "output: the .model file (sp), or tokenizer.json or its folder (bpe)")
    tr.add_argument(
        "--model-type",
        default="bpe",
        choices=["bpe", "unigram", "char", "word"],
        help="SentencePiece model type (--kind sp only)",
    )
    tr.add_argument(
        "--max-chars",
        type=cli_args.whole(1),
        default=None,
        help="stop reading the source after this many characters "
        "(default: 1e8 for sp, 1e9 for bpe)",
    )
    tr.add_argument(
        "--character-coverage",
        type=cli_args.number(0, 1, low_open=True),
        default=0.9995,
        help="SentencePiece character coverage (--kind sp only)",
    )
    args = parser.parse_args(argv)
    try:
        if args.kind == "bpe":
            path = train_bpe(
                args.source, args.vocab_size, args.out, args.max_chars or 1_000_000_000
            )
            tok: Tokenizer = HFTokenizer(path)
        else:
            path = train_sentencepiece(
                args.source,
                args.vocab_size,
                args.out,
                args.model_type,
                args.max_chars or 100_000_000,
                args.character_coverage,
            )
            tok = SentencePieceTokenizer(path)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"sinks-jax tokenizer: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {path} (vocab {tok.vocab_size}, bos={tok.bos_id} eos={tok.eos_id} "
        f"pad={tok.pad_id}); use it as --tokenizer {tok.spec}"
    )
    return 0
