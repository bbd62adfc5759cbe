"""Safetensors checkpoint folders read through memory maps, without torch (every dtype,
bfloat16 included, via ml_dtypes)."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_dtypes
import numpy as np

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class SafetensorsFolder:
    """Lazy, read-only view of the tensors of a checkpoint folder (memory-mapped, no torch).

    `names` lists every tensor; `get(name)` returns it as a numpy array in its stored dtype.
    """

    def __init__(self, path: str):
        index_path = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index_path):
            with open(index_path) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(
                f"no *.safetensors files in {path!r}; convert the checkpoint with "
                "save_pretrained(..., safe_serialization=True)."
            )
        self._where: dict[str, tuple[str, dict[str, Any], int]] = {}
        self._maps: dict[str, np.memmap] = {}
        for name in files:
            file = os.path.join(path, name)
            with open(file, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            for tensor, info in header.items():
                self._where[tensor] = (file, info, 8 + n)

    @property
    def names(self) -> list[str]:
        return sorted(self._where)

    def get(self, name: str) -> np.ndarray:
        file, info, base = self._where[name]
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: safetensors dtype {info['dtype']} is not supported.")
        if file not in self._maps:
            self._maps[file] = np.memmap(file, dtype=np.uint8, mode="r")
        start, end = info["data_offsets"]
        raw = self._maps[file][base + start : base + end]
        return raw.view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
