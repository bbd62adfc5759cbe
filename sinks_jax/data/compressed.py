"""Opening a text file whatever its compression (.gz, .xz, .bz2 or none), by its suffix."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma


def open_binary(path: str) -> io.BufferedIOBase:
    """A file opened for reading bytes, decompressed by its suffix (.gz, .xz, .bz2)."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")
