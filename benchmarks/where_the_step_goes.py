"""Where a training step's device time goes, by kernel kind, from the traces `sinks-jax bench
train --profile` wrote (copied beside the records as trace_<variant>.json.gz; two steps each).

    python benchmarks/where_the_step_goes.py benchmarks/results/h200_2026-12-06
"""

from __future__ import annotations

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sinks_jax.bench.profile import KINDS, device_ops  # noqa: E402


def main(folder: str) -> None:
    rows = {}
    for path in sorted(glob.glob(os.path.join(folder, "trace_*.json.gz"))):
        name = os.path.basename(path)[len("trace_") : -len(".json.gz")]
        rows[name] = device_ops(path, steps=2)
    kinds = [*KINDS, "other"]
    base = rows.get("softmax")
    print("| variant | device ms per step | " + " | ".join(kinds) + " |")
    print("|---|---:|" + "---:|" * len(kinds))
    for name, ops in sorted(rows.items(), key=lambda kv: kv[1]["device_ms_per_step"]):
        cells = []
        for kind in kinds:
            ms = ops["by_kind"].get(kind, {}).get("ms_per_step", 0.0)
            delta = ""
            if base is not None and name != "softmax":
                delta = f" ({ms - base['by_kind'].get(kind, {}).get('ms_per_step', 0.0):+.1f})"
            cells.append(f"{ms:.1f}{delta}")
        print(f"| {name} | {ops['device_ms_per_step']:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/h200_2026-12-06")
