"""One self-contained HTML page: the page data as inline JSON, the vendored charting library
and the page's own script and style, all inline.

The page data (`build_page`'s `data`) is one JSON object; each view draws what is present:

    kind       "analyze" | "report" | "stream"
    title      the page's heading
    profiles   views 1-3: one per model or run, `{name, layouts: {LAYOUT: {rate, rate_low,
               rate_high, score, head_score LxH, eps: {EPS: {rate, rate_low, rate_high,
               layer_rate L, layer_low, layer_high, head_rate LxH, head_low, head_high}}}},
               interval, maps: {LAYOUT: {t, L, H, windows, labels WxT, data [base64 per
               window]}}}`; LAYOUT is "with_bos" or "text_only"; every rate is a fraction
    runs       view 4: one per training run (`sinks_jax.html.from_runs`)
    stream     view 5: the records of a stream evaluation (`sinks_jax.html.from_stream`)
    settings   view 6: `[{name, items: {key: value}, details: {key: value}}]`
    sources    view 6: the path of every file the page was drawn from
    notes      how the page reduced its data (cropped maps, dropped windows)
    command, versions

Nothing leaves the file: a Content-Security-Policy forbids every fetch, font and frame, and
the scripts and styles are inline.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
import re
from importlib import resources
from typing import Any

import numpy as np

PLOTLY_ASSET = "plotly-cartesian.min.js"
PLOTLY_VERSION = "4.1.1"
MAX_PAGE_BYTES = 10_000_000
DATA_ELEMENT_ID = "sinks-data"

# Inline scripts and styles only; no fetch, font, frame or media source at all.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:"
)


def asset(name: str) -> str:
    """The text of a file under sinks_jax/html/assets/."""
    return resources.files("sinks_jax.html").joinpath("assets", name).read_text("utf-8")


def versions() -> dict[str, str]:
    """Versions of the software that made the numbers and the page."""
    import jax

    import sinks_jax

    out = {
        "sinks_jax": sinks_jax.__version__,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "plotly.js (inlined)": PLOTLY_VERSION,
    }
    try:
        import flax

        out["flax"] = flax.__version__
    except ImportError:  # flax is a dependency; a partial environment still gets a page
        pass
    return out


def clean(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _inline_json(data: dict[str, Any]) -> str:
    """JSON that cannot close its <script> element early."""
    text = json.dumps(clean(data), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")  # "<" occurs only inside JSON strings


def build_page(data: dict[str, Any]) -> str:
    """The page's full HTML text."""
    title = html.escape(str(data.get("title", "sinks_jax report")))
    script = asset(PLOTLY_ASSET)
    if "</script" in script.lower():  # the vendored file is checked, not trusted
        raise ValueError(f"{PLOTLY_ASSET} holds '</script': it cannot be inlined as is.")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>",
            f"<style>\n{asset('page.css')}\n</style>",
            "</head><body>",
            asset("page.html"),
            f'<script type="application/json" id="{DATA_ELEMENT_ID}">{_inline_json(data)}</script>',
            f"<script>\n{script}\n</script>",
            f"<script>\n{asset('page.js')}\n</script>",
            "</body></html>",
            "",
        ]
    )


def write_page(data: dict[str, Any], path: str, max_bytes: int = MAX_PAGE_BYTES) -> str:
    """Writes the page to `path`; raises if it would exceed `max_bytes`. Returns `path`."""
    text = build_page(data)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise ValueError(
            f"the page would be {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit; "
            "embed fewer attention maps (a smaller map budget) or fewer runs."
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def read_page_data(text: str) -> dict[str, Any]:
    """The page data embedded in a page's HTML text (the inverse of `build_page`)."""
    match = re.search(
        rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>', text, re.DOTALL
    )
    if match is None:
        raise ValueError("no sinks_jax page data in this HTML.")
    return json.loads(match.group(1))
