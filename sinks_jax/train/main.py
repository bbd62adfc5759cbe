"""`sinks-jax train --config configs/X.py[:ARG] --workdir DIR [--config.key=value ...]`.

Trains one config variant in DIR, resuming from DIR's newest checkpoint. A config whose
`train_all_variants` field is True (the quickstart) trains every variant its file lists into
DIR/<variant> and prints the family's table, as `sinks-jax sweep` followed by
`sinks-jax report` would.
"""

from __future__ import annotations

import sys

import ml_collections
from absl import flags
from ml_collections import config_flags


def _flag_values(argv: list[str]) -> flags.FlagValues:
    """Fresh flags (so `main` can run several times in one process) that read `argv`."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "config file, optionally with an argument: configs/X.py[:ARG]",
        flag_values=fv,
        lock_config=True,
        sys_argv=argv,
    )
    flags.DEFINE_string(
        "workdir", None, "run directory (checkpoints, metrics, config.json)", flag_values=fv
    )
    return fv


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(`--config.key=value` arguments, joined when given as two tokens; everything else)."""
    overrides, others, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            if "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                a, i = f"{a}={argv[i + 1]}", i + 1
            overrides.append(a)
        else:
            others.append(a)
        i += 1
    return overrides, others


def config_overrides(argv: list[str]) -> list[str]:
    """The `--config.key=value` arguments of `argv`."""
    return split_overrides(argv)[0]


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """The config of `path[:arg]` with `--config.key=value` overrides applied (absl parsing)."""
    argv = ["sinks-jax", f"--config={spec}", *overrides]
    fv = _flag_values(argv)
    fv(argv)
    return fv.config


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(__doc__.strip())
        print(
            "\nflags:\n  --config FILE[:ARG]   config file (configs/*.py) and its optional argument"
            "\n  --workdir DIR         run directory (checkpoints, metrics, config.json)"
            "\n  --config.KEY=VALUE    override any key of the config"
        )
        return 0
    full_argv = ["sinks-jax train", *argv]
    fv = _flag_values(full_argv)
    try:
        fv(full_argv)
    except flags.Error as e:
        print(
            f"sinks-jax train: {e}\nusage: sinks-jax train --config configs/X.py[:ARG] "
            "--workdir DIR [--config.key=value ...]",
            file=sys.stderr,
        )
        return 2
    if fv.config is None or fv.workdir is None:
        print(
            "sinks-jax train: --config and --workdir are required, e.g. "
            "sinks-jax train --config configs/quickstart.py --workdir runs/quickstart",
            file=sys.stderr,
        )
        return 2
    config = fv.config
    if config.get("train_all_variants", False):
        from sinks_jax.train import report, sweep

        spec = config_flags.get_config_filename(fv["config"])
        failed = sweep.run_all(spec, fv.workdir, config_overrides(argv))
        report.main([fv.workdir])
        return 1 if failed else 0

    from sinks_jax.train.loop import train

    summary = train(config, fv.workdir)
    scalars = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in scalars.items()})
    return 0
