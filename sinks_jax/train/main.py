"""`sinks-jax train --config configs/X.py[:ARG] --workdir DIR [--config.key=value ...]`.

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
            "\nflags:\n  --config FILE[:ARG]   config file (configs/*.py) and its optional argument"
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

        failed = sweep.run_all(spec, workdir, overrides)
        report.main([workdir])
        return 1 if failed else 0

    from sinks_jax.train.loop import train

    summary = train(config, workdir)
    scalars = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in scalars.items()})
    if summary.get("status") != "finished":
        print(f"resume with: {shlex.join(['sinks-jax', 'train', *argv])}", file=sys.stderr)
        return 128 + int(signal.Signals[summary["signal"]])
    return 0
