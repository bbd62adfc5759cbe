"""Parsing of the `KIND:BODY[?key=value&...]` strings that name sources and tokenizers."""

from __future__ import annotations

from urllib.parse import parse_qsl


def parse_spec(spec: str, kinds: tuple[str, ...], what: str) -> tuple[str, str, dict[str, str]]:
    """Split `spec` into `(kind, body, options)`.

    `"text:/data/*.jsonl?field=content"` -> `("text", "/data/*.jsonl", {"field": "content"})`.
    A bare kind (`"byte"`) has an empty body. Raises a ValueError naming the accepted kinds.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{what} spec {spec!r} is empty; use one of {[k + ':...' for k in kinds]}.")
    kind, _, rest = spec.partition(":")
    if kind not in kinds:
        raise ValueError(f"unknown {what} {spec!r}: the part before ':' must be one of {list(kinds)}.")
    body, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    return kind, body, options


def pop_int(options: dict[str, str], key: str, default: int | None, what: str) -> int | None:
    """Remove `key` from `options` and return it as an int (or `default` if absent)."""
    if key not in options:
        return default
    value = options.pop(key)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{what} option {key}={value!r} is not an integer.") from None


def check_no_options_left(options: dict[str, str], what: str, allowed: tuple[str, ...]) -> None:
    """Raise if `options` still holds keys nobody consumed (typos)."""
    if options:
        raise ValueError(f"unknown {what} option(s) {sorted(options)}; accepted: {list(allowed)}.")
