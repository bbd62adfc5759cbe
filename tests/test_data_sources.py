"""Sources and tokenizers: formats, bad input, synthetic rules, SentencePiece, HF, TFDS offline."""

import gzip
import json
import logging
import lzma

import numpy as np
import pytest

from sinks_jax.data.command import tokenizer_main
from sinks_jax.data.loader import make_loader
from sinks_jax.data.sources import get_source
from sinks_jax.data.tokenizers import get_tokenizer


def test_text_formats(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "first doc"}) + "\n" + json.dumps({"body": "other"}) + "\n")
    with lzma.open(tmp_path / "b.jsonl.xz", "wt") as f:
        f.write(json.dumps({"text": "second doc"}) + "\n")
    (tmp_path / "c.txt").write_text("para one\nline two\n\npara two\n")
    docs = list(get_source(f"text:{tmp_path}/*").documents("all"))
    assert docs == ["first doc", "second doc", "para one\nline two\n\npara two\n"]
    blank = list(get_source(f"text:{tmp_path}/*.txt?docs=blank").documents("all"))
    assert blank == ["para one\nline two\n", "para two\n"]
    body = get_source(f"text:{tmp_path}/a.jsonl.gz?field=body")
    assert list(body.documents("all")) == ["other"] and body.skipped["bad_json_lines"] == 1


