"""Config files: `get_config(ARG)` of `X.py[:ARG]`, with `--config.key=value` overrides
applied by absl's config flags; every mistake one line (ConfigError).

A config is a file path, `PACKAGE:DIR/X.py` (a file inside an installed package) or the name
of a built-in config (`quickstart`: `sinks_jax/configs/quickstart.py`, package data, so a
wheel carries it); a relative `configs/X.py` that the current directory lacks is the built-in
`X.py` (`resolve_config_spec`).
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


# The built-in configs, package data (`sinks_jax/configs/*.py`): in a wheel as in a clone.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def builtin_configs() -> list[str]:
    """Names of the built-in configs (`quickstart`, ...), for `--config NAME[:ARG]`."""
    return sorted(
        os.path.splitext(f)[0]
        for f in os.listdir(CONFIGS_DIR)
        if f.endswith(".py") and not f.startswith("_")
    )


def _package_form(spec: str) -> tuple[str, str, str] | None:
    """(package, path inside it, ':arg' or '') of `PACKAGE:DIR/X.py[:ARG]`, else None."""
    head, sep, tail = spec.partition(":")
    path, sep2, arg = tail.partition(":")
    if sep and all(p.isidentifier() for p in head.split(".")) and path.endswith(".py"):
        return head, path, sep2 + arg
    return None


def _package_dir(package: str, spec: str) -> str:
    """The folder of an installed package (its first search location)."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            f"config {spec!r}: no installed package {package!r}; use PACKAGE:DIR/X.py with an "
            f"importable package (e.g. sinks_jax:configs/quickstart.py) or a file path."
        )
    return list(found.submodule_search_locations)[0]


def resolve_config_spec(spec: str) -> str:
    """`path[:arg]` with `path` an existing file where one is found, else unchanged (so the
    caller's error names the path the user gave). Accepted forms, in this order:

    - a file path (absolute, or relative to the current directory), `[:arg]` after it;
    - `PACKAGE:DIR/X.py[:arg]`, a file inside an installed package
      (`sinks_jax:configs/quickstart.py`);
    - a built-in config by name, `NAME[:arg]` (`quickstart:128`);
    - a relative `configs/X.py[:arg]` or `X.py[:arg]` that the current directory lacks: the
      built-in config of that file name (the paths of the repository's former configs/).
    """
    package = _package_form(spec)
    if package is not None and not os.path.isfile(spec.partition(":")[0]):
        name, inner, arg = package
        return os.path.join(_package_dir(name, spec), os.path.normpath(inner)) + arg
    path, sep, arg = spec.partition(":")
    if os.path.isfile(path) or os.path.isabs(path) or not path:
        return spec
    rel = os.path.normpath(path)
    if rel.split(os.sep)[0] == "configs":
        rel = os.path.relpath(rel, "configs")
    if os.sep not in rel and not rel.endswith(".py") and rel.isidentifier():
        rel += ".py"  # a built-in config by name
    found = os.path.join(CONFIGS_DIR, rel)
    return found + sep + arg if os.path.isfile(found) else spec


def with_config_arg(spec: str, arg: str) -> str:
    """`spec` as the user spelled it, with its `:ARG` replaced by `arg` (a sweep's variant)."""
    package = _package_form(spec)
    if package is not None and not os.path.isfile(spec.partition(":")[0]):
        return f"{package[0]}:{package[1]}:{arg}"
    return f"{spec.partition(':')[0]}:{arg}"


def _missing_file_message(path: str) -> str:
    by_name = os.sep not in path and not path.endswith(".py")  # meant a built-in config
    near = [] if by_name else sorted(glob.glob(os.path.join(os.path.dirname(path) or ".", "*.py")))
    near = [p for p in near if not os.path.basename(p).startswith("_")]
    if near:
        return f"config file {path!r} does not exist; files next to it: {', '.join(near)}."
    return (
        f"config file {path!r} does not exist; files built in (--config NAME[:ARG]): "
        f"{', '.join(builtin_configs())}."
    )


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """The config of `path[:arg]` with `--config.key=value` overrides applied (absl parsing).

    Raises ConfigError with one line for a missing file, a `get_config` that fails, an
    unknown key (with ml_collections' "did you mean") or a value of the wrong type. `spec` is
    a file path, `PACKAGE:DIR/X.py` or a built-in config's name (`resolve_config_spec`).
    """
    spec = resolve_config_spec(spec)
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        raise ConfigError(_missing_file_message(path))
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
