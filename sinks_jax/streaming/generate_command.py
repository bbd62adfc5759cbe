"""`sinks-jax generate`: continue a prompt with a model, through a KV cache.

    sinks-jax generate --hf models/smollm2-135m --prompt "Once upon a time" --max-new-tokens 64
    sinks-jax generate --hf models/gemma3-270m --bos --prompt "..." --max-new-tokens 20000 \\
        --sinks 4 --window 1020          # bounded memory: 4 sinks + the 1020 latest tokens
    sinks-jax generate --workdir runs/quickstart --prompt "..." --temperature 0.8 --seed 1

Without `--window` the cache keeps every token (dense). With `--window W` it keeps the first
`--sinks K` tokens and the W most recent ones (StreamingLLM; positions by place in the
cache), so memory stays at K + W slots per layer however long the text grows. Greedy by
default; `--temperature T` samples, seeded by `--seed`.
"""

from __future__ import annotations

import argparse
import sys

from sinks_jax import cli_args


def build_parser() -> argparse.ArgumentParser:
    p = cli_args.ArgumentParser(
        prog="sinks-jax generate",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_args.add_model_source(p)
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--bos", action="store_true", help="put <bos> before the prompt")
    p.add_argument(
        "--max-new-tokens", type=cli_args.whole(1), default=64, help="tokens to write (default 64)"
    )
    p.add_argument(
        "--window",
        type=cli_args.whole(1),
        default=None,
        help="keep only the W most recent tokens (and --sinks): bounded memory",
    )
    p.add_argument(
        "--sinks", type=cli_args.whole(0), default=0, help="first tokens always kept (default 0)"
    )
    p.add_argument(
        "--temperature", type=cli_args.number(0), default=0.0, help="0: greedy (default)"
    )
    p.add_argument(
        "--seed", type=cli_args.whole(0), default=0, help="sampling seed (and random inits)"
    )
    p.add_argument("--stop-at-eos", action="store_true", help="stop after the tokenizer's <eos>")
    cli_args.add_tokenizer(p, note="with --workdir the run's, with --hf the checkpoint's")
    return p


def main(argv: list[str] | None = None) -> int:
    from sinks_jax.analyze.loading import load_model
    from sinks_jax.pretrained.generate import generate
    from sinks_jax.progress import stage

    args = build_parser().parse_args(argv)
    if args.sinks and args.window is None:
        raise ValueError("--sinks needs --window (without a window every token is kept).")
    with stage("loading the model"):
        loaded = load_model(args)
    tok = loaded.tokenizer
    ids = list(tok.encode(args.prompt))
    if args.bos:
        if getattr(tok, "bos_id", None) is None:
            raise ValueError("--bos: this tokenizer has no <bos> token.")
        ids = [tok.bos_id] + ids
    if not ids:
        raise ValueError("--prompt: the prompt encodes to no tokens; give some text.")
    eos = getattr(tok, "eos_id", None) if args.stop_at_eos else None
    with stage(f"generating {args.max_new_tokens} tokens"):
        out = generate(
            loaded.model,
            ids,
            args.max_new_tokens,
            sinks=args.sinks,
            window=args.window,
            temperature=args.temperature,
            seed=args.seed,
            eos_id=eos,
        )
    sys.stdout.write(args.prompt + tok.decode(out[len(ids) :]) + "\n")
    return 0
