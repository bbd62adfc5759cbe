"""`sinks-jax analyze`: sink, perturbation-spread and Jacobian report on a model.

    sinks-jax analyze --workdir runs/ctx512 --out reports/ctx512
    sinks-jax analyze --hf path/to/hf_dir --prompts prompts.jsonl --seq-len 64 --eps 0.3 0.8
    sinks-jax analyze --init-tiny --out /tmp/report          # random tiny model (smoke test)

Writes `report.json` (every number and the settings that produced it) and PNG figures:
sink-score heatmap, sink rate per layer, perturbation spread with and without `<bos>`,
Jacobian sensitivity beside the path bound, value norms of the sink token vs the rest.
`attention_maps.npz` holds the per-head maps of the first `--maps` windows of each layout;
`--html` also writes `report.html`, an interactive page that opens from disk.

Sequences: "with_bos" is `<bos>` followed by the first T-1 prompt tokens; "text_only" is the
first T prompt tokens. Prompts shorter than T are skipped (`--short skip`, the default) or
padded at the end (`--short pad`); padding is excluded from every statistic (causal attention
never lets a real query see a later pad token).

Prompts: `--prompts FILE`, `--prompts-source SPEC`, or by default the run's own held-out
documents with `--workdir` and the built-in English paragraphs otherwise; `settings.prompts`
in report.json (and the printed summary) says which were used.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any

import jax

from sinks_jax import cli_args
from sinks_jax.analysis import prompts as builtin_prompts
from sinks_jax.analyze.figures import write_figures
from sinks_jax.analyze.inputs import choose_prompts, choose_swap, load_prompts, make_sequences
from sinks_jax.analyze.loading import load_model
from sinks_jax.analyze.maps import attention_maps, save_maps
from sinks_jax.analyze.measurements import (
    bos_loss_report,
    long_context_report,
    sink_report,
    spread_report,
)
from sinks_jax.progress import stage


# Output directions of the Jacobian estimate: a relative sd of at most sqrt(2/64) = 18 % on
# each squared norm (9 % on the norm), for 64 backward passes whatever the width.
JACOBIAN_DIRECTIONS = 64


def _directions(text: str) -> int | None:
    """`--jacobian-directions`: a whole number >= 1, or 'all' (None: exact)."""
    if text == "all":
        return None
    try:
        return cli_args.whole(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a whole number >= 1 nor 'all'"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = cli_args.ArgumentParser(
        prog="sinks-jax analyze",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_args.add_model_source(p)
    prm = p.add_mutually_exclusive_group()
    prm.add_argument(
        "--prompts",
        help="prompt file: .txt (one prompt per line) or .jsonl with a 'text' field; "
        "default: with --workdir the run's held-out documents (--prompts-source run), "
        "otherwise the built-in set of 10 paragraphs",
    )
    prm.add_argument(
        "--prompts-source",
        help="draw prompts from a data source spec (e.g. synthetic:bigram_backcopy, "
        "text:GLOB), its 'valid' split; 'run' = the --workdir run's source",
    )
    p.add_argument(
        "--num-prompts",
        type=cli_args.whole(1),
        default=None,
        help="use the first N prompts of any source (default: every prompt of a --prompts file "
        "or of the built-in set; 170 drawn from a source, as the paper)",
    )
    cli_args.add_seq_len(p, 64, "tokens per sequence T")
    p.add_argument(
        "--eps",
        type=cli_args.number(0, 1, low_open=True),
        nargs="+",
        default=[0.3, 0.8],
        help="sink-rate thresholds (default 0.3 0.8)",
    )
    p.add_argument(
        "--batch-size", type=cli_args.whole(1), default=8, help="sequences per forward pass"
    )
    cli_args.add_tokenizer(
        p, note="with --workdir the run's own tokenizer is used, with --hf the checkpoint's"
    )
    p.add_argument(
        "--short",
        choices=("skip", "pad"),
        default="skip",
        help="prompts shorter than T: skip them (default) or pad at the end",
    )
    p.add_argument(
        "--spread-len",
        type=cli_args.whole(1),
        default=128,
        help="text tokens of the perturbation prompt (default 128)",
    )
    p.add_argument(
        "--spread-prompt",
        default=None,
        help="perturbation prompt (default: the Shakespeare paragraph; with "
        "--prompts-source, the first drawn prompt)",
    )
    p.add_argument(
        "--swap",
        default=None,
        help="OLD=NEW: words to swap in the perturbation prompt (same tokenised "
        "length); @POS: replace the token at text position POS by the next "
        "token id. Default: greatest=best or a same-length synonym; with "
        "--prompts-source, @(n/2)",
    )
    p.add_argument(
        "--jacobian-layers",
        choices=("last", "all"),
        default="last",
        help="hidden layers whose Jacobian is measured (default: last)",
    )
    p.add_argument(
        "--jacobian-chunk",
        type=cli_args.whole(1),
        default=64,
        help="output directions per backward batch (lower it if memory is short)",
    )
    p.add_argument(
        "--jacobian-directions",
        type=_directions,
        default=JACOBIAN_DIRECTIONS,
        metavar="K|all",
        help="output directions per measured layer: K random orthonormal ones give an unbiased "
        "estimate at K/D of the cost of the exact 'all' (one backward pass each; default "
        f"{JACOBIAN_DIRECTIONS}, exact for d_model <= {JACOBIAN_DIRECTIONS})",
    )
    p.add_argument(
        "--skip-jacobian",
        action="store_true",
        help="skip the Jacobian sensitivity and the path bound",
    )
    p.add_argument(
        "--no-bos", action="store_true", help="the tokenizer has no <bos>: analyse text only"
    )
    p.add_argument(
        "--loss-file",
        help="text file (.txt one text per line, or .jsonl 'text'): next-token loss with and "
        "without <bos> on the same targets (the paper's Table 2 evaluation)",
    )
    p.add_argument(
        "--long-context",
        type=cli_args.whole(2),
        nargs="+",
        default=[],
        help="also measure sinks at each of these many tokens (the prompts joined) through "
        "a fused backend, with time and peak memory",
    )
    p.add_argument(
        "--long-context-only",
        action="store_true",
        help="with --long-context: skip the T-token report and the figures (report.json holds "
        "the settings and the long-context results)",
    )
    p.add_argument(
        "--long-backend",
        default=None,
        help="fused backend for --long-context (default: cudnn on GPU, blockwise elsewhere)",
    )
    cli_args.add_out(p, "output folder for report.json and figures")
    p.add_argument(
        "--maps",
        type=cli_args.whole(0),
        default=2,
        help="windows per layout whose per-head attention maps are saved to "
        "attention_maps.npz (float16; default 2, 0: none)",
    )
    p.add_argument(
        "--map-tokens",
        type=cli_args.whole(2),
        default=128,
        help="saved maps keep the first N tokens of each window (exact under causal "
        "attention; default 128)",
    )
    p.add_argument(
        "--html",
        action="store_true",
        help="also write report.html: an interactive page of the report that opens from disk",
    )
    p.add_argument(
        "--seed", type=cli_args.whole(0), default=0, help="init seed of the random models"
    )
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.seq_len < 2:
        raise ValueError(f"--seq-len {args.seq_len}: need at least 2 tokens.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be at least 1.")
    t0 = time.time()
    with stage("model"):
        loaded = load_model(args)
    model, tok, run_config = loaded.model, loaded.tokenizer, loaded.run_config
    cfg = model.config
    bos_id = None if args.no_bos else getattr(tok, "bos_id", None)
    with stage("prompts"):
        token_lists, prompts_desc = choose_prompts(args, tok, run_config)
    max_id = max((max(t) for t in token_lists if t), default=-1)
    if max_id >= cfg.vocab_size or (bos_id is not None and bos_id >= cfg.vocab_size):
        raise ValueError(
            f"tokenizer/model mismatch: token id {max(max_id, bos_id or 0)} >= "
            f"model vocab_size {cfg.vocab_size}; pass the tokenizer the model was "
            f"trained with (--tokenizer, now {loaded.tokenizer_spec!r})."
        )

    choose_swap(tok, args.spread_prompt or builtin_prompts.SHAKESPEARE, args.swap)  # fail early
    layouts = {"text_only": None} if bos_id is None else {"with_bos": bos_id, "text_only": None}
    settings = {
        "model": loaded.description,
        "model_config": cfg.to_dict(),
        "seq_len": args.seq_len,
        "eps": list(args.eps),
        "batch_size": args.batch_size,
        "short": args.short,
        "tokenizer": loaded.tokenizer_spec,
        "bos_id": bos_id,
        "prompts": prompts_desc,
        "num_prompts": len(token_lists),
        "layouts": {
            "with_bos": "<bos> + first T-1 prompt tokens",
            "text_only": "first T prompt tokens",
        },
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
    }
    report: dict[str, Any] = {"settings": settings, "sinks": {}}
    if args.long_context_only:
        if not args.long_context:
            raise ValueError("--long-context-only needs --long-context N [N ...].")
        return _finish(args, report, t0, long_context_reports(model, token_lists, bos_id, args))
    maps: dict[str, Any] = {}
    for name, prefix in layouts.items():
        tokens, valid, kept = make_sequences(
            token_lists,
            args.seq_len,
            bos_id=prefix,
            pad_id=int(getattr(tok, "pad_id", 0) or 0),
            short=args.short,
        )
        if not kept:
            lengths = sorted(len(t) for t in token_lists)
            raise ValueError(
                f"all {len(token_lists)} prompts are shorter than --seq-len "
                f"{args.seq_len} tokens (lengths {lengths[:5]}...{lengths[-1]}); "
                "use --short pad or a smaller --seq-len."
            )
        with stage(f"sinks, {name} ({len(kept)} sequences of {args.seq_len} tokens)"):
            res = sink_report(model, tokens, valid, args.eps, args.batch_size, desc=name)
        res["kept_prompt_indices"] = kept
        report["sinks"][name] = res
        if args.maps:
            maps[name], res["attention_maps"] = attention_maps(
                model, tok, tokens, valid, args.maps, args.map_tokens, name, prefix is not None
            )
    settings["num_sequences"] = report["sinks"]["text_only"]["num_sequences"]
    report["spread"] = spread_report(model, tok, bos_id, args)
    if args.loss_file:
        if bos_id is None:
            raise ValueError("--loss-file compares with and without <bos>; the tokenizer has none.")
        loss_tokens = [tok.encode(t) for t in load_prompts(args.loss_file)]
        with stage("loss with and without <bos>"):
            report["bos_loss"] = bos_loss_report(
                model, loss_tokens, bos_id, args.seq_len, args.batch_size
            )
        settings["loss_file"] = args.loss_file
    long_context = long_context_reports(model, token_lists, bos_id, args)
    os.makedirs(args.out, exist_ok=True)
    save_maps(args.out, maps)
    with stage("figures"):
        report["figures"] = [os.path.basename(p) for p in write_figures(report, args.out)]
    return _finish(args, report, t0, long_context)


def long_context_reports(model, token_lists, bos_id, args) -> list[dict[str, Any]]:
    """One `long_context_report` per --long-context length, shortest first."""
    reports = []
    for n in sorted(args.long_context):
        with stage(f"long context, T = {n}"):
            reports.append(
                long_context_report(model, token_lists, bos_id, n, args.long_backend, args.eps)
            )
    return reports


def _finish(args, report: dict[str, Any], t0: float, long_context: list) -> dict[str, Any]:
    """Adds the long-context results and the run time; writes report.json."""
    if long_context:
        report["long_context"] = long_context
    report["settings"]["seconds"] = round(time.time() - t0, 2)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"sinks-jax analyze: error: {e}", file=sys.stderr)
        return 2
    print(f"  prompts: {report['settings']['prompts']}")
    for name, res in report["sinks"].items():
        rates = ", ".join(f"eps={e}: {r:.2f}%" for e, r in res["sink_rate_percent"].items())
        print(f"{name:>9}: {res['num_sequences']} sequences, sink rate {rates}")
    if "bos_loss" in report:
        b = report["bos_loss"]
        print(
            f"     loss: with <bos> {b['loss_with_bos']:.4f}, text only {b['loss_text_only']:.4f} "
            f"nats; top-1 accuracy {b['top1_accuracy_with_bos']:.4f} / "
            f"{b['top1_accuracy_text_only']:.4f} ({b['targets']} targets)"
        )
    for lc in report.get("long_context", []):
        rates = ", ".join(f"eps={e}: {r:.2f}%" for e, r in lc["sink_rate_percent"].items())
        print(
            f"     T={lc['seq_len']} ({lc['backend']}): sink rate {rates}; "
            f"{lc['seconds_incl_compile']} s; peak {lc['peak_device_bytes']} bytes"
        )
    figures = len(report.get("figures", []))
    seconds = report["settings"]["seconds"]
    print(f"wrote {os.path.join(args.out, 'report.json')} and {figures} figures ({seconds:.0f} s)")
    if args.html:
        from sinks_jax.html import write_analyze_page

        words = ["analyze", *(sys.argv[1:] if argv is None else argv)]
        page = write_analyze_page(
            [os.path.join(args.out, "report.json")], command="sinks-jax " + shlex.join(words)
        )
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
