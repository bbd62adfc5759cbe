"""The text a `sinks-jax stream` run reads: a file, a data source, token ids, a run's held-out
documents or the built-in paragraphs, joined and cut into equal streams of token ids."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def _read_token_file(path: str) -> list[list[int]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tokens {path!r}: no such file.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
        docs = [data]
    except json.JSONDecodeError:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--tokens {path}:{n}: not valid JSON ({e}).") from None
            if not isinstance(rec, dict) or "ids" not in rec:
                raise ValueError(f"--tokens {path}:{n}: each JSON line needs an 'ids' list.")
            docs.append(rec["ids"])
    for doc in docs:
        if not isinstance(doc, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in doc
        ):
            raise ValueError(
                f"--tokens {path!r}: expected a JSON list of integer token ids (or JSON lines "
                "each with an 'ids' list of integers)."
            )
    return docs


def _jsonl_documents(path: str):
    """The 'text' field of each line of a (compressed) JSON-lines file, in order."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(
        os.path.splitext(path)[1], open
    )
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                raise ValueError(f"--text {path}:{n}: not a JSON object with a 'text' field.")
            if isinstance(text, str) and text.strip():
                yield text


def _documents(args, tok, run_config) -> tuple[Any, str]:
    """(iterator of document texts or token-id sequences, description)."""
    from sinks_jax.data.corpus import document_tokens

    if args.tokens:
        return _read_token_file(args.tokens), f"tokens:{args.tokens}"
    if args.text:
        if not os.path.isfile(args.text):
            raise FileNotFoundError(f"--text {args.text!r}: no such file.")
        base = args.text
        for ext in (".gz", ".xz", ".bz2"):
            base = base.removesuffix(ext)
        if base.endswith(".jsonl"):  # every document of the file, in order
            return _jsonl_documents(args.text), f"file:{args.text}"
        with open(args.text, encoding="utf-8", errors="replace") as f:
            return [f.read()], f"file:{args.text}"
    if args.source:
        docs = document_tokens(args.source, tok, args.split)
        return docs, f"source:{args.source} ({args.split})"
    if run_config is not None:
        try:
            spec = str(run_config["data"]["source"])
        except (KeyError, TypeError):
            raise ValueError(
                "--workdir: the run's config names no data.source; pass --text, --source or "
                "--tokens."
            ) from None
        return document_tokens(spec, tok, args.split), f"source:{spec} ({args.split}, the run's)"
    from sinks_jax.analysis import prompts

    return list(prompts.DEFAULT_PROMPTS), "built-in paragraphs"


def stream_tokens(args, tok, run_config, vocab_size: int) -> tuple[np.ndarray, str]:
    """int32 [streams, N]: the text's tokens, cut into streams (with <bos> first if asked)."""
    docs, desc = _documents(args, tok, run_config)
    sep_id = {
        "eos": getattr(tok, "eos_id", None),
        "bos": getattr(tok, "bos_id", None),
        "none": None,
    }[args.doc_sep]
    bos_id = getattr(tok, "bos_id", None)
    if args.bos and bos_id is None:
        raise ValueError("--bos: this tokenizer has no <bos> token.")
    per_stream = args.max_tokens - (1 if args.bos else 0)
    need = per_stream * args.streams
    ids: list[int] = []
    for i, doc in enumerate(docs):
        if i and sep_id is not None:
            ids.append(int(sep_id))
        ids.extend(int(t) for t in (tok.encode(doc) if isinstance(doc, str) else doc))
        if len(ids) >= need:
            break
    if args.streams < 1:
        raise ValueError(f"--streams {args.streams}: give a count >= 1.")
    n = min(per_stream, len(ids) // args.streams)
    if n < 2:
        raise ValueError(f"{desc}: {len(ids)} tokens are too few for {args.streams} stream(s).")
    rows = np.asarray(ids[: n * args.streams], np.int64).reshape(args.streams, n)
    if args.bos:
        rows = np.concatenate([np.full((args.streams, 1), bos_id), rows], axis=1)
    bad = (rows < 0) | (rows >= vocab_size)
    if bad.any():
        raise ValueError(
            f"{desc}: token id {int(rows[bad][0])} is outside the model's vocabulary of "
            f"{vocab_size}; the ids must come from the model's tokenizer."
        )
    return rows.astype(np.int32), desc
