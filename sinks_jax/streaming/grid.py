"""The grid of evaluations a `stream` run asks for: caches K+W (fixed window or fixed size),
dense attention, and the sliding window with re-computation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinks_jax.streaming.policy import CachePolicy


def configurations(
    *,
    windows: Sequence[int] = (),
    sizes: Sequence[int] = (),
    sinks: Sequence[int] = (0, 1, 2, 4, 8),
    caches: Sequence[str] = (),
    dense: bool = False,
    recompute: bool = False,
) -> list[dict[str, Any]]:
    """The evaluations asked for, in order: dicts with `name`, `kind` ("cache", "recompute",
    "dense"), `policy` (caches and dense) or `window` (recompute), `group` (the table row:
    "window W", "size S" or "dense") and `size` (k + W; the recompute window; none for dense).

    `windows` x `sinks`: caches K+W with W fixed; `sizes` x `sinks`: caches K+(S-K) with the
    size fixed (StreamingLLM's Table 2); `caches`: "K+W" strings (comma lists too), grouped by
    size; `recompute`: the sliding window with re-computation at every window and size.
    """
    out: list[dict[str, Any]] = []

    def add(policy: CachePolicy, group: str):
        if all(c["name"] != policy.name for c in out):
            out.append(dict(name=policy.name, kind="cache", policy=policy, group=group))

    for w in windows:
        for k in sinks:
            add(CachePolicy(k, w), f"window {w}")
    for s in sizes:
        for k in sinks:
            if s - k < 1:
                raise ValueError(
                    f"--size {s} with --sinks {k}: the window would be {s - k}; every cache "
                    "keeps the current token (window >= 1): use sizes above the sink counts."
                )
            add(CachePolicy(k, s - k), f"size {s}")
    for text in caches:
        for part in text.split(","):
            pol = CachePolicy.parse(part)
            if pol.dense:
                dense = True
            else:
                add(pol, f"size {pol.size}")
    if recompute:
        sized = {c["policy"].size for c in out if c["kind"] == "cache"}
        recompute_windows = sorted({*windows, *sizes} | sized)
        if not recompute_windows:
            raise ValueError("--recompute needs a window: give --window, --size or --cache.")
        for w in recompute_windows:
            group = f"window {w}" if w in windows else f"size {w}"
            out.append(dict(name=f"recompute-{w}", kind="recompute", window=w, group=group))
    if dense:
        out.append(dict(name="dense", kind="dense", policy=CachePolicy(), group="dense"))
    if not out:
        raise ValueError(
            "no cache to read with: give --cache K+W ..., --window W ... or --size S ... "
            "(with --sinks K ...), and/or --dense."
        )
    for c in out:
        if c["kind"] != "dense":
            size = c["window"] if c["kind"] == "recompute" else c["policy"].size
            c["size"] = size
    return out
