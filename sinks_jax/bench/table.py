"""The aligned text table each benchmark prints while it runs."""

from __future__ import annotations

from collections.abc import Sequence


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool) and v > 10**6:
        return f"{v / 2**30:.2f}GiB"
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    return str(v)


COLUMN_WIDTHS = {"case": 27, "collect": 23}  # columns whose values are wider than 10.


class Table:
    """Prints records as an aligned text table: the header before the first row, then one
    row as each record arrives (long benchmarks show progress). The last column is not
    padded (it holds the error message, if any)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self.widths = [max(len(k), COLUMN_WIDTHS.get(k, 10)) for k in self.keys]
        self.started = False

    def line(self, cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], self.widths)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    def row(self, rec: dict) -> None:
        if not self.started:
            print(self.line(self.keys))
            print(self.line(["-" * w for w in self.widths]))
            self.started = True
        print(self.line([_fmt(rec.get(k)) for k in self.keys]), flush=True)
