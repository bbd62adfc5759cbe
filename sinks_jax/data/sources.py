"""Document sources: local text, synthetic languages, TFDS. A document is a `str`.

Specs for `get_source` (options after `?`, joined by `&`):

- `text:GLOB` local files, sorted by path, read lazily:
  - `.jsonl` (also `.jsonl.gz`, `.jsonl.xz`, `.jsonl.bz2`): one document per line, the
    `text` field (`?field=NAME` to change it);
  - `.txt` (also compressed): one document per file; `?docs=blank` makes every block of
    text between blank lines a document instead.
  Lines that are not valid UTF-8 (or not valid JSON) are skipped, counted, and reported in
  one warning at the end of the pass; empty documents are skipped. Held-out split, one of:
  - `?valid=GLOB` (held-out *files*): `valid` reads the files GLOB matches, `train` the
    files of the main glob that GLOB does not match, `all` both. Use it for corpora that
    ship held-out files, e.g. `text:data/*/*.jsonl.xz?valid=data/*/valid-*.jsonl.xz`.
  - the default (held-out *documents*): a document belongs to `valid` when a hash of its
    text falls below `?holdout=FRACTION` (default 0.01), so the split does not depend on
    file order; `all` ignores the hold-out. Files are not special: a `valid-*` file that
    the glob matches is split like any other (a warning says so; pass `?valid=`).
- `synthetic:KIND[?vocab=64&seed=0&min_len=16&max_len=512]` endless, deterministic streams
  of documents, drawn in blocks of 256 documents by numpy; lengths are log-uniform in
  `[min_len, max_len]` symbols. Documents are strings over `vocab` printable ASCII
  characters, so the `byte` tokenizer maps one symbol to one token. `seed` fixes the
  *language*; which documents are drawn depends on the loader's seed and the split.
  - `bigram_backcopy`: the Bigram-Backcopy task of Guo et al. (2024, "Active-dormant
    attention heads"): tokens follow a fixed Zipfian bigram chain, except that after one of
    4 trigger symbols the next symbol copies the symbol before the trigger. Only trigger
    positions need attention (to the previous token); everywhere else the best a head can
    do is nothing, which small transformers implement by parking attention on the first
    token: a first-token sink forms within a few hundred steps even at 1-3 layers, and
    the task's loss tells whether the copy head works.
  - `zipf_markov`: a Zipfian Markov language with document structure: each document draws
    one of 8 topics (its own bigram chain), so the next-token distribution depends on
    evidence spread over the whole document (attention is useful everywhere).
- `tfds:NAME[:SPLIT][?feature=text&data_dir=DIR&valid_split=validation]` a TFDS text dataset
  prepared in `data_dir` (default `~/tensorflow_datasets`; TensorFlow Datasets is needed only
  here, imported lazily). `train` reads `SPLIT` (default `train`), `valid` reads
  `valid_split` (a slice such as `train[:1%]` works). A dataset that is not prepared yet is
  an error unless one of these says how to prepare it (`format=tfrecord|array_record`):
  - `manual_dir=DIR`: from files on disk, offline. `tfds:sinks_jax_corpus[/NAME]` is the
    builder of `sinks_jax.data.tfds_corpus` for a folder of JSON-lines files (`.jsonl`,
    optionally `.xz`/`.gz`/`.bz2`, a `text` field; `valid-*` files are the `validation`
    split); NAME (default `default`) names one prepared corpus.
  - `download=1`: let TFDS download and prepare a catalogue dataset (`c4/en`, `wikipedia/...`)
    on a machine with network; copy `data_dir` to hosts without it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import zlib
from collections.abc import Iterator

import numpy as np

from sinks_jax.data.compressed import open_binary
from sinks_jax.data.specs import check_no_options_left, parse_spec, pop_int

log = logging.getLogger(__name__)

KINDS = ("text", "synthetic", "tfds")
SPLITS = ("train", "valid", "all")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; choose one of {list(SPLITS)}.")


# ------------------------------------------------------------------------------ text

def _base_ext(path: str) -> str:
    stem = path
    for comp in (".gz", ".xz", ".bz2"):
        stem = stem.removesuffix(comp)
    return os.path.splitext(stem)[1]


_WARNED_SPECS: set[str] = set()  # specs already warned about valid-* files (warn once).


def _matching_files(spec: str, pattern: str) -> list[str]:
    """Sorted readable files of a glob; raises if none, or if one has an unknown format."""
    files = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(p))
    if not files:
        raise FileNotFoundError(f"source {spec!r}: no file matches {pattern!r}.")
    bad = [p for p in files if _base_ext(p) not in (".jsonl", ".json", ".txt")]
    if bad:
        raise ValueError(f"source {spec!r}: cannot read {bad[:3]}; use .jsonl or .txt files "
                         "(optionally .gz/.xz/.bz2).")
    return files


class TextSource:
    """Local `.jsonl` / `.txt` files (optionally compressed); see the module docstring."""

    infinite = False

    def __init__(self, spec: str, pattern: str, options: dict[str, str]):
        self.spec = spec
        self.field = options.pop("field", "text")
        self.docs_mode = options.pop("docs", "file")
        holdout = options.pop("holdout", None)
        valid = options.pop("valid", None)
        check_no_options_left(options, "text source", ("field", "docs", "holdout", "valid"))
        if valid is not None and holdout is not None:
            raise ValueError(f"source {spec!r}: pass either valid=GLOB (held-out files) or "
                             "holdout=FRACTION (held-out documents), not both.")
        holdout = "0" if valid is not None else (holdout or "0.01")
        if self.docs_mode not in ("file", "blank"):
            raise ValueError(f"text source option docs={self.docs_mode!r}: use docs=file or docs=blank.")
        try:
            self.holdout = float(holdout)
        except ValueError:
            raise ValueError(f"text source option holdout={holdout!r} is not a number in [0, 1).") from None
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"text source option holdout={holdout!r} must lie in [0, 1).")
        if not pattern:
            raise ValueError(f"source {spec!r} needs a glob after 'text:', e.g. text:data/*.jsonl.xz.")
        matched = _matching_files(spec, pattern)
        self.valid_files = [] if valid is None else _matching_files(spec, valid)
        self.files = [p for p in matched if p not in set(self.valid_files)]
        if not self.files:
            raise FileNotFoundError(f"source {spec!r}: every file of {pattern!r} is held out by "
                                    f"valid={valid!r}; nothing is left to train on.")
        looks_held_out = [p for p in self.files if os.path.basename(p).startswith(("valid", "test"))]
        if valid is None and looks_held_out and spec not in _WARNED_SPECS:
            _WARNED_SPECS.add(spec)
            log.warning("source %s: %d file(s) named like held-out files (%s) are split by "
                        "document hash like the others; pass ?valid=GLOB to hold them out.",
                        spec, len(looks_held_out), looks_held_out[0])
        self.skipped = {"non_utf8_lines": 0, "bad_json_lines": 0, "empty_documents": 0}

    def split_files(self, split: str) -> list[str]:
        """The files a split reads (in that order)."""
        check_split(split)
        if not self.valid_files:
            return self.files
        if split == "all":
            return sorted(self.files + self.valid_files)
        return self.valid_files if split == "valid" else self.files

    def _in_split(self, text: str, split: str) -> bool:
        if self.valid_files:  # held-out files: the split's files hold only its documents.
            return True
        if split == "all" or self.holdout == 0.0:
            return split != "valid"
        is_valid = zlib.crc32(text.encode("utf-8")) % 1_000_000 < self.holdout * 1_000_000
        return is_valid == (split == "valid")

    def _lines(self, path: str) -> Iterator[str]:
        with open_binary(path) as f:
            for raw in f:
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.skipped["non_utf8_lines"] += 1

    def _file_documents(self, path: str) -> Iterator[str]:
        if _base_ext(path) in (".jsonl", ".json"):
            for line in self._lines(path):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record[self.field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped["bad_json_lines"] += 1
                    continue
                yield str(text)
        elif self.docs_mode == "file":
            yield "".join(self._lines(path))
        else:
            block: list[str] = []
            for line in self._lines(path):
                if line.strip():
                    block.append(line)
                elif block:
                    yield "".join(block)
                    block = []
            if block:
                yield "".join(block)

    def documents(self, split: str = "train") -> Iterator[str]:
        """Yield the split's documents in file order; warn once about skipped lines."""
        check_split(split)
        for key in self.skipped:
            self.skipped[key] = 0
        count = 0
        for path in self.split_files(split):
            for text in self._file_documents(path):
                if not text.strip():
                    self.skipped["empty_documents"] += 1
                    continue
                if self._in_split(text, split):
                    count += 1
                    yield text
        if self.skipped["non_utf8_lines"] or self.skipped["bad_json_lines"]:
            log.warning("source %s: skipped %d non-UTF-8 line(s) and %d line(s) without valid JSON "
                        "or field %r.", self.spec, self.skipped["non_utf8_lines"],
                        self.skipped["bad_json_lines"], self.field)
        if count == 0:
            raise ValueError(f"source {self.spec!r} has no documents in split {split!r} "
                             f"({len(self.split_files(split))} file(s), holdout={self.holdout}, "
                             f"skipped: {self.skipped}).")


