"""The shape of the house (ARCHITECTURE.md): no import cycle between modules, no module over
450 lines, and imports that run only the way the map of rooms says.

Imports are read from the source with `ast` (module-level and function-level alike; those
under `if TYPE_CHECKING:` never run and are left out), so nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sinks_jax"
MAX_LINES = 450

# The rooms a room's library modules may import: ARCHITECTURE.md, "Which way imports run".
# A room is a subpackage or a top-level module of sinks_jax. The package itself (`from
# sinks_jax import __version__`) may be imported by any module and imports nothing; every
# room may use UTILITIES, which import nothing of sinks_jax.
UTILITIES = {"progress", "errors"}
ROOMS: dict[str, set[str]] = {
    "progress": set(),
    "errors": set(),
    "cli_args": set(),
    "model": set(),
    "analysis": {"model"},
    "data": set(),
    "records": {"analysis"},
    "plots": {"records"},
    "pretrained": {"data", "model", "streaming"},
    "hf": {"pretrained"},
    "streaming": {"analysis", "data", "model"},
    "html": {"analysis", "records"},
    "train": {"model", "analysis", "data", "pretrained", "records"},
    "configs": {"train", "model"},
    "analyze": {"model", "analysis", "data", "pretrained", "hf", "train", "records", "plots"}
    | {"html"},
    "bench": {"model", "analysis", "data", "pretrained", "train", "streaming"},
    "cli": set(),
}
# Modules that run a command: those `cli.COMMANDS` names, and every `command`, `main` and
# `__main__` module. They sit above the rooms and may import any of them (and `cli_args`);
# no other module imports them, `cli` or `cli_args`.
COMMAND_NAMES = ("command", "main", "__main__")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__) for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _imports(name: str, path: Path, is_package: bool, modules) -> set[str]:
    """The package's modules that `name` imports (an imported name that is no module counts
    as its module)."""

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "sinks_jax"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    here = here.rpartition(".")[0]
                base = f"{here}.{base}" if base else here
            if base.split(".")[0] != "sinks_jax":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else owner(base))
    return out - {name, None}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, *modules[name], modules) for name in modules}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _commands(graph: dict[str, set[str]]) -> set[str]:
    """`cli` and the modules that run a command (see COMMAND_NAMES)."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    named = set()
    for node in ast.walk(tree):
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
            isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets
        ):
            named = {entry.elts[0].value for entry in node.value.values}
    assert named, "cli.py: no COMMANDS table found"
    return {"sinks_jax.cli"} | {
        m for m in graph if m in named or m.rpartition(".")[2] in COMMAND_NAMES
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_module_over_450_lines():
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path, _ in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them, one idea each): {long}"


def test_the_package_itself_imports_nothing():
    # Every import of a module runs sinks_jax/__init__.py first.
    assert _graph()["sinks_jax"] == set()


def test_room_map_runs_one_way():
    seen: set[str] = set()

    def below(room: str, path: tuple[str, ...]) -> None:
        assert room not in path, f"ROOMS loops: {' -> '.join((*path, room))}"
        if room in seen:
            return
        for lower in ROOMS[room]:
            below(lower, (*path, room))
        seen.add(room)

    for room in ROOMS:
        below(room, ())
    assert all(not ROOMS[u] for u in UTILITIES)


def test_imports_run_the_way_of_the_rooms():
    graph = _graph()
    commands = _commands(graph)
    unknown = sorted({_room(m) for m in graph} - set(ROOMS) - {""})
    assert not unknown, (
        f"rooms {unknown} are not on the map: add them to ARCHITECTURE.md ('Which way imports "
        "run') and to ROOMS in tests/test_house.py"
    )
    wrong = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            if target == "sinks_jax.cli":
                wrong.append(f"{module} -> {target} (only the console entry point runs cli)")
            elif module in commands:
                continue  # a command may use any room
            elif target in commands or target == "sinks_jax.cli_args":
                wrong.append(f"{module} -> {target} (a library module imports a command's code)")
            elif target == "sinks_jax" or _room(target) in {_room(module), *UTILITIES}:
                continue
            elif _room(target) not in ROOMS.get(_room(module), set()):
                wrong.append(f"{module} -> {target} ({_room(module)} may not import "
                             f"{_room(target)})")  # fmt: skip
    assert not wrong, "imports against the map of rooms:\n  " + "\n  ".join(wrong)


def test_the_checks_see_what_they_guard():
    """The graph reader finds function-level and relative imports and skips TYPE_CHECKING."""
    graph = _graph()
    assert "sinks_jax.model.attention" in graph["sinks_jax.model.transformer"]
    assert "sinks_jax.train.loop" in graph["sinks_jax.train.main"]  # imported inside main()
    assert "sinks_jax.data.loader" not in graph["sinks_jax.data.rows"]  # TYPE_CHECKING only
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert {"sinks_jax.cli", "sinks_jax.train.sweep", "sinks_jax.analyze.command"} <= _commands(
        graph
    )
