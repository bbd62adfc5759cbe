"""Stopping a run cleanly: SIGTERM or a first Ctrl-C ends it after the current step."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopRequest:
    """While active, SIGTERM and Ctrl-C (SIGINT) ask the loop to stop after the current step
    (`self.signal` names the first one). After a first Ctrl-C, SIGINT gets its default
    action back, so a second Ctrl-C kills the process at once, without saving."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    # The newest signal any StopRequest received (signals are process-wide): a caller that
    # runs several trainings (a sweep) clears it and reads it after each, since a Ctrl-C
    # during a run's final evaluation lets that run finish.
    last_signal: str | None = None

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # only it may set handlers.
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal = self.signal or signal.Signals(signum).name
        StopRequest.last_signal = self.signal
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            print(
                "\nCtrl-C: saving a checkpoint after this step, then stopping "
                "(Ctrl-C again aborts without saving).",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
