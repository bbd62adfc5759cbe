"""The `stream` command's table, in the shape of StreamingLLM's Table 2: one row per window or
cache size, one column per sink count, then dense attention and re-computation (perplexity)."""

from __future__ import annotations


def table(records: list[dict], model_name: str) -> dict:
    """stream.json's "table": {"columns": sink counts then "dense", "dense ctx" (dense over the
    first `context` tokens, when the stream is longer than the model's context), "recompute";
    "rows": one per group (window or cache size), {"label", "cells": column -> perplexity}}."""
    sinks = sorted({r["sinks"] for r in records if r["kind"] == "cache"})
    columns = [str(k) for k in sinks]
    dense_rec = next((r for r in records if r["kind"] == "dense"), None)
    dense = None if dense_rec is None else dense_rec["ppl"]
    in_context = None if dense_rec is None else (dense_rec.get("within_context") or {}).get("ppl")
    if dense is not None:
        columns.append("dense")
    if in_context is not None:
        columns.append("dense ctx")
    if any(r["kind"] == "recompute" for r in records):
        columns.append("recompute")
    groups = []
    for r in records:
        if r["kind"] != "dense" and r["group"] not in groups:
            groups.append(r["group"])
    rows = []
    for grp in groups or ["dense"]:
        cells: dict[str, float] = {}
        for r in records:
            if r["group"] != grp:
                continue
            cells[str(r["sinks"]) if r["kind"] == "cache" else r["kind"]] = r["ppl"]
        if dense is not None:
            cells["dense"] = dense
        if in_context is not None:
            cells["dense ctx"] = in_context
        rows.append({"label": f"{model_name} {grp}", "cells": cells})
    return {"columns": columns, "rows": rows}


def format_table(tab: dict, markdown: bool = False) -> str:
    """The table as aligned text, or as a markdown table."""
    cols = tab["columns"]
    head = ["cache"] + [c if not c.isdigit() else f"{c} sinks" for c in cols]
    body = [[row["label"]] + [_fmt(row["cells"].get(c)) for c in cols] for row in tab["rows"]]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
    )
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 1000 else f"{v:.0f}"
