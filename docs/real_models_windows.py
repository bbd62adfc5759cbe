"""Held-out windows for docs/real_models.md: K evenly spaced passages of each document.

    python docs/real_models_windows.py 'DATA/*/valid-*.jsonl.xz' OUT.jsonl [--per-doc 6]

The `valid-*` files hold few, long documents (40 here), while the sink statistics need a few
hundred sequences; each document gives `--per-doc` passages of `--chars` characters that
start at evenly spaced paragraph starts. Writes one `{"text", "doc", "offset"}` line each,
a `--prompts` / `--loss-file` file for `sinks-jax analyze`.
"""

from __future__ import annotations

import argparse
import glob
import json
import lzma


def passages(text: str, per_doc: int, chars: int) -> list[tuple[int, str]]:
    """`(offset, passage)` at `per_doc` evenly spaced paragraph starts of `text`."""
    starts = [0] + [i + 2 for i in range(len(text) - 2) if text[i : i + 2] == "\n\n"]
    starts = [s for s in starts if len(text) - s >= chars and text[s : s + 200].strip()]
    if not starts:
        return []
    picks = sorted(
        {starts[round(k * (len(starts) - 1) / max(per_doc - 1, 1))] for k in range(per_doc)}
    )
    return [(s, " ".join(text[s : s + chars].split())) for s in picks]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("glob")
    p.add_argument("out")
    p.add_argument("--per-doc", type=int, default=6)
    p.add_argument("--chars", type=int, default=1200)
    args = p.parse_args()
    n = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for path in sorted(glob.glob(args.glob)):
            with lzma.open(path, "rt", encoding="utf-8") as f:
                for d, line in enumerate(f):
                    text = json.loads(line)["text"]
                    for offset, passage in passages(text, args.per_doc, args.chars):
                        doc = f"{path.split('/')[-2]}/{d}"
                        out.write(
                            json.dumps({"text": passage, "doc": doc, "offset": offset}) + "\n"
                        )
                        n += 1
    print(f"wrote {n} passages to {args.out}")


if __name__ == "__main__":
    main()