def test_non_utf8_lines_skipped_and_counted(tmp_path, caplog):
    good = json.dumps({"text": "ok"}).encode() + b"\n"
    (tmp_path / "d.jsonl").write_bytes(good + b'{"text": "\xff\xfe bad"}\n' + good + b"\xc3\n")
    src = get_source(f"text:{tmp_path}/d.jsonl")
    with caplog.at_level(logging.WARNING):
        docs = list(src.documents("all"))
    assert docs == ["ok", "ok"] and src.skipped["non_utf8_lines"] == 2
    assert "skipped 2 non-UTF-8 line(s)" in caplog.text


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'hdf5:x'"):
        get_source("hdf5:x")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        get_source(f"text:{tmp_path}/missing*.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="has no documents"):
        list(get_source(f"text:{tmp_path}/empty.jsonl").documents("all"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="use .jsonl or .txt"):
        get_source(f"text:{tmp_path}/x.csv")
    with pytest.raises(ValueError, match="unknown text source option"):
        get_source(f"text:{tmp_path}/empty.jsonl?feild=x")
    with pytest.raises(ValueError, match="synthetic source 'nope'"):
        get_source("synthetic:nope")


def test_synthetic_bigram_backcopy_rules():
    src = get_source("synthetic:bigram_backcopy?vocab=32")
    docs = src.block("train", 0, 0)
    assert docs == get_source("synthetic:bigram_backcopy?vocab=32").block("train", 0, 0)
    assert docs != src.block("train", 1, 0) and docs != src.block("valid", 0, 0)
    lengths = [len(d) for d in docs]
    assert min(lengths) >= 16 and max(lengths) <= 512 and np.std(lengths) > 20
    triggers = {chr(33 + i) for i in range(28, 32)}  # the last 4 symbols
    copies = 0
    for d in docs:
        for t in range(2, len(d)):
            if d[t - 1] in triggers:
                assert d[t] == d[t - 2]
                copies += 1
        assert d[0] not in triggers
    assert copies > 50


def test_byte_tokenizer_and_special_validation(tmp_path):
    tok = get_tokenizer("byte")
    assert tok.encode("hé") == [104, 195, 169] and tok.decode([104, 195, 169, 257]) == "hé"
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (259, 256, 257, 258)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer("gpt:foo")
    with pytest.raises(FileNotFoundError, match="tokenizer train"):
        get_tokenizer(f"sp:{tmp_path}/none.model")


def test_sentencepiece_training_cli(tmp_path):
    rng = np.random.default_rng(0)
    words = ["attention", "sink", "token", "model", "layer", "head", "the", "of", "first", "value"]
    with open(tmp_path / "c.jsonl", "w") as f:
        for _ in range(300):
            f.write(json.dumps({"text": " ".join(rng.choice(words, 40))}) + "\n")
    out = str(tmp_path / "sp" / "tok.model")
    assert tokenizer_main(["train", "--source", f"text:{tmp_path}/c.jsonl", "--vocab-size", "300",
                           "--out", out]) == 0
    tok = get_tokenizer(f"sp:{out}")
    assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (300, 0, 2, 3)
    ids = tok.encode("the attention sink of the first token")
    assert len(ids) < 30 and tok.decode(ids) == "the attention sink of the first token"
    with pytest.raises(ValueError, match="bos_id=999"):
        get_tokenizer(f"sp:{out}?bos=999")
    batch = next(make_loader(f"text:{tmp_path}/c.jsonl", f"sp:{out}", seq_len=16, batch_size=2,
                             packing="fixed_bos", split="all", process_index=0, process_count=1))
    assert (batch["tokens"][:, 0] == 2).all() and batch["tokens"].max() < 300


def test_bpe_training_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = ["attention", "sink", "token", "model", "layer", "head", "the", "of", "first", "value"]
    with open(tmp_path / "c.jsonl", "w") as f:
        for _ in range(200):
            f.write(json.dumps({"text": " ".join(rng.choice(words, 40)) + "\n\nend."}) + "\n")
    assert tokenizer_main(["train", "--kind", "bpe", "--source", f"text:{tmp_path}/c.jsonl",
                           "--vocab-size", "400", "--out", str(tmp_path / "bpe")]) == 0
    path = tmp_path / "bpe" / "tokenizer.json"
    assert f"hf:{path}" in capsys.readouterr().out
    tok = get_tokenizer(f"hf:{path}")
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2) and 259 < tok.vocab_size <= 400
    # Merges learned from the corpus: every frequent word is one token (with its leading space).
    assert all(len(tok.encode(" " + w)) == 1 for w in words)
    # Byte-level: any text, unseen characters included, encodes without specials and decodes
    # back exactly.
    text = "Zürich\n\n  naïve 東京 ☃\t42"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and not {0, 1, 2} & set(ids)
    assert [x.tolist() for x in tok.encode_batch([text, "the"])] == [ids, tok.encode("the")]
    batch = next(make_loader(f"text:{tmp_path}/c.jsonl", f"hf:{path}", seq_len=16, batch_size=2,
                             packing="fixed_bos", split="all", process_index=0, process_count=1))
    assert (batch["tokens"][:, 0] == 1).all() and batch["tokens"].max() < tok.vocab_size
    assert tokenizer_main(["train", "--kind", "bpe", "--source", f"text:{tmp_path}/c.jsonl",
                           "--vocab-size", "100", "--out", str(tmp_path / "small")]) == 2
    assert "--vocab-size 100 is too small" in capsys.readouterr().err


def test_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "[UNK]": 3, "hello": 4, "world": 5}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = get_tokenizer(f"hf:{tmp_path}/tokenizer.json")
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (6, 1, 2, 0)
    assert tok.encode("hello world") == [4, 5]
    assert get_tokenizer(f"hf:{tmp_path}?pad=[UNK]").pad_id == 3
    with pytest.raises(ValueError, match="not a token"):
        get_tokenizer(f"hf:{tmp_path}/tokenizer.json?eos=<eos>")


@pytest.mark.tfds
def test_tfds_offline_mock():
    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is an optional extra")
    with tfds.testing.mock_data(num_examples=6):  # download=1: mock_data's no-op preparation
        src = get_source("tfds:lm1b:train?download=1")
        docs = list(src.documents("train"))
        assert len(docs) == 6 and all(isinstance(d, str) and d for d in docs)
        loader = make_loader("tfds:lm1b?download=1", "byte", seq_len=16, batch_size=2, packing="concat",
                             split="train", num_epochs=1, shuffle=False, process_index=0,
                             process_count=1, progress=False)
        first = next(loader)
    assert bytes(first["tokens"][0].astype(np.uint8)).decode() == docs[0].encode()[:16].decode(errors="ignore")[:16]
    with pytest.raises(ValueError, match="no feature 'body'"):
        with tfds.testing.mock_data(num_examples=2):
            list(get_source("tfds:lm1b?feature=body&download=1").documents("train"))


def _write_corpus(root, docs_by_file):
    """JSON-lines files (xz-compressed where the name says so) in the offline corpus layout."""
    for rel, docs in docs_by_file.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"text": d, "id": f"{rel}-{i}"}) + "\n" for i, d in enumerate(docs))
        if rel.endswith(".xz"):
            with lzma.open(path, "wt", encoding="utf-8") as f:
                f.write(lines)
        else:
            path.write_text(lines, encoding="utf-8")