# ------------------------------------------------------------------------- synthetic

_ALPHABET = np.array([chr(c) for c in range(33, 127)])  # 94 printable, non-space ASCII
_PRESETS = {"bigram_backcopy": {"topics": 1, "triggers": 4}, "zipf_markov": {"topics": 8, "triggers": 0}}
_BLOCK_DOCS = 256
_SPLIT_CODE = {"train": 0, "valid": 1, "all": 0}


class SyntheticSource:
    """Endless deterministic documents from a fixed random language; see the module docstring."""

    infinite = True

    def __init__(self, spec: str, kind: str, options: dict[str, str]):
        if kind not in _PRESETS:
            raise ValueError(f"synthetic source {kind!r} is unknown; choose one of {sorted(_PRESETS)}.")
        self.spec, self.kind = spec, kind
        self.vocab = pop_int(options, "vocab", 64, spec)
        self.lang_seed = pop_int(options, "seed", 0, spec)
        self.min_len = pop_int(options, "min_len", 16, spec)
        self.max_len = pop_int(options, "max_len", 512, spec)
        check_no_options_left(options, "synthetic source", ("vocab", "seed", "min_len", "max_len"))
        preset = _PRESETS[kind]
        self.num_triggers = preset["triggers"]
        if not self.num_triggers + 2 <= self.vocab <= len(_ALPHABET):
            raise ValueError(f"synthetic vocab={self.vocab} must lie in [{self.num_triggers + 2}, "
                             f"{len(_ALPHABET)}].")
        if not 2 <= self.min_len <= self.max_len:
            raise ValueError(f"synthetic lengths min_len={self.min_len}, max_len={self.max_len}: "
                             "need 2 <= min_len <= max_len.")
        self._cdf_KxVxV = self._language(preset["topics"])

    def _language(self, topics: int) -> np.ndarray:
        """Cumulative transition tables `[topics, V, V]`: Zipf(1.1) over a random order."""
        rng = np.random.default_rng([self.lang_seed, 7919])
        v, k = self.vocab, self.num_triggers
        plain = v - k
        zipf = 1.0 / np.arange(1, plain + 1) ** 1.1
        probs = np.zeros((topics, v, v))
        for t in range(topics):
            for row in range(v):
                probs[t, row, rng.permutation(plain)] = zipf / zipf.sum()
        if k:  # each plain symbol is followed by a trigger with probability 0.1
            probs[:, :, :plain] *= 0.9
            probs[:, :, plain:] = 0.1 / k
        return np.cumsum(probs, axis=-1)

    def block(self, split: str, seed: int, index: int) -> list[str]:
        """Documents `[256 * index, 256 * (index + 1))` of the stream for `(split, seed)`."""
        check_split(split)
        rng = np.random.default_rng([self.lang_seed, _SPLIT_CODE[split], seed, index])
        n, plain = _BLOCK_DOCS, self.vocab - self.num_triggers
        lengths = np.exp(rng.uniform(np.log(self.min_len), np.log(self.max_len + 1), n)).astype(int)
        lengths = np.clip(lengths, self.min_len, self.max_len)
        topic = rng.integers(0, self._cdf_KxVxV.shape[0], n)
        x_NxL = np.zeros((n, int(lengths.max())), dtype=np.int64)
        x_NxL[:, 0] = rng.integers(0, plain, n)
        is_trigger = np.arange(self.vocab) >= plain
        u_NxL = rng.random(x_NxL.shape)
        for t in range(1, x_NxL.shape[1]):
            cdf_NxV = self._cdf_KxVxV[topic, x_NxL[:, t - 1]]
            nxt = np.minimum((cdf_NxV < u_NxL[:, t : t + 1]).sum(axis=1), self.vocab - 1)
            if t >= 2 and self.num_triggers:
                nxt = np.where(is_trigger[x_NxL[:, t - 1]], x_NxL[:, t - 2], nxt)
            x_NxL[:, t] = nxt
        return ["".join(_ALPHABET[x_NxL[i, : lengths[i]]]) for i in range(n)]

    def documents(self, split: str = "train", seed: int = 0) -> Iterator[str]:
        """Endless stream of documents (blocks 0, 1, 2, ...)."""
        index = 0
        while True:
            yield from self.block(split, seed, index)
            index += 1


