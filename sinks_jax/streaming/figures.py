"""The `stream` command's figure: perplexity against tokens read (one line per cache), and
perplexity against the number of sinks (one line per window or cache size)."""

from __future__ import annotations

import os

from matplotlib.figure import Figure


def stream_figure(result: dict, path: str) -> str:
    """Draws stream.json's records into one PNG (two panels); returns the path."""
    settings, records = result["settings"], result["records"]
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_t, ax_k = fig.subplots(1, 2, width_ratios=[1.6, 1])
    for rec in records:
        c = rec["curve"]
        style = {"dense": "k--", "recompute": ":"}.get(rec["kind"], "-")
        ax_t.plot(c["tokens"], c["ppl_bin"], style, label=rec["name"], lw=1.3)
    context = settings.get("context")
    if context and context < settings["num_tokens"]:
        ax_t.axvline(context, color="0.4", ls=":", lw=1)
        ax_t.annotate(
            " model's context",
            (context, 1),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=7,
            color="0.4",
        )
    ax_t.set_yscale("log")
    ax_t.set_xlabel("tokens read")
    ax_t.set_ylabel(f"perplexity (bins of {settings.get('curve_bin', settings['bin'])} targets)")
    ax_t.set_title(f"{settings.get('model_name', '')}: perplexity while streaming")
    ax_t.legend(fontsize=7, ncol=2)
    ax_t.grid(alpha=0.3, which="both")

    groups: dict[str, list] = {}
    for rec in records:
        if rec["kind"] == "cache":
            groups.setdefault(rec["group"], []).append(rec)
    for name, recs in groups.items():
        recs = sorted(recs, key=lambda r: r["sinks"])
        ax_k.plot([r["sinks"] for r in recs], [r["ppl"] for r in recs], "o-", label=name)
    for rec in records:
        if rec["kind"] != "cache":
            ax_k.axhline(
                rec["ppl"],
                ls="--" if rec["kind"] == "dense" else ":",
                lw=1,
                color="k" if rec["kind"] == "dense" else "0.5",
                label=rec["name"],
            )
        if rec["kind"] == "dense" and rec.get("within_context"):
            ax_k.axhline(
                rec["within_context"]["ppl"],
                ls="-.",
                lw=1,
                color="k",
                label=f"dense, first {context} tokens",
            )
    ax_k.set_yscale("log")
    ax_k.set_xlabel("sinks k (first tokens kept)")
    ax_k.set_ylabel("perplexity (all targets)")
    ax_k.set_title("perplexity against sinks")
    ax_k.legend(fontsize=7)
    ax_k.grid(alpha=0.3, which="both")
    caption = (
        f"{settings.get('model', '')} | {settings.get('text', '')} | "
        f"{settings['num_tokens']} tokens x {settings.get('streams', 1)} streams | "
        f"bos={settings.get('bos')}"
    )
    fig.supxlabel(caption[:220], fontsize=7, color="0.3")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
