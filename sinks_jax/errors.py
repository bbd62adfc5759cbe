"""How a failure is reported: one line that names the value and the fix, or a traceback.

Errors raised by sinks_jax (and `ValueError`, `FileNotFoundError`) mean "the input is wrong"
and their messages say how to fix it, so the commands print the message alone; anything else
is a bug and keeps its traceback. `SINKS_JAX_DEBUG=1` keeps every traceback.
"""

from __future__ import annotations

import os

DEBUG_ENV = "SINKS_JAX_DEBUG"

# Errors that mean "the input is wrong" (their messages name the value and the fix).
INPUT_ERRORS = (ValueError, FileNotFoundError)


def debug() -> bool:
    """Whether SINKS_JAX_DEBUG asks for tracebacks instead of one-line errors."""
    return bool(os.environ.get(DEBUG_ENV))


def is_input_error(e: BaseException) -> bool:
    """Whether `e` means "the input is wrong" and its message says how (no traceback needed)."""
    return type(e).__module__.startswith("sinks_jax") or isinstance(e, INPUT_ERRORS)
