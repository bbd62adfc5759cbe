"""A Hugging Face checkpoint's tokenizer (`tokenizer.json`) with its own special tokens."""

from __future__ import annotations

import json
import os
from typing import Any

from sinks_jax.data.tokenizers import HFTokenizer


def load_tokenizer(path: str, hf_config: dict[str, Any] | None = None) -> HFTokenizer:
    """The folder's `tokenizer.json` with the checkpoint's own special tokens.

    Specials come from `tokenizer_config.json` (bos_token, eos_token, pad_token), else from
    config.json's `*_token_id`; a checkpoint without a pad token pads with its eos (padding is
    never attended to). `encode` adds no special tokens: prepend `bos_id` where wanted.
    """
    extra: dict[str, Any] = {}
    tc_path = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(tc_path):
        with open(tc_path) as f:
            extra = json.load(f)
    hf_config = hf_config or {}
    specials: dict[str, str] = {}
    for kind in ("bos", "eos", "pad"):
        token = extra.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        value = hf_config.get(f"{kind}_token_id")
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(token, str):
            specials[kind] = token
        elif isinstance(value, int):
            specials[kind] = str(value)
    if "pad" not in specials and "eos" in specials:
        specials["pad"] = specials["eos"]
    return HFTokenizer(os.path.join(path, "tokenizer.json"), **specials)
