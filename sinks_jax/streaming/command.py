"""`sinks-jax stream`: perplexity of a long text read through sink caches (StreamingLLM).

    sinks-jax stream --hf models/smollm2-135m --text book.txt --size 256 --sinks 0 1 2 4 8 \\
        --dense --recompute --out results/streaming/smollm2
    sinks-jax stream --workdir runs/ctx512 --cache 0+256 1+255 4+252 --out /tmp/stream
    sinks-jax stream --init-tiny --size 64 --max-tokens 600 --out /tmp/stream   # smoke test

Caches are written K+W: the first K tokens (sinks) and the W most recent ones, the current
token included (StreamingLLM's `start_size=K, recent_size=R` is K+(R+1) here). `--window W`
with `--sinks K ...` keeps W fixed; `--size S` keeps K + W = S fixed, as StreamingLLM's
Table 2; `--cache K+W ...` lists caches. `--dense` adds dense attention (nothing evicted),
`--recompute` the sliding window with re-computation (a fresh pass over the last W tokens
per target; W times the work).

Text: `--text FILE` (.txt, or .jsonl[.gz|.xz|.bz2] documents), `--source SPEC` (a data
source's documents, `--split`), `--tokens FILE` (a JSON list of token ids, or JSON lines each
with "ids"), else with `--workdir` the run's held-out documents, else the built-in
paragraphs. Documents are joined with `--doc-sep` (the tokenizer's <eos> by default); `--bos`
puts <bos> at the start of every stream. `--streams S` cuts the text into S streams of equal
length, read as one batch.

Writes DIR/stream.json (settings and one record per cache: mean NLL, perplexity, 95 %
bootstrap interval over `--bin`-token chunks, the targets after the first eviction, curves),
DIR/stream_nll.npz (the per-token NLL of every record), DIR/stream.md (the table) and
DIR/stream.png (perplexity against tokens read and against the number of sinks); `--html`
also writes DIR/report.html, an interactive page of the same numbers that opens from disk.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Any

import numpy as np

from sinks_jax import cli_args
from sinks_jax.streaming.texts import stream_tokens

SCHEMA = "sinks_jax.stream/1"


def build_parser() -> argparse.ArgumentParser:
    p = cli_args.ArgumentParser(
        prog="sinks-jax stream",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_args.add_model_source(p)
    txt = p.add_mutually_exclusive_group()
    txt.add_argument("--text", help="a text file (.txt) or documents (.jsonl[.gz|.xz|.bz2])")
    txt.add_argument("--source", help="a data source spec (e.g. text:GLOB); see --split")
    txt.add_argument("--tokens", help="token ids: a JSON list, or JSON lines with 'ids'")
    p.add_argument(
        "--split",
        default="valid",
        choices=("valid", "train", "all"),
        help="--source / the run's source: which split (default valid)",
    )
    p.add_argument(
        "--doc-sep",
        default="eos",
        choices=("eos", "bos", "none"),
        help="token between documents (default: the tokenizer's <eos>)",
    )
    p.add_argument("--bos", action="store_true", help="put <bos> at the start of every stream")
    p.add_argument(
        "--max-tokens",
        type=cli_args.whole(2),
        default=65536,
        help="tokens read per stream, <bos> included (default 65536)",
    )
    p.add_argument(
        "--streams",
        type=cli_args.whole(1),
        default=1,
        help="cut the text into this many streams, read as a batch (default 1)",
    )
    p.add_argument("--cache", nargs="+", default=[], metavar="K+W", help="caches to read with")
    p.add_argument(
        "--window",
        nargs="+",
        type=cli_args.whole(1),
        default=[],
        metavar="W",
        help="windows W, each with every --sinks K (cache K+W)",
    )
    p.add_argument(
        "--size",
        nargs="+",
        type=cli_args.whole(1),
        default=[],
        metavar="S",
        help="cache sizes S, each with every --sinks K (cache K+(S-K))",
    )
    p.add_argument(
        "--sinks",
        nargs="+",
        type=cli_args.whole(0),
        default=[0, 1, 2, 4, 8],
        metavar="K",
        help="sink counts for --window/--size (default 0 1 2 4 8)",
    )
    p.add_argument("--dense", action="store_true", help="add dense attention (no eviction)")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="add the sliding window with re-computation, per window/size",
    )
    p.add_argument(
        "--mode",
        choices=("fast", "decode", "both"),
        default="fast",
        help="fast (all queries at once), decode (token by token), or both "
        "(fast, checked against decode)",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="windowed kernel of the fast path "
        "(default: the model's, else cudnn on a GPU in bf16, else blockwise)",
    )
    p.add_argument(
        "--chunk", type=cli_args.whole(1), default=None, help="fast path: tokens per chunk"
    )
    p.add_argument(
        "--bin",
        type=cli_args.whole(1),
        default=1000,
        help="targets per bootstrap chunk (default 1000)",
    )
    p.add_argument(
        "--curve-bin",
        type=cli_args.whole(1),
        default=None,
        help="targets per bin of the curves (default: --bin)",
    )
    p.add_argument("--dtype", default=None, help="compute dtype of --hf models (default float32)")
    p.add_argument(
        "--seed", type=cli_args.whole(0), default=0, help="random inits and the bootstrap"
    )
    p.add_argument("--name", default=None, help="the model's label in tables and figures")
    cli_args.add_tokenizer(p, note="with --workdir the run's, with --hf the checkpoint's")
    cli_args.add_out(p, "output folder (stream.json, stream_nll.npz, stream.md, stream.png)")
    p.add_argument(
        "--html",
        action="store_true",
        help="also write report.html: an interactive page that opens from disk",
    )
    return p


# --------------------------------------------------------------------------- evaluation


def evaluate(model, tokens_SxN, config, args, progress_fn) -> tuple[np.ndarray, dict]:
    """(nll [S, N-1], extra record fields) of one configuration."""
    from sinks_jax.streaming import decode_nll, fast_nll, recompute_nll

    extra: dict[str, Any] = {}
    if config["kind"] == "recompute":
        return np.asarray(
            recompute_nll(model, tokens_SxN, config["window"], progress=progress_fn)
        ), {"mode": "recompute"}
    policy = config["policy"]
    if config["kind"] == "dense":
        nll = fast_nll(model, tokens_SxN, policy, backend=args.backend, progress=progress_fn)
        return np.asarray(nll), {"mode": "dense"}
    if args.mode == "decode":
        return np.asarray(decode_nll(model, tokens_SxN, policy, progress=progress_fn)), {
            "mode": "decode"
        }
    nll = np.asarray(
        fast_nll(
            model, tokens_SxN, policy, backend=args.backend, chunk=args.chunk, progress=progress_fn
        )
    )
    extra["mode"] = "fast"
    if args.mode == "both":
        ref = np.asarray(decode_nll(model, tokens_SxN, policy))
        extra["check"] = {
            "decode_mean_nll": float(ref.astype(np.float64).mean()),
            "max_abs_diff": float(np.abs(ref - nll).max()),
        }
    return nll, extra


def run(args: argparse.Namespace) -> dict:
    import jax

    from sinks_jax.analyze.loading import load_model
    from sinks_jax.progress import progress, stage
    from sinks_jax.streaming import fast as fast_lib
    from sinks_jax.streaming import grid
    from sinks_jax.streaming import table as table_lib
    from sinks_jax.streaming.figures import stream_figure
    from sinks_jax.streaming.summary import summarize

    if args.max_tokens < 2:
        raise ValueError(f"--max-tokens {args.max_tokens}: give at least 2 tokens.")
    for flag, value in (("--bin", args.bin), ("--curve-bin", args.curve_bin or 1)):
        if value < 1:
            raise ValueError(f"{flag} {value}: give a positive number of targets.")
    configs = grid.configurations(
        windows=args.window,
        sizes=args.size,
        sinks=args.sinks,
        caches=args.cache,
        dense=args.dense,
        recompute=args.recompute,
    )
    tokenizer_given = args.tokenizer != "byte"
    if args.hf and args.dtype:
        args.hf_dtype = args.dtype
    with stage("loading the model"):
        loaded = _load(args, load_model)
    model = loaded.model
    if args.workdir and tokenizer_given and args.tokenizer != loaded.tokenizer_spec:
        raise ValueError(
            f"--tokenizer {args.tokenizer!r} does not match the run's tokenizer "
            f"{loaded.tokenizer_spec!r}; omit --tokenizer to use the run's."
        )
    cfg = model.config
    tokenizer_spec = str(loaded.tokenizer_spec)
    if args.hf:
        from sinks_jax.pretrained.gguf import find_gguf

        gguf_file = find_gguf(args.hf)
        tokenizer_spec = f"gguf:{os.path.abspath(gguf_file)}" if gguf_file else tokenizer_spec
    tokens, text_desc = stream_tokens(args, loaded.tokenizer, loaded.run_config, cfg.vocab_size)
    S, N = tokens.shape
    for c in configs:
        size = c.get("size")
        if size is not None and size >= N:
            raise ValueError(
                f"cache {c['name']} holds {size} tokens but the stream has {N}: nothing would "
                "be evicted; use a smaller window/size or a longer text (--max-tokens)."
            )
    name = args.name or _model_name(args)
    settings = {
        "command": "sinks-jax stream " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
        "model": loaded.description,
        "model_name": name,
        "family": _family(cfg, args),
        "context": _context(loaded),
        "tokenizer": tokenizer_spec,
        "text": text_desc,
        "bos": bool(args.bos),
        "num_tokens": int(N),
        "streams": int(S),
        "mode": args.mode,
        "backend": args.backend or fast_lib.default_backend(cfg),
        "dtype": cfg.dtype,
        "attention_variant": cfg.attention_variant,
        "bin": args.bin,
        "curve_bin": args.curve_bin or args.bin,
        "bootstrap": {"resamples": 1000, "level": 0.95, "seed": args.seed},
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
    }
    print(f"# {name}: {S} stream(s) x {N} tokens of {text_desc}; {len(configs)} evaluation(s)")
    os.makedirs(args.out, exist_ok=True)
    records, arrays = [], {}
    for c in configs:
        bar = progress(total=N - 1, desc=f"stream {c['name']}", unit="tok")
        done = [0]

        def tick(n, bar=bar, done=done):
            bar.update(n - done[0])
            done[0] = n

        start = time.perf_counter()
        nll, extra = evaluate(model, tokens, c, args, tick)
        seconds = time.perf_counter() - start
        bar.close()
        policy = c.get("policy")
        first_eviction = None
        if c["kind"] == "cache":
            first_eviction = policy.first_eviction
        elif c["kind"] == "recompute":
            first_eviction = c["window"]
        summary = summarize(
            nll,
            first_eviction=first_eviction,
            bin_size=args.bin,
            curve_bin=args.curve_bin,
            context=settings["context"],
            seed=args.seed,
        )
        rec = {
            "name": c["name"],
            "kind": c["kind"],
            "sinks": policy.sinks if c["kind"] == "cache" else 0,
            "window": (policy.window if c["kind"] == "cache" else c.get("window")),
            "cache_size": c.get("size"),
            "group": c["group"],
            "mode": extra.pop("mode"),
            "num_tokens": int(N),
            **summary,
            "nll_key": c["name"],
            "seconds": seconds,
            "tokens_per_second": float(nll.size / seconds) if seconds > 0 else None,
            **extra,
        }
        records.append(rec)
        arrays[c["name"]] = nll.astype(np.float32)
        _write(
            args.out,
            {"schema": SCHEMA, "settings": settings, "records": records, "complete": False},
            arrays,
        )
        iv = "" if rec["ppl_low"] is None else f" [{rec['ppl_low']:.2f}, {rec['ppl_high']:.2f}]"
        print(f"{c['name']:>14}: ppl {rec['ppl']:.3f}{iv}  ({seconds:.1f} s)", flush=True)
    tab = table_lib.table(records, name)
    result = {
        "schema": SCHEMA,
        "settings": settings,
        "records": records,
        "table": tab,
        "complete": True,
    }
    _write(args.out, result, arrays)
    with open(os.path.join(args.out, "stream.md"), "w") as f:
        f.write(table_lib.format_table(tab, markdown=True) + "\n")
    stream_figure(result, os.path.join(args.out, "stream.png"))
    print()
    print(table_lib.format_table(tab))
    print(
        f"\nwrote {os.path.join(args.out, 'stream.json')} (+ stream_nll.npz, stream.md, stream.png)"
    )
    return result


def _write(out: str, result: dict, arrays: dict) -> None:
    """stream.json and stream_nll.npz (after every record: a long run keeps what it measured)."""
    with open(os.path.join(out, "stream.json.partial"), "w") as f:
        json.dump(result, f, indent=1)
    np.savez_compressed(os.path.join(out, "stream_nll.partial.npz"), **arrays)
    os.replace(os.path.join(out, "stream.json.partial"), os.path.join(out, "stream.json"))
    os.replace(os.path.join(out, "stream_nll.partial.npz"), os.path.join(out, "stream_nll.npz"))


def _load(args, load_model):
    if args.hf:
        from sinks_jax import hf

        if not os.path.exists(args.hf):
            raise FileNotFoundError(f"--hf {args.hf!r}: no such file or folder.")
        if args.dtype:  # load_model reads --hf in float32; another dtype is loaded here.
            from sinks_jax.analyze.loading import Loaded

            model, tok = hf.load(args.hf, dtype=args.dtype, progress=False)
            path = os.path.abspath(args.hf)
            spec = f"gguf:{path}" if path.endswith(".gguf") else f"hf:{path}"
            return Loaded(model, tok, spec, f"hf:{path}", None)
    return load_model(args)


def _model_name(args) -> str:
    for value in (args.hf, args.workdir, args.init_hf_config):
        if value:
            return os.path.basename(os.path.normpath(value))
    return "tiny"


def _family(cfg, args) -> str:
    if args.workdir:
        return "trained"
    if cfg.position_type == "learned":
        return "gpt2"
    if cfg.norm_scale_offset:
        return "gemma"
    return "llama"


def _context(loaded) -> int | None:
    cfg = loaded.model.config
    if loaded.run_config is not None:
        try:
            return int(loaded.run_config["seq_len"])
        except (KeyError, TypeError, ValueError):
            return None
    return int(cfg.max_position_embeddings) if cfg.max_position_embeddings else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(args)
    if args.html:
        from sinks_jax.html import write_stream_page

        print(f"wrote {write_stream_page(os.path.join(args.out, 'stream.json'))}")
    return 0
