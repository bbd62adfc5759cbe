"""metrics.jsonl and TensorBoard: one record per logged step, each step once across resumes."""

from __future__ import annotations

import json
import math
import os
from typing import Any

METRICS_FILE = "metrics.jsonl"


def keep_metrics_through(path: str, step: int) -> int:
    """Drop the rows of metrics.jsonl logged after `step` (and any torn last line); returns
    how many rows were dropped. A run stopped after its last checkpoint logged them, and the
    resumed run logs those steps again."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl and mirrors scalars to TensorBoard.

    `after_step` is the step the run resumes from: rows above it are dropped first, and
    TensorBoard is told to purge its events above it too.
    """

    def __init__(self, workdir: str, enabled: bool, after_step: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, METRICS_FILE)
        keep_metrics_through(path, after_step)
        self.file = open(path, "a")  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=after_step + 1)
        except ImportError:  # TensorBoard output is optional.
            self.tb = None

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **record}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
