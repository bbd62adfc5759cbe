"""`sinks-jax sweep CONFIG[:ARG] --workdir DIR [--print] [--only A,B] [--config.key=value ...]`.

Runs every variant of a config family (the config file's `variants(arg)`: name -> argument)
into DIR/<name>, one after the other in this process: finished variants (DIR/<name>/
summary.json with status "finished") are skipped, interrupted ones resume from their newest
checkpoint. `--print` instead prints one `sinks-jax train` command per variant, to hand to
a cluster scheduler (see launch/).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import signal
import sys
import traceback

from sinks_jax import cli_args
from sinks_jax.errors import debug, is_input_error
from sinks_jax.train.config_file import (
    load_config,
    resolve_config_spec,
    split_overrides,
    with_config_arg,
)


def split_spec(spec: str) -> tuple[str, str | None]:
    """`path[:arg]` -> (path, arg or None)."""
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def family_variants(spec: str) -> dict[str, str]:
    """Variant name -> full config spec `path:arg` (the path as `spec` spells it), from the
    file's `variants(arg)`; `spec` is a file, `PACKAGE:DIR/X.py` or a built-in config's name."""
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
    return {name: with_config_arg(spec, varg) for name, varg in module.variants(arg).items()}


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


@dataclasses.dataclass
class SweepOutcome:
    """Where each variant of a sweep stands after `run_all`."""

    finished: list[str] = dataclasses.field(default_factory=list)  # now or before
    failed: list[str] = dataclasses.field(default_factory=list)  # raised an error
    interrupted: dict[str, int | None] = dataclasses.field(default_factory=dict)  # -> ckpt step
    not_started: list[str] = dataclasses.field(default_factory=list)
    signal: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the sweep

    @property
    def exit_code(self) -> int:
        """128 + the signal's number when a signal stopped the sweep, 1 when a variant failed."""
        if self.signal:
            return 128 + int(signal.Signals[self.signal])
        return 1 if self.failed else 0

    def lines(self, resume: str) -> list[str]:
        """What a stopped sweep tells its user: each variant's state and the resuming command."""
        if self.signal:
            out = [f"[sweep] stopped by {'Ctrl-C' if self.signal == 'SIGINT' else self.signal}:"]
        else:
            out = ["[sweep] not every variant finished:"]
        if self.finished:
            out.append(f"  finished:     {', '.join(self.finished)}")
        if self.failed:
            out.append(f"  failed:       {', '.join(self.failed)}")
        for name, step in self.interrupted.items():
            at = "before its first checkpoint" if step is None else f"checkpoint at step {step}"
            out.append(f"  interrupted:  {name} ({at})")
        if self.not_started:
            out.append(f"  not started:  {', '.join(self.not_started)}")
        out.append(f"resume with: {resume}")
        return out


def checkpoint_step(workdir: str) -> int | None:
    """The newest saved checkpoint step of a training workdir, or None (no jax import)."""
    directory = os.path.join(workdir, "checkpoints")  # train.checkpoint.CHECKPOINT_DIR
    if not os.path.isdir(directory):
        return None
    return max((int(d) for d in os.listdir(directory) if d.isdigit()), default=None)


def select_variants(spec: str, only: list[str] | None = None) -> dict[str, str]:
    """The family's variants (name -> config spec), restricted to `only` when given."""
    variants = family_variants(spec)
    unknown = [n for n in only or [] if n not in variants]
    if unknown:
        raise ValueError(
            f"--only {','.join(unknown)}: no such variant of {spec}; choose from "
            f"{', '.join(variants)}."
        )
    return {n: v for n, v in variants.items() if not only or n in only}


def run_all(
    spec: str, workdir: str, overrides: list[str], only: list[str] | None = None
) -> SweepOutcome:
    """Train every variant in turn (skip finished, resume interrupted). A signal (Ctrl-C,
    SIGTERM) stops the sweep after the running variant has saved its checkpoint; an error
    in one variant is reported and the others still run."""
    from sinks_jax.train.loop import train
    from sinks_jax.train.stop import StopRequest

    variants = select_variants(spec, only)
    outcome = SweepOutcome()
    names = list(variants)
    done = 0  # variants looked at
    try:
        for name, vspec in variants.items():
            vdir = os.path.join(workdir, name)
            if is_finished(vdir):
                print(f"[sweep] {name}: finished, skipped ({vdir})")
                outcome.finished.append(name)
                done += 1
                continue
            print(f"[sweep] {name}: training {vspec} in {vdir}", flush=True)
            StopRequest.last_signal = None
            try:
                config = load_config(vspec, [*overrides, "--config.train_all_variants=False"])
                summary = train(config, vdir)
            except Exception as e:  # noqa: BLE001 (report and go on with the other variants)
                if debug() or not is_input_error(e):
                    traceback.print_exc()
                else:
                    print(f"[sweep] {name}: error: {e}", file=sys.stderr)
                outcome.failed.append(name)
                done += 1
                continue
            done += 1
            if summary.get("status") != "finished":  # a signal stopped it (checkpoint saved).
                outcome.interrupted[name] = summary.get("step")
                outcome.signal = summary.get("signal") or "SIGTERM"
                break
            outcome.finished.append(name)
            if StopRequest.last_signal:  # Ctrl-C during its final evaluation: stop here.
                outcome.signal = StopRequest.last_signal
                break
    except KeyboardInterrupt:  # Ctrl-C outside the training steps (setup, restore, compile).
        outcome.signal = "SIGINT"
        if done < len(names):
            name = names[done]
            outcome.interrupted[name] = checkpoint_step(os.path.join(workdir, name))
            done += 1
    for name in names[done:]:  # never reached in this process
        vdir = os.path.join(workdir, name)
        if is_finished(vdir):
            outcome.finished.append(name)
        elif checkpoint_step(vdir) is not None:  # from an earlier, interrupted sweep
            outcome.interrupted[name] = checkpoint_step(vdir)
        else:
            outcome.not_started.append(name)
    return outcome


def report_outcome(outcome: SweepOutcome, resume: str) -> None:
    """Print, to stderr, where a sweep that did not finish every variant stands."""
    if outcome.signal or outcome.failed:
        print("\n".join(outcome.lines(resume)), file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = cli_args.ArgumentParser(
        prog="sinks-jax sweep", description=__doc__.split("\n\n")[1]
    )
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
        outcome = run_all(args.config, args.workdir, overrides, only)
    except (FileNotFoundError, ValueError) as e:
        print(f"sinks-jax sweep: error: {e}", file=sys.stderr)
        return 2
    report_outcome(outcome, shlex.join(["sinks-jax", "sweep", *argv]))
    return outcome.exit_code
