"""The `sinks-jax` command: a thin dispatcher to each subcommand's `main(argv)`.

Each subcommand lives beside the code it drives and is imported only when used, so that
`sinks-jax prepare` never imports the model and `sinks-jax --help` is instant.
"""

from __future__ import annotations

import importlib
import sys
import threading

from sinks_jax import __version__
from sinks_jax.errors import debug, is_input_error

__all__ = ["COMMANDS", "debug", "is_input_error", "main"]

# name -> ("module", "function", one-line help)
COMMANDS = {
    "train": ("sinks_jax.train.main", "main", "train one config variant in a workdir (resumes)"),
    "sweep": ("sinks_jax.train.sweep", "main", "run or print every variant of a config family"),
    "report": ("sinks_jax.train.report", "main", "table and figures for a sweep's workdir"),
    "analyze": ("sinks_jax.analyze", "main", "sink/spread/Jacobian report on a checkpoint"),
    "prepare": ("sinks_jax.data.command", "prepare_main", "tokenise and pack a source into shards"),
    "tokenizer": (
        "sinks_jax.data.command",
        "tokenizer_main",
        "tokenizer tools (train a SentencePiece model or a byte-level BPE)",
    ),
    "bench": (
        "sinks_jax.bench",
        "main",
        "benchmarks: train, attention, analysis, scaling, breakdown, compile",
    ),
    "models": ("sinks_jax.pretrained.command", "main", "list or fetch pretrained GGUF models"),
    "stream": ("sinks_jax.streaming.command", "main", "perplexity of a long text through sink caches"),
    "generate": ("sinks_jax.streaming.generate_command", "main", "generate text (--window/--sinks: bounded memory)"),
}


def _usage() -> str:
    lines = ["usage: sinks-jax [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`sinks-jax COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `sinks-jax ARGV` (None: the process's own arguments); returns the exit status."""
    is_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a missing command is a usage error (argparse's convention: exit 2).
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"sinks-jax {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"sinks-jax: unknown command {name!r}; choose one of {sorted(COMMANDS)}.",
            file=sys.stderr,
        )
        return 2
    module, func, _ = COMMANDS[name]
    try:
        result = getattr(importlib.import_module(module), func)(rest)
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves and returns).
        if debug():
            raise
        print(f"\nsinks-jax {name}: interrupted.", file=sys.stderr)
        return 130
    except Exception as e:  # bad input: one actionable line instead of a traceback
        if debug() or not is_input_error(e):
            raise
        print(
            f"sinks-jax {name}: error: {e}\n(set SINKS_JAX_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        if is_process:  # the process ends now: silence the libraries' teardown.
            _quiet_exit()
        return 2
    return int(result or 0)


def _quiet_exit() -> None:
    """After an error has been reported: no "Exception ignored" tracebacks from libraries'
    finalizers and background threads (e.g. orbax after a failed restore) while exiting."""
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None


if __name__ == "__main__":
    sys.exit(main())
