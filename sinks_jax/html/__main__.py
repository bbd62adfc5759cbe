"""Rebuild a page from outputs already on disk, without running anything again:

    python -m sinks_jax.html analyze A/report.json [B/report.json ...] [--out PAGE]
    python -m sinks_jax.html report DIR [--out PAGE]
    python -m sinks_jax.html stream DIR/stream.json [--out PAGE]

Several analyze reports make one page with a model selector (per-layer rates side by side).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from sinks_jax.html.write import write_analyze_page, write_report_page, write_stream_page


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m sinks_jax.html", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=("analyze", "report", "stream"))
    p.add_argument("paths", nargs="+", help="report.json files, a runs directory or stream.json")
    p.add_argument("--out", default=None, help="the page's path (default: report.html beside)")
    args = p.parse_args(argv)
    command = "python -m sinks_jax.html " + shlex.join(argv)
    if args.kind == "analyze":
        page = write_analyze_page(args.paths, args.out, command=command)
    elif args.kind == "report":
        from sinks_jax.records.runs import find_runs

        page = write_report_page(find_runs(args.paths[0]), args.paths[0], args.out, command)
    else:
        page = write_stream_page(args.paths[0], args.out, command)
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
