"""Loader: determinism, exact resume, host sharding, prepared shards."""

import json
import logging
import os

import numpy as np
import pytest

from sinks_jax.data import document_tokens, get_source, pack_documents
from sinks_jax.data.command import prepare_main
from sinks_jax.data.loader import LoaderSpec, make_loader
from sinks_jax.data.prepare import prepare_split
from sinks_jax.data.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "sink", "token", "row", "the", "of"]
    folder = tmp_path_factory.mktemp("corpus")
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 60))) for _ in range(80)]
    with open(folder / "docs.jsonl", "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return f"text:{folder}/docs.jsonl", texts


def _kw(**over):
    kw = dict(tokenizer="byte", seq_len=32, batch_size=8, packing="concat_bos", intra_doc=True,
              reset_positions=True, seed=3, split="all", process_index=0, process_count=1,
              progress=False)
    kw.update(over)
    return kw


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _equal(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


@pytest.mark.parametrize("source", ["text", "synthetic"])
def test_determinism_and_resume(corpus, source):
    spec = corpus[0] if source == "text" else "synthetic:bigram_backcopy?max_len=64"
    ref = _take(make_loader(spec, **_kw()), 100)
    assert _equal(ref, _take(make_loader(spec, **_kw()), 100))
    assert not _equal(ref[:5], _take(make_loader(spec, **_kw(seed=4)), 5))
    first = make_loader(spec, **_kw())
    _take(first, 50)
    state = json.loads(json.dumps(first.get_state()))  # survives a checkpoint as JSON
    resumed = make_loader(spec, **_kw())
    resumed.set_state(state)
    assert _equal(ref[50:], _take(resumed, 50))
    for batch in ref[:3]:
        assert set(batch) == {"tokens", "targets", "segment_ids", "positions", "loss_mask"}
        assert all(v.dtype == np.int32 and v.shape == (8, 32) for v in batch.values())


def test_text_resume_crosses_epochs(corpus):
    loader = make_loader(corpus[0], **_kw())
    assert loader.batches_per_epoch < 100  # the resume test above spans several epochs
    _take(loader, 100)
    assert loader.get_state()["epoch"] >= 1


@pytest.mark.parametrize("source", ["text", "synthetic"])
def test_four_hosts_disjoint_and_covering(corpus, source):
    spec = corpus[0] if source == "text" else "synthetic:zipf_markov?max_len=64"
    extra = {"num_epochs": 1} if source == "text" else {}
    single = make_loader(spec, **_kw(**extra))
    hosts = [make_loader(spec, **_kw(process_index=p, process_count=4, **extra)) for p in range(4)]
    steps = len(single) if source == "text" else 20
    for _ in range(steps):
        want = next(single)
        got = [next(h) for h in hosts]
        assert all(g["tokens"].shape == (2, 32) for g in got)
        for k in want:
            np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), want[k])
    if source == "text":
        for h in hosts:
            with pytest.raises(StopIteration):
                next(h)


def test_one_pass_covers_every_row_once(corpus):
    spec, texts = corpus
    tok = ByteTokenizer()
    rows = pack_documents([tok.encode(t) for t in texts], seq_len=32, mode="concat_bos",
                          intra_doc=True, reset_positions=True, bos_id=tok.bos_id,
                          eos_id=tok.eos_id, pad_id=tok.pad_id)
    want = sorted(map(tuple, rows["tokens"].tolist()))
    got = []
    for p in range(4):
        for batch in make_loader(spec, **_kw(num_epochs=1, process_index=p, process_count=4)):
            real = batch["segment_ids"].sum(axis=1) > 0
            got += list(map(tuple, batch["tokens"][real].tolist()))
    assert sorted(got) == want


def test_valid_split_is_held_out(corpus):
    spec = corpus[0] + "?holdout=0.25"
    seen = {}
    for split in ("train", "valid"):
        loader = make_loader(spec, **_kw(split=split, num_epochs=1, packing="none", seq_len=512))
        seen[split] = {tuple(r[r != 258]) for b in loader for r in b["tokens"] if r[0] != 258}
    assert seen["train"] and seen["valid"] and not seen["train"] & seen["valid"]


def _write_jsonl(path, texts):
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


