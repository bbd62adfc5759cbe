"""The README and docs/ teach what runs: every code block marked `<!-- cpu-test -->` runs as
written on CPU (python blocks in-process, printing what their `# comment` says; bash blocks in
a fresh directory with this environment's `sinks-jax`, printing every line of the ```text block
that follows them, but for `...` and timings), every relative link and anchor resolves, and
the README's test set-up command is the one CI runs.

Marks: `<!-- cpu-test -->` (default suite), `<!-- cpu-test: slow -->` (second CI stage),
`<!-- cpu-test: real_models -->` (needs SINKS_JAX_MODELS=DIR holding `sinks-jax models fetch`
output; the block sees it as `models/`)."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
MARKS = {"": (), "slow": (pytest.mark.slow,), "real_models": (pytest.mark.real_models,)}
_BLOCK = re.compile(
    r"^<!-- cpu-test(?::\s*(?P<mark>\w+))?\s*-->\n```(?P<lang>\w+)[^\n]*\n(?P<code>.*?)^```\n"
    r"(?:\n```text\n(?P<output>.*?)^```)?",
    re.M | re.S,
)
_TIMING = re.compile(r"\d+(\.\d+)? ?s\)|\d+m\d+s|: \d+(\.\d+)? s$|\d tok/s")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def marked_blocks() -> list:
    """pytest params `(page, lang, code, output or None)`, one per marked block, with the
    block's marks."""
    params = []
    for page in PAGES:
        text = _read(page)
        for m in _BLOCK.finditer(text):
            mark = m.group("mark") or ""
            if mark not in MARKS:
                raise ValueError(f"{page}: unknown cpu-test mark {mark!r}; use one of {list(MARKS)}")
            line = text[: m.start()].count("\n") + 2
            name = f"{os.path.relpath(page, ROOT)}:{line}"
            params.append(pytest.param(page, m.group("lang"), m.group("code"), m.group("output"),
                                       id=name, marks=MARKS[mark]))  # fmt: skip
    return params


BLOCKS = marked_blocks()


def test_the_readme_has_runnable_examples():
    readme = [p for p in BLOCKS if p.values[0] == README]
    assert {p.values[1] for p in readme} >= {"python", "bash"}


def _run_python(code: str, where: str) -> None:
    """Exec the block; each `print(...)  # text` must print `text` (one line per such print)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, where, "exec"), {"__name__": "__readme__"})
    promised = [c.strip() for c in re.findall(r"^\s*print\(.*\)\s*#\s*(.*)$", code, re.M)]
    assert promised, f"{where}: a python block promises its output in `print(...)  # output`"
    assert printed.getvalue().strip().splitlines() == promised


def _run_bash(code: str, where: str, cwd: str) -> str:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert out.returncode == 0, f"{where}:\n{code}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.parametrize("page,lang,code,output", BLOCKS)
def test_marked_block_runs_as_written(page, lang, code, output, tmp_path, monkeypatch):
    where = os.path.relpath(page, ROOT)
    if "models/" in code:
        models = os.environ.get("SINKS_JAX_MODELS")
        if not models:
            pytest.skip("set SINKS_JAX_MODELS=DIR (sinks-jax models fetch ... --dir DIR)")
        os.symlink(os.path.abspath(models), tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    if lang == "python":
        _run_python(code, where)
    elif lang in ("bash", "sh", "console"):
        printed = {line.rstrip() for line in _run_bash(code, where, str(tmp_path)).splitlines()}
        shown = [line.rstrip() for line in (output or "").splitlines()]
        missing = [line for line in shown
                   if line and line != "..." and not _TIMING.search(line) and line not in printed]
        assert not missing, f"{where}: the page shows output the command did not print: {missing}"
    else:
        raise ValueError(f"{where}: cannot run a {lang!r} block; mark python or bash blocks only")


# ------------------------------------------------------------------------------ links

def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#+\s+(.*)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", _read(page), flags=re.M | re.S)  # links, not code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(full):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such file)")
            elif anchor and full.endswith(".md") and anchor not in _anchors(_read(full)):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [README]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for target in re.findall(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)", _read(page)):
            todo.append(os.path.normpath(os.path.join(os.path.dirname(page), target)))
    unreachable = [os.path.relpath(p, ROOT) for p in PAGES if p not in seen]
    assert not unreachable, f"docs pages no link leads to: {unreachable}"


# ------------------------------------------------------------------------------ set-up

def test_readme_setup_commands_are_what_ci_runs():
    """The two set-up commands: one installs and runs the quickstart offline; the other installs
    the test extra and runs the suite exactly as .ci/run's first stage does."""
    setup = _read(README).split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2, commands
    quickstart, tests = commands
    assert quickstart.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . ")
    assert "sinks-jax train --config quickstart --workdir runs/quickstart" in quickstart
    assert tests == ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" '
                     "&& python -m pytest -q tests")  # fmt: skip
    ci = _read(os.path.join(ROOT, ".ci", "run"))
    assert "python3 -m venv .venv" in ci and '. .venv/bin/activate' in ci
    assert 'pip install -q -e ".[test]"' in ci
    assert re.search(r"python -m pytest -q (-p no:cacheprovider )?tests", ci)