# ------------------------------------------------------------------------------ tfds

TFDS_FORMATS = ("tfrecord", "array_record")


class TFDSSource:
    """A TFDS text dataset: prepared in `data_dir`, or prepared there first from a manual
    directory (`manual_dir=`, offline) or by TFDS's download (`download=1`); see the module
    docstring. TensorFlow Datasets is imported only here."""

    infinite = False

    def __init__(self, spec: str, body: str, options: dict[str, str]):
        self.spec = spec
        name, _, split = body.partition(":")
        version, sep, rest = split.partition(":")
        if version.replace(".", "").isdigit():  # `c4/en:3.0.1[:SPLIT]`: a version first
            name, split = f"{name}:{version}", rest if sep else ""
        split = split or "train"  # a slice such as `train[1%:]` keeps its colon
        if not name:
            raise ValueError(f"source {spec!r} needs a dataset name, e.g. tfds:lm1b or tfds:c4/en:train.")
        self.name, self.train_split = name, split
        self.feature = options.pop("feature", "text")
        self.data_dir = options.pop("data_dir", None)
        self.valid_split = options.pop("valid_split", "validation")
        self.manual_dir = options.pop("manual_dir", None)
        self.file_format = options.pop("format", "tfrecord")
        download = options.pop("download", "0")
        check_no_options_left(options, "tfds source", (
            "feature", "data_dir", "valid_split", "manual_dir", "format", "download"))
        if self.file_format not in TFDS_FORMATS:
            raise ValueError(f"tfds source option format={self.file_format!r}: use one of "
                             f"{list(TFDS_FORMATS)}.")
        if download not in ("0", "1"):
            raise ValueError(f"tfds source option download={download!r}: use download=1 (let "
                             "TFDS download and prepare the dataset) or download=0.")
        self.download = download == "1"
        if self.manual_dir is not None:
            self.manual_dir = os.path.expanduser(self.manual_dir)
            if not os.path.isdir(self.manual_dir):
                raise FileNotFoundError(f"source {spec!r}: manual_dir {self.manual_dir!r} is not "
                                        "a folder.")
        self.skipped = {"non_utf8_documents": 0}
        self._builder = None

    def _tfds(self):
        try:
            import tensorflow_datasets as tfds
        except ImportError as err:
            raise ImportError(f"source {self.spec!r} needs tensorflow-datasets: "
                              "pip install 'sinks_jax[tfds]', or prepare shards elsewhere with "
                              "`sinks-jax prepare` and train from them.") from err
        return tfds

    def builder(self):
        """The dataset's TFDS builder, prepared in `data_dir` (preparing it if allowed)."""
        if self._builder is not None:
            return self._builder
        tfds = self._tfds()
        family, _, config = self.name.partition(":")[0].partition("/")
        if family == "sinks_jax_corpus":
            from sinks_jax.data import tfds_corpus  # registers the builder

            config = config or "default"
            if config not in tfds_corpus.SinksJaxCorpus.builder_configs:  # a corpus's own name
                config = tfds.core.BuilderConfig(name=config)
            builder = tfds.builder(tfds_corpus.NAME, config=config, data_dir=self.data_dir)
        else:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        if not builder.is_prepared():
            if self.manual_dir is None and not self.download:
                raise FileNotFoundError(
                    f"source {self.spec!r}: {self.name} is not prepared in {builder.data_dir}; "
                    "pass ?manual_dir=DIR (files on disk) or, on a machine that can download, "
                    "?download=1 (then copy data_dir to hosts without network).")
            config = tfds.download.DownloadConfig(manual_dir=self.manual_dir)
            log.info("source %s: preparing %s in %s", self.spec, self.name, builder.data_dir)
            builder.download_and_prepare(download_config=config, file_format=self.file_format)
        elif self.manual_dir is not None and family == "sinks_jax_corpus":
            from sinks_jax.data import tfds_corpus

            recorded = dict(builder.info.metadata.get("files", {}))
            if recorded != tfds_corpus.fingerprint(self.manual_dir):
                raise ValueError(
                    f"source {self.spec!r}: {builder.data_dir} was prepared from other files "
                    f"than those of {self.manual_dir!r}; name this corpus "
                    "(tfds:sinks_jax_corpus/NAME) or delete that folder to prepare it again.")
        self._builder = builder
        return builder

    def _examples(self, split: str) -> Iterator[dict]:
        """The split's examples as numpy values, in the prepared files' order."""
        tfds, builder = self._tfds(), self.builder()
        known = builder.info.splits  # (empty under tfds.testing.mock_data)
        if known and split.split("[")[0] not in known:
            raise ValueError(f"source {self.spec!r}: {self.name} has no split {split!r}; it has "
                             f"{sorted(builder.info.splits)} (hold out a slice with e.g. "
                             "?valid_split=train[:1%] and read train[1%:]).")
        if builder.info.file_format is not None and builder.info.file_format.value == "array_record":
            yield from builder.as_data_source(split=split)  # random access, no tf.data
        else:
            yield from tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))

    def documents(self, split: str = "train") -> Iterator[str]:
        check_split(split)
        tfds_split = self.valid_split if split == "valid" else self.train_split
        count = 0
        for example in self._examples(tfds_split):
            if self.feature not in example:
                raise ValueError(f"source {self.spec!r}: no feature {self.feature!r}; the dataset has "
                                 f"{sorted(example)}; pass ?feature=NAME.")
            value = example[self.feature]
            try:
                text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                self.skipped["non_utf8_documents"] += 1
                continue
            if text.strip():
                count += 1
                yield text
        if self.skipped["non_utf8_documents"]:
            log.warning("source %s: skipped %d non-UTF-8 document(s).", self.spec,
                        self.skipped["non_utf8_documents"])
        if count == 0:
            raise ValueError(f"source {self.spec!r} has no documents in split {tfds_split!r}.")


Source = TextSource | SyntheticSource | TFDSSource


def get_source(spec: str) -> Source:
    """Build a source from its spec: `text:GLOB`, `synthetic:KIND`, `tfds:NAME[:SPLIT]`."""
    kind, body, options = parse_spec(spec, KINDS, "source")
    if kind == "text":
        return TextSource(spec, body, options)
    if kind == "synthetic":
        return SyntheticSource(spec, body, options)
    return TFDSSource(spec, body, options)
