"""The three pages: `write_analyze_page`, `write_report_page`, `write_stream_page`, each
`report.html` beside the JSON it is drawn from (or at `out`)."""

from __future__ import annotations

import os
from typing import Any

from sinks_jax.html.from_analyze import analyze_page_data
from sinks_jax.html.from_runs import runs_page_data
from sinks_jax.html.from_stream import stream_page_data
from sinks_jax.html.maps import DEFAULT_BUDGET_CHARS
from sinks_jax.html.page import versions, write_page

PAGE_NAME = "report.html"


def write_analyze_page(
    report_paths: list[str],
    out: str | None = None,
    command: str | None = None,
    map_budget_chars: int = DEFAULT_BUDGET_CHARS,
) -> str:
    """The page of one or more analyze report.json files; default beside the first."""
    data = analyze_page_data(report_paths, command, map_budget_chars)
    data["versions"] = versions()
    out = out or os.path.join(os.path.dirname(report_paths[0]), PAGE_NAME)
    return write_page(data, out)


def write_report_page(
    runs: list[dict[str, Any]], directory: str, out: str | None = None, command: str | None = None
) -> str:
    """The page of the runs `sinks_jax.records.runs.find_runs(directory)` returned."""
    if os.path.exists(os.path.join(directory, "config.json")):
        workdirs = [directory]
    else:
        workdirs = [os.path.join(directory, r["name"]) for r in runs]
    title = f"Training runs: {os.path.basename(os.path.normpath(os.path.abspath(directory)))}"
    data = runs_page_data(runs, workdirs, title, command)
    data["versions"] = versions()
    return write_page(data, out or os.path.join(directory, PAGE_NAME))


def write_stream_page(stream_path: str, out: str | None = None, command: str | None = None) -> str:
    """The page of one stream.json; default beside it."""
    data = stream_page_data(stream_path, command)
    data["versions"] = versions()
    return write_page(data, out or os.path.join(os.path.dirname(stream_path), PAGE_NAME))
