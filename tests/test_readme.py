"""The README's model example runs as written (on CPU) and prints what its comment says."""

import contextlib
import io
import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_model_example_runs_as_written():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## The model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    promised = re.search(r"print\(.*\)\s*#\s*(.*)", code).group(1)
    assert printed.getvalue().strip() == promised.strip()
