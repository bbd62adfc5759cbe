"""Config files: `get_config(ARG)` of `configs/X.py[:ARG]`, with `--config.key=value`
overrides applied by absl's config flags; every mistake one line (ConfigError).

A relative config path is looked up in the current directory first, then in the repository's
`configs/` folder beside the installed package (`resolve_config_path`).
"""

from __future__ import annotations

import glob
import importlib.util
import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from sinks_jax.train.validate import ConfigError


def _config_from_file(spec: str) -> ml_collections.ConfigDict:
    """`get_config(ARG)` (or `get_config()`) of the file of `path[:ARG]`, imported by path."""
    path, sep, arg = spec.partition(":")
    name = "sinks_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if sep else module.get_config()


def _flag_values(config: ml_collections.ConfigDict, argv: list[str]) -> flags.FlagValues:
    """Fresh flags (so loading can run several times in one process) that apply the
    `--config.key=value` overrides of `argv` to `config`."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_dict(
        "config", config, flag_values=fv, lock_config=True, sys_argv=argv
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


def _root_message(e: BaseException) -> str:
    """The last line of the innermost exception: what a failing config file really said."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _unknown_key(spec: str, overrides: list[str]) -> str | None:
    """The one-line error of the first override naming no key of the config, else None."""
    config = load_config(spec)
    for o in overrides:
        path = o[len("--config.") :].partition("=")[0]
        node = config
        for i, part in enumerate(path.split(".")):
            if not isinstance(node, ml_collections.ConfigDict) or "[" in part:
                break
            try:
                node = node[part]
            except KeyError as e:  # ml_collections adds 'Did you mean "x" instead of "y"?'
                where = ".".join(path.split(".")[:i]) or "the config"
                hint = [ln for ln in str(e.args[0]).splitlines() if ln.startswith("Did you")]
                fix = hint[0] if hint else "train/config_base.py lists every key"
                return f"--config.{path}: {where} has no key {part!r}. {fix}"
    return None


# The repository's configs/ folder, beside the package (an editable or source install; a
# wheel does not carry configs/).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs")


def resolve_config_spec(spec: str) -> str:
    """`path[:arg]` with `path` found: as given (relative to the current directory), else in
    the repository's configs/ folder (`configs/X.py` or `X.py`); unchanged when neither
    exists, so the caller's error names the path the user gave."""
    path, sep, arg = spec.partition(":")
    if os.path.isfile(path) or os.path.isabs(path):
        return spec
    rel = os.path.normpath(path)
    if rel.split(os.sep)[0] == "configs":
        rel = os.path.relpath(rel, "configs")
    found = os.path.join(CONFIGS_DIR, rel)
    return found + sep + arg if os.path.isfile(found) else spec


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """The config of `path[:arg]` with `--config.key=value` overrides applied (absl parsing).

    Raises ConfigError with one line for a missing file, a `get_config` that fails, an
    unknown key (with ml_collections' "did you mean") or a value of the wrong type. A relative
    path is looked up in the current directory, then in the repository's configs/.
    """
    spec = resolve_config_spec(spec)
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        near = sorted(glob.glob(os.path.join(os.path.dirname(path) or ".", "*.py")))
        raise ConfigError(
            f"config file {path!r} does not exist"
            + (f"; files next to it: {', '.join(near)}." if near else "; see configs/*.py.")
        )
    try:
        config = _config_from_file(spec)
    except Exception as e:  # whatever the file or its get_config() raised, in one line.
        raise ConfigError(f"{spec}: {_root_message(e)}") from e
    argv = ["sinks-jax", *overrides]
    try:
        fv = _flag_values(config, argv)
        fv(argv)
        config = fv.config
        config.get("seed")  # a file that failed to load raises its error on first access.
    except (KeyError, AttributeError) as e:
        message = _unknown_key(spec, list(overrides)) if overrides else None
        raise ConfigError(message or f"{spec}: {_root_message(e)}") from e
    except flags.Error as e:  # a value of the wrong type, or get_config() raised.
        message = str(e) if "Error whilst parsing" not in str(e) else _root_message(e)
        raise ConfigError(f"{spec}: {message}") from e
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{spec}: {_root_message(e)}") from e
    return config
