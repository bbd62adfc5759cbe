"""What `sinks-jax analyze` reads: tokenizers, prompt files and sources, the token rows built
from them, and the swapped perturbation prompt."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from sinks_jax.analysis import prompts as builtin_prompts
from sinks_jax.data import tokenizers
from sinks_jax.pretrained import gguf  # noqa: F401  (registers the `gguf:` tokenizer kind)


def load_tokenizer(spec: Any) -> Any:
    """A tokenizer from its spec (`byte`, `sp:PATH.model`, `hf:PATH/tokenizer.json`,
    `gguf:PATH.gguf`).

    Any object with `encode(str) -> list[int]`, `decode`, `vocab_size`, `bos_id`, `pad_id`
    (e.g. the one `sinks_jax.hf.load` returns) is passed through.
    """
    if not isinstance(spec, str):
        return spec
    return tokenizers.get_tokenizer(spec)


# --------------------------------------------------------------------------- inputs


def load_prompts(path: str | None) -> list[str]:
    """Prompts from a .txt (one per non-empty line) or .jsonl ('text' field) file, or built-ins."""
    if path is None:
        return list(builtin_prompts.DEFAULT_PROMPTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts {path!r}: no such file.")
    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if path.endswith(".jsonl"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e}).") from e
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{n}: each JSON line needs a string 'text' field.")
                texts.append(record["text"])
            else:
                texts.append(line)
    if not texts:
        raise ValueError(
            f"--prompts {path!r} holds no prompts (empty or blank lines only); "
            "write one prompt per line, or omit --prompts for the built-in set."
        )
    return texts


def prompts_from_source(spec: str, num: int, min_tokens: int, tok: Any) -> list[list[int]]:
    """Token ids of the first `num` documents of at least `min_tokens` tokens of a source's
    'valid' split (`prepared:DIR` corpora are read as stored, without re-tokenising)."""
    from sinks_jax.data import document_tokens  # only needed here

    token_lists: list[list[int]] = []
    seen = 0
    for ids in document_tokens(spec, tok, "valid"):
        seen += 1
        if len(ids) >= min_tokens:
            token_lists.append([int(t) for t in ids])
        if len(token_lists) == num or seen >= 100 * num:
            break
    if not token_lists:
        raise ValueError(
            f"--prompts-source {spec!r}: no document of at least {min_tokens} "
            f"tokens among the first {seen}; use --short pad."
        )
    return token_lists


def make_sequences(
    token_lists: Sequence[Sequence[int]],
    seq_len: int,
    *,
    bos_id: int | None,
    pad_id: int,
    short: str,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """int32 tokens `[N, T]`, float valid mask `[N, T]`, and the indices of the kept prompts.

    With `bos_id`, each row is `<bos>` + the first T-1 prompt tokens; otherwise the first T.
    """
    need = seq_len - (1 if bos_id is not None else 0)
    rows, masks, kept = [], [], []
    for idx, toks in enumerate(token_lists):
        toks = list(toks[:need])
        if len(toks) < need and short == "skip":
            continue
        prefix = [bos_id] if bos_id is not None else []
        row = prefix + toks
        masks.append([1.0] * len(row) + [0.0] * (seq_len - len(row)))
        rows.append(row + [pad_id] * (seq_len - len(row)))
        kept.append(idx)
    return (
        np.asarray(rows, np.int32).reshape(-1, seq_len),
        np.asarray(masks, np.float32).reshape(-1, seq_len),
        kept,
    )


def _run_source(run_config: dict) -> str:
    """The data source a training config names (`data.source`)."""
    try:
        return str(run_config["data"]["source"])
    except (KeyError, TypeError):
        raise ValueError(
            "--workdir: the run's config.json names no data.source to draw held-out prompts "
            "from; pass --prompts FILE or --prompts-source SPEC."
        ) from None


def choose_prompts(
    args: argparse.Namespace, tok: Any, run_config: dict | None
) -> tuple[list[list[int]], str]:
    """`(token lists, description)`: --prompts FILE, --prompts-source SPEC, else with --workdir
    the run's own held-out documents (a model trained on synthetic data has never seen
    English), else the built-in paragraphs. Sets the perturbation prompt to the first drawn
    document. `prepared:DIR` sources are read as stored, without re-tokenising."""
    limit = getattr(args, "num_prompts", None)  # the first N prompts of any source
    first = "" if limit is None else f"first {limit} of "
    if args.prompts or (args.prompts_source is None and run_config is None):
        texts = load_prompts(args.prompts)[:limit]
        where = f"file:{args.prompts}" if args.prompts else "built-in paragraphs"
        return [tok.encode(t) for t in texts], first + where
    from_run = args.prompts_source in (None, "run")
    if from_run and run_config is None:
        raise ValueError("--prompts-source run needs --workdir (the run's data.source).")
    spec = _run_source(run_config) if from_run else args.prompts_source
    min_tokens = 0 if args.short == "pad" else args.seq_len
    try:
        token_lists = prompts_from_source(spec, limit or 170, min_tokens, tok)
    except (ValueError, FileNotFoundError) as e:
        if args.prompts_source is not None:
            raise
        raise ValueError(
            f"--workdir {args.workdir!r}: the run's held-out data ({spec}) cannot be read ({e}); "
            "pass --prompts FILE or --prompts-source SPEC."
        ) from e
    if args.spread_prompt is None:
        args.spread_prompt = tok.decode(token_lists[0])
        args.swap = args.swap or f"@{min(args.spread_len, len(token_lists[0])) // 2}"
    where = "the run's held-out documents, " if from_run else ""
    return token_lists, f"source:{spec} ({where}valid split)"


def choose_swap(tok: Any, text: str, swap: str | None) -> tuple[str, str, list[int], list[int]]:
    """`(old, new, tokens, swapped_tokens)` with equal tokenised lengths."""
    if swap and swap.startswith("@"):
        base = tok.encode(text)
        try:
            pos = int(swap[1:])
        except ValueError:
            raise ValueError(f"--swap {swap!r}: write @POS with an integer position.") from None
        if not 0 <= pos < len(base):
            raise ValueError(f"--swap {swap!r}: position outside the prompt's {len(base)} tokens.")
        swapped = list(base)
        swapped[pos] = (base[pos] + 1) % tok.vocab_size
        specials = {getattr(tok, n, None) for n in ("bos_id", "eos_id", "pad_id")}
        while swapped[pos] in specials or swapped[pos] == base[pos]:
            swapped[pos] = (swapped[pos] + 1) % tok.vocab_size
        return f"token {base[pos]} @{pos}", f"token {swapped[pos]}", base, swapped
    if swap:
        if "=" not in swap:
            raise ValueError(f"--swap {swap!r}: write OLD=NEW, e.g. --swap greatest=best.")
        old, new = swap.split("=", 1)
        candidates = [new]
    else:
        old, candidates = builtin_prompts.SWAP_WORD, list(builtin_prompts.SWAP_CANDIDATES)
    if old not in text:
        raise ValueError(f"--swap: word {old!r} does not occur in the perturbation prompt.")
    base = tok.encode(text)
    lengths = {}
    for new in candidates:
        swapped = tok.encode(text.replace(old, new, 1))
        if len(swapped) == len(base) and swapped != base:
            return old, new, base, swapped
        lengths[new] = len(swapped)
    raise ValueError(
        f"--swap: no replacement for {old!r} keeps the tokenised length "
        f"{len(base)} (got {lengths}); pass --swap {old}=WORD with a word of the "
        "same token count."
    )