@pytest.mark.tfds
@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_tfds_corpus_builder_prepares_and_reads_a_local_corpus(tmp_path, file_format):
    """`tfds:sinks_jax_corpus` runs TFDS's real download_and_prepare on a manual directory in
    the offline corpus layout and reads the records back in file order: the same documents as
    the files hold (read here with lzma + json), held-out `valid-*` files as `validation`."""
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is an optional extra")
    corpus = tmp_path / "corpus"
    files = {
        "books/shard-000.jsonl.xz": ["Call me Ishmael.", "It was the best of times.", "é ü ß"],
        "books/valid-000.jsonl.xz": ["A held-out book."],
        "notes/shard-000.jsonl": ["In the beginning.", "Second note.\n\nWith a paragraph."],
        "notes/valid-000.jsonl": ["A held-out note."],
    }
    _write_corpus(corpus, files)
    with open(corpus / "notes" / "shard-000.jsonl", "a") as f:
        f.write("not json\n" + json.dumps({"body": "no text field"}) + "\n")
    (corpus / "README.txt").write_text("not part of the corpus")
    data_dir = tmp_path / "tfds"
    spec = f"tfds:sinks_jax_corpus?manual_dir={corpus}&data_dir={data_dir}&format={file_format}"
    src = get_source(spec)
    expected_train = files["books/shard-000.jsonl.xz"] + files["notes/shard-000.jsonl"]
    expected_valid = files["books/valid-000.jsonl.xz"] + files["notes/valid-000.jsonl"]
    assert list(src.documents("train")) == expected_train
    assert list(src.documents("valid")) == expected_valid
    builder = src.builder()
    assert builder.info.file_format.value == file_format
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 5, "validation": 2}
    prepared = data_dir / "sinks_jax_corpus" / "default" / "1.0.0"
    assert any(p.name.startswith(f"sinks_jax_corpus-train.{file_format}") for p in prepared.iterdir())

    # Prepared once, it is read without the raw files (another host, a copied data_dir).
    elsewhere = get_source(f"tfds:sinks_jax_corpus:validation?data_dir={data_dir}")
    assert list(elsewhere.documents("train")) == expected_valid
    sliced = get_source(f"tfds:sinks_jax_corpus:train[1:]?data_dir={data_dir}")
    assert list(sliced.documents("train")) == expected_train[1:]
    loader = make_loader(f"tfds:sinks_jax_corpus?data_dir={data_dir}", "byte", seq_len=16,
                         batch_size=1, packing="concat", split="train", num_epochs=1,
                         shuffle=False, process_index=0, process_count=1, progress=False)
    first = next(loader)
    assert bytes(first["tokens"][0].astype(np.uint8)).decode() == expected_train[0][:16]

    # A changed corpus is not silently read from the old preparation; a new name prepares it.
    _write_corpus(corpus, {"books/shard-001.jsonl.xz": ["A new book."]})
    with pytest.raises(ValueError, match="prepared from other files"):
        list(get_source(spec).documents("train"))
    renamed = spec.replace("sinks_jax_corpus?", "sinks_jax_corpus/v2?")
    assert list(get_source(renamed).documents("train"))[3] == "A new book."


@pytest.mark.tfds
def test_tfds_sources_say_how_to_prepare(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is an optional extra")
    with pytest.raises(FileNotFoundError, match=r"not prepared .* \?manual_dir=DIR .* \?download=1"):
        list(get_source(f"tfds:sinks_jax_corpus?data_dir={tmp_path}").documents("train"))
    _write_corpus(tmp_path / "c", {"shard-000.jsonl": ["only training text"]})
    src = get_source(f"tfds:sinks_jax_corpus?manual_dir={tmp_path / 'c'}&data_dir={tmp_path}")
    with pytest.raises(ValueError, match=r"no split 'validation'; it has \['train'\]"):
        list(src.documents("valid"))
    with pytest.raises(ValueError, match="format='parquet'"):
        get_source("tfds:sinks_jax_corpus?format=parquet")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        get_source(f"tfds:sinks_jax_corpus?manual_dir={tmp_path / 'missing'}")