def test_valid_files_are_held_out_through_prepare(tmp_path, caplog):
    train = [f"train doc {i} " * (i + 1) for i in range(12)]
    valid = [f"held out {i} " * (i + 2) for i in range(5)]
    _write_jsonl(tmp_path / "shard-000.jsonl", train[:7])
    _write_jsonl(tmp_path / "shard-001.jsonl", train[7:])
    _write_jsonl(tmp_path / "valid-000.jsonl", valid)
    spec = f"text:{tmp_path}/*.jsonl?valid={tmp_path}/valid-*.jsonl"
    src = get_source(spec)
    assert list(src.documents("train")) == train and list(src.documents("valid")) == valid
    assert sorted(src.documents("all")) == sorted(train + valid)
    # Without valid=, the file is split by document hash like the others, with a warning.
    with caplog.at_level(logging.WARNING):
        hashed = get_source(f"text:{tmp_path}/*.jsonl")
    assert "pass ?valid=GLOB" in caplog.text
    assert sorted(hashed.documents("all")) == sorted(train + valid)
    with pytest.raises(ValueError, match="not both"):
        get_source(spec + "&holdout=0.1")
    with pytest.raises(FileNotFoundError, match="nothing is left to train on"):
        get_source(f"text:{tmp_path}/valid-*.jsonl?valid={tmp_path}/*.jsonl")
    # prepare keeps the split: the prepared valid split is exactly the held-out file.
    out = str(tmp_path / "prep")
    assert prepare_main(["--source", spec, "--out", out, "--seq-len", "16"]) == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["splits"]["valid"]["files"] == [f"{tmp_path}/valid-000.jsonl"]
    assert len(manifest["splits"]["train"]["files"]) == 2
    assert [manifest["splits"][s]["documents"] for s in ("train", "valid")] == [12, 5]
    rows = make_loader(f"prepared:{out}", **_kw(split="valid", packing="none", seq_len=128,
                                                intra_doc=False, reset_positions=False))
    got = [bytes(r[1:][r[1:] < 256].astype(np.uint8)).decode() for b in rows for r in b["tokens"]
           if r[0] == 256]
    assert got == valid


def test_prepare_roundtrip_and_resume(corpus, tmp_path):
    spec = corpus[0]
    out = str(tmp_path / "prep")
    assert prepare_main(["--source", spec, "--out", out, "--splits", "all",
                         "--shard-tokens", "2000", "--seq-len", "32"]) == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    entry = manifest["splits"]["all"]
    assert manifest["tokenizer"] == "byte" and entry["documents"] == 80
    assert len(entry["shards"]) > 2
    a = _take(make_loader(f"prepared:{out}", **_kw()), 10)
    b = _take(make_loader(spec, **_kw()), 10)
    assert _equal(a, b)
    # Interrupt: forget the last two shards, then run again.
    progress_path = os.path.join(out, "all", "progress.json")
    progress = json.load(open(progress_path))
    full = [np.load(os.path.join(out, s["tokens"])) for s in progress["shards"]]
    for s in progress["shards"][-2:]:
        os.remove(os.path.join(out, s["tokens"]))
        progress["documents"] -= s["num_documents"]
        progress["tokens"] -= s["num_tokens"]
    progress["shards"] = progress["shards"][:-2]
    progress["complete"] = False
    json.dump(progress, open(progress_path, "w"))
    again = prepare_split(spec, ByteTokenizer(), "all", out, shard_tokens=2000)
    assert again["documents"] == 80
    resumed = [np.load(os.path.join(out, s["tokens"])) for s in again["shards"]]
    assert len(resumed) == len(full) and all(np.array_equal(x, y) for x, y in zip(full, resumed))


def test_loader_bad_inputs(corpus, tmp_path):
    with pytest.raises(ValueError, match="not divisible by process_count"):
        make_loader(corpus[0], **_kw(batch_size=6, process_count=4))
    with pytest.raises(ValueError, match="packing mode"):
        make_loader(corpus[0], **_kw(packing="packed"))
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        make_loader(f"prepared:{tmp_path}", **_kw())
    with pytest.raises(ValueError, match="split 'test'"):
        make_loader(corpus[0], **_kw(split="test"))


def test_loader_spec_is_the_loaders_options(corpus):
    """One LoaderSpec names what make_loader's keyword form names: the same batches; a
    changed field passed by name replaces the spec's; a bad option fails at construction."""
    runtime = {"process_index": 0, "process_count": 1, "progress": False}
    fields = {k: v for k, v in _kw().items() if k not in runtime}
    spec = LoaderSpec(corpus[0], **fields)
    assert _equal(_take(make_loader(spec, **runtime), 5), _take(make_loader(corpus[0], **_kw()), 5))
    reseeded = _take(make_loader(spec, seed=4, **runtime), 5)
    assert _equal(reseeded, _take(make_loader(corpus[0], **_kw(seed=4)), 5))
    valid = LoaderSpec(corpus[0], split="valid")
    assert (valid.shuffled, valid.epochs, spec.shuffled, spec.epochs) == (False, 1, True, None)
    with pytest.raises(ValueError, match="packing mode"):
        LoaderSpec(corpus[0], packing="packed")
    with pytest.raises(TypeError, match="by name"):
        make_loader(spec, "byte")


def test_document_tokens_of_a_prepared_corpus_are_its_documents(corpus, tmp_path):
    spec = corpus[0] + "?holdout=0.25"
    out = str(tmp_path / "prep")
    assert prepare_main(["--source", spec, "--out", out, "--shard-tokens", "500"]) == 0
    tok = ByteTokenizer()
    for split in ("train", "valid"):  # prepared: read as stored == the text source encoded
        want = [list(doc.encode("utf-8")) for doc in get_source(spec).documents(split)]
        got = [ids.tolist() for ids in document_tokens(f"prepared:{out}", tok, split)]
        assert got == want and len(got) > 0
    assert [ids.tolist() for ids in document_tokens(spec, "byte", "valid")] == want
    with pytest.raises(ValueError, match="--splits train,valid"):
        next(document_tokens(f"prepared:{out}", tok, "all"))
