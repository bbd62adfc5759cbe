"""`sinks-jax sweep CONFIG[:ARG] --workdir DIR [--print] [--only A,B] [--config.key=value ...]`.

Runs every variant of a config family (the config file's `variants(arg)`: name -> argument)
into DIR/<name>, one after the other in this process: finished variants (DIR/<name>/
summary.json with status "finished") are skipped, interrupted ones resume from their newest
checkpoint. `--print` instead prints one `sinks-jax train` command per variant, to hand to
a cluster scheduler (see launch/).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import traceback

from sinks_jax import cli
from sinks_jax.train.config_file import load_config, resolve_config_spec, split_overrides


def split_spec(spec: str) -> tuple[str, str | None]:
    """`path[:arg]` -> (path, arg or None)."""
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def family_variants(spec: str) -> dict[str, str]:
    """Variant name -> full config spec `path:arg`, from the file's `variants(arg)` (a
    relative path: in the current directory, else in the repository's configs/)."""
    path, arg = split_spec(resolve_config_spec(spec))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist.")
    module_spec = importlib.util.spec_from_file_location("sinks_jax_config_family", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "variants"):
        raise ValueError(
            f"{path} defines no variants(arg) function, so it is not a config family; "
            "train it directly with `sinks-jax train --config ...`."
        )
    return {name: f"{path}:{varg}" for name, varg in module.variants(arg).items()}


def is_finished(workdir: str) -> bool:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return json.load(f).get("status") == "finished"


def train_commands(spec: str, workdir: str, overrides: list[str]) -> list[str]:
    """One shell command per variant."""
    return [
        shlex.join(
            [
                "sinks-jax",
                "train",
                f"--config={vspec}",
                f"--workdir={os.path.join(workdir, name)}",
                *overrides,
            ]
        )
        for name, vspec in family_variants(spec).items()
    ]


def run_all(
    spec: str, workdir: str, overrides: list[str], only: list[str] | None = None
) -> list[str]:
    """Train every variant (skip finished, resume interrupted); returns the failed names."""
    from sinks_jax.train.loop import train

    failed = []
    for name, vspec in family_variants(spec).items():
        if only and name not in only:
            continue
        vdir = os.path.join(workdir, name)
        if is_finished(vdir):
            print(f"[sweep] {name}: finished, skipped ({vdir})")
            continue
        print(f"[sweep] {name}: training {vspec} in {vdir}", flush=True)
        try:
            config = load_config(vspec, [*overrides, "--config.train_all_variants=False"])
            summary = train(config, vdir)
        except Exception as e:  # noqa: BLE001 (report and go on with the other variants)
            if cli.debug() or not cli.is_input_error(e):
                traceback.print_exc()
            else:
                print(f"[sweep] {name}: error: {e}", file=sys.stderr)
            failed.append(name)
            continue
        if summary.get("status") != "finished":
            print(f"[sweep] {name}: stopped ({summary.get('status')}); rerun to resume.")
            failed.append(name)
            break  # a preemption signal stops the whole sweep.
    if failed:
        print(f"[sweep] variants not finished: {failed}", file=sys.stderr)
    return failed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sinks-jax sweep", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "config",
        help="config family file, optionally with :ARG (e.g. configs/context_length.py:small)",
    )
    parser.add_argument(
        "--workdir", required=True, help="parent directory; one subdirectory per variant"
    )
    parser.add_argument(
        "--print", action="store_true", help="print one train command per variant and exit"
    )
    parser.add_argument("--only", default="", help="comma-separated variant names to run")
    args, rest = parser.parse_known_args(argv)
    overrides, unknown = split_overrides(rest)
    if unknown:
        parser.error(
            f"unrecognised arguments {unknown}; config overrides look like --config.key=value"
        )
    try:
        if args.print:
            print("\n".join(train_commands(args.config, args.workdir, overrides)))
            return 0
        only = [s for s in args.only.split(",") if s] or None
        return 1 if run_all(args.config, args.workdir, overrides, only) else 0
    except (FileNotFoundError, ValueError) as e:
        print(f"sinks-jax sweep: {e}", file=sys.stderr)
        return 2
