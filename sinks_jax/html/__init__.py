"""Self-contained report pages (`--html` of analyze, report and stream).

    page          the HTML text: page data as inline JSON, the vendored plotly.js, the page's
                  own script and style (assets/), a Content-Security-Policy that forbids
                  every request; `read_page_data` reads the data back
    maps          attention maps as float16 lower triangles in base64, within a size budget
    from_analyze  page data from analyze's report.json (+ attention_maps.npz)
    from_runs     page data from training runs (`records.runs.load_run` records)
    from_stream   page data from stream.json
    write         `write_analyze_page`, `write_report_page`, `write_stream_page`
    __main__      `python -m sinks_jax.html analyze|report|stream PATHS`: rebuild a page from
                  files on disk (several analyze reports: models side by side)

Imports run downwards: write -> from_* -> maps, page; from_analyze -> sinks_jax.analysis.
The commands call `write`; this room imports no command and nothing of `train`.
"""

from sinks_jax.html.page import build_page, read_page_data, write_page
from sinks_jax.html.write import write_analyze_page, write_report_page, write_stream_page

__all__ = [
    "build_page",
    "read_page_data",
    "write_analyze_page",
    "write_page",
    "write_report_page",
    "write_stream_page",
]
