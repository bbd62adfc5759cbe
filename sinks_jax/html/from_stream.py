"""Page data from `sinks-jax stream` outputs: stream.json (schema "sinks_jax.stream/1").

View 5 draws each record's curve (perplexity of each bin of targets, and cumulative, against
the tokens read) with one line per cache configuration, and its table; the settings view
shows the stream's settings. Fields are copied as they are in stream.json.
"""

from __future__ import annotations

import json
from typing import Any

RECORD_KEYS = (
    "name", "kind", "sinks", "window", "cache_size", "group", "mode", "num_tokens",
    "num_predicted", "mean_nll", "ppl", "ppl_low", "ppl_high", "after_eviction", "curve",
    "seconds", "tokens_per_second",
)  # fmt: skip
SETTING_KEYS = (
    "model", "model_name", "family", "context", "tokenizer", "text", "bos", "num_tokens", "mode",
    "backend", "dtype", "bin", "bootstrap", "device", "jax", "date",
)  # fmt: skip


def stream_page_data(path: str, command: str | None = None) -> dict[str, Any]:
    """The page data of one stream.json."""
    with open(path) as f:
        stream = json.load(f)
    settings = stream.get("settings", {})
    name = settings.get("model_name") or settings.get("model") or "stream"
    records = [{k: r.get(k) for k in RECORD_KEYS} for r in stream.get("records", [])]
    return {
        "kind": "stream",
        "title": f"Streaming perplexity: {name}",
        "profiles": [],
        "stream": {
            "name": name,
            "bin": settings.get("bin"),
            "records": records,
            "table": stream.get("table"),
        },
        "settings": [
            {
                "name": name,
                "items": {k: settings[k] for k in SETTING_KEYS if k in settings},
                "details": {},
            }
        ],
        "sources": [path],
        "notes": [],
        "command": command or settings.get("command"),
    }
