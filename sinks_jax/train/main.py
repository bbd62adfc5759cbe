"""`sinks-jax train --config CONFIG[:ARG] --workdir DIR [--config.key=value ...]`.

CONFIG is a config file, `PACKAGE:DIR/X.py`, or a built-in config's name (`quickstart`,
`context_length`, `depth`, `packing`, `paper_120m`, `repro`: `sinks_jax/configs/`).

Trains one config variant in DIR, resuming from DIR's newest checkpoint. A config whose
`train_all_variants` field is True (the quickstart) trains every variant its file lists into
DIR/<variant> and prints the family's table, as `sinks-jax sweep` followed by
`sinks-jax report` would.

Ctrl-C (or SIGTERM) saves a checkpoint and summary.json after the current step and exits
(status 130, or 143 for SIGTERM); the same command resumes. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

from sinks_jax.train.config_file import config_overrides, load_config, split_overrides
from sinks_jax.train.validate import ConfigError

__all__ = ["config_overrides", "load_config", "main", "split_overrides"]


def _parse_args(argv: list[str]) -> tuple[str, str, list[str]]:
    overrides, others = split_overrides(argv)
    parser = argparse.ArgumentParser(prog="sinks-jax train", add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--workdir")
    args, unknown = parser.parse_known_args(others)
    if unknown or args.config is None or args.workdir is None:
        problem = f"unknown arguments {unknown}" if unknown else "--config and --workdir needed"
        raise ConfigError(
            f"{problem}; usage: sinks-jax train --config configs/X.py[:ARG] --workdir DIR "
            "[--config.key=value ...]"
        )
    return args.config, args.workdir, overrides


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(__doc__.strip())
        print(
            "\nflags:\n  --config CONFIG[:ARG] config file or built-in name, and its argument"
            "\n  --workdir DIR         run directory (checkpoints, metrics, config.json)"
            "\n  --config.KEY=VALUE    override any key of the config"
            "\nenvironment:\n  SINKS_JAX_PROGRESS_EVERY=S  seconds between progress lines when "
            "stderr is not a terminal (default 30)"
        )
        return 0
    spec, workdir, overrides = _parse_args(argv)
    config = load_config(spec, overrides)
    if config.get("train_all_variants", False):
        from sinks_jax.train import report, sweep

        outcome = sweep.run_all(spec, workdir, overrides)
        sweep.report_outcome(outcome, shlex.join(["sinks-jax", "train", *argv]))
        if outcome.finished and not outcome.signal:  # no report of runs that never ended.
            print()
            report.print_report(workdir)
        return outcome.exit_code

    from sinks_jax.train.loop import train

    summary = train(config, workdir)
    if summary.get("status") != "finished":
        print(f"resume with: {shlex.join(['sinks-jax', 'train', *argv])}", file=sys.stderr)
        return 128 + int(signal.Signals[summary["signal"]])
    print("\n".join(summary_lines(summary, config, workdir)))
    return 0


def summary_lines(summary: dict, config, workdir: str) -> list[str]:
    """A finished run's summary.json in words: the losses, the sink rates with their 95 %
    intervals (with and without <bos>) and where the full report comes from."""
    T, T_eval = config.seq_len, config.get("eval_sink_len", 64)
    lines = [f"finished {summary.get('step')} steps in {workdir}"]
    if "val_loss" in summary:
        lines.append(f"  validation loss at T = {T} (seq_len): {summary['val_loss']:.3f} nats")
    profile = summary.get("sink_profile", {})

    def rate(name: str, eps: str) -> str:
        value = summary.get(f"val_sink_rate_{eps}_{name}")
        if value is None:
            return "-"
        prof = profile.get(name, {}).get(eps)
        if prof is None:
            return f"{100 * value:.1f} %"
        return f"{100 * value:.1f} % [{100 * prof['rate_low']:.1f}, {100 * prof['rate_high']:.1f}]"

    rows = [("with <bos>", "bos"), ("text only", "nobos")]
    if any(f"val_sink_rate_0.3_{name}" in summary for _, name in rows):
        lines.append(f"  at T = {T_eval} (eval_sink_len)   loss    sink rate eps 0.3     eps 0.8")
        for label, name in rows:
            loss = summary.get(f"val_loss_{name}")
            loss_text = "-" if loss is None else f"{loss:.3f}"
            lines.append(
                f"    {label:<26}{loss_text:<8}{rate(name, '0.3'):<22}{rate(name, '0.8')}"
            )
    if profile:
        lines.append("  [low, high]: 95 % bootstrap intervals over the held-out documents")
        lines.append("  (over the sequences for runs that kept no document ids)")
    lines.append(f"table and figures: sinks-jax report {shlex.quote(workdir)}")
    return lines
