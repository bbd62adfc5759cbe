"""Progress of long commands: a tqdm bar on a terminal, a plain line now and then elsewhere.

A tqdm bar redraws itself with carriage returns; written to a file (a batch job's log, a
redirected stderr) that is thousands of updates on one "line". `progress(...)` takes tqdm's
usual arguments and returns a tqdm bar when stderr is a terminal (or in a notebook), and
otherwise a `PlainProgress` that prints one line such as

    train: 120/700 steps [2m05s, 0.96 steps/s] loss=2.113, tok/s=3,912

every `SINKS_JAX_PROGRESS_EVERY` seconds (default 30) and when it closes.

`stage(...)` reports one step of a command that has no count to show (loading, compiling, a
measurement in one compiled call): `with stage("jacobian"):` prints `jacobian ...` at once on
a terminal and completes the line with the time; elsewhere it prints one line,
`jacobian: 12.3 s`, when the step ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

EVERY_ENV = "SINKS_JAX_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0


def every_seconds(every: float | None = None) -> float:
    """Seconds between plain progress lines: `every`, else $SINKS_JAX_PROGRESS_EVERY, else 30."""
    if every is not None:
        return float(every)
    raw = os.environ.get(EVERY_ENV, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_EVERY_S
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"{EVERY_ENV}={raw!r} must be a number of seconds >= 0, e.g. 30.")
    return value


def _interactive(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
    every: float | None = None,
    stream: TextIO | None = None,
    **bar_options: Any,
):
    """A tqdm bar on a terminal, else a `PlainProgress` (same methods: update, set_postfix,
    write, close, iteration, `with`). `bar_options` go to tqdm only (e.g. dynamic_ncols)."""
    stream = sys.stderr if stream is None else stream
    if _interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            desc=desc,
            total=total,
            unit=unit,
            initial=initial,
            disable=disable,
            leave=leave,
            file=stream,
            **bar_options,
        )
    return PlainProgress(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        initial=initial,
        disable=disable,
        leave=leave,
        every=every_seconds(every),
        stream=stream,
    )


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class PlainProgress:
    """Counts like a tqdm bar and prints a whole line at most every `every` seconds."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str = "",
        total: int | None = None,
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        leave: bool = True,
        every: float = DEFAULT_EVERY_S,
        stream: TextIO | None = None,
        clock=time.monotonic,
    ):
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit.strip()
        self.n = self._start_n = self._printed_n = initial
        self.disable, self.leave, self.every = disable, leave, every
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self._t0 = self._last = clock()
        self.postfix = ""
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last >= self.every:
            self._print(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kw) -> None:
        del refresh  # a plain line shows the latest postfix when it is next printed.
        items = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def write(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The progress line, e.g. `train: 120/700 steps [2m05s, 0.96 steps/s] loss=2.113`."""
        elapsed = (self.clock() if now is None else now) - self._t0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        tail = f" {self.postfix}" if self.postfix else ""
        return f"{head}{count} {self.unit} [{_duration(elapsed)}, {rate:.3g} {self.unit}/s]{tail}"

    def _print(self, now: float) -> None:
        if not self.disable:
            self.write(self.line(now))
        self._last, self._printed_n = now, self.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave and self.n != self._printed_n:
            self._print(self.clock())


@contextlib.contextmanager
def stage(desc: str, *, stream: TextIO | None = None, clock=time.monotonic):
    """Report a step of a command with its time: on a terminal `desc ...` when it starts,
    completed by `: 12.3 s` when it ends; elsewhere one line `desc: 12.3 s` when it ends.
    A step that raises prints nothing more (its error says what happened)."""
    stream = sys.stderr if stream is None else stream
    terminal = _interactive(stream)
    if terminal:
        print(f"{desc} ...", end="", file=stream, flush=True)
    start = clock()
    try:
        yield
    except BaseException:
        if terminal:
            print(file=stream, flush=True)
        raise
    # On a terminal the line is rewritten whole: a bar drawn meanwhile (leave=False) may
    # have cleared it.
    line = f"{desc}: {clock() - start:.1f} s"
    print(f"\r{line}\033[K" if terminal else line, file=stream, flush=True)
