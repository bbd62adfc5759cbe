"""A TensorFlow Datasets builder for a local corpus of JSON-lines files (`sinks_jax_corpus`).

The layout it reads, from a *manual directory* (nothing is downloaded):

    DIR/**/*.jsonl[.xz|.gz|.bz2]   one JSON object per line, the document in its `text` field
    DIR/**/valid-*.jsonl[...]      held-out files: the `validation` split (all others: `train`)

e.g. the offline corpus of gutenberg/, openstax/ and kjv_bible/ folders with `shard-*` and
`valid-*` files. `download_and_prepare` writes the documents as TFDS records (tfrecord by
default, or array_record) under `data_dir/sinks_jax_corpus/NAME/VERSION/`, and TFDS's readers
serve them from there, so a corpus prepared once (e.g. on a host with the raw files) is read
without the raw files. Through the `tfds:` source:

    tfds:sinks_jax_corpus/NAME?manual_dir=DIR&data_dir=TFDS_DIR[&format=array_record]

NAME (default `default`) names one prepared corpus; the files it was prepared from (relative
paths and sizes) are recorded, and reading it with a `manual_dir` whose files differ is an
error rather than a silent read of the old preparation.

Importing this module registers the builder (it needs `tensorflow-datasets`).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from sinks_jax.data.compressed import open_binary

NAME = "sinks_jax_corpus"
SUFFIXES = (".jsonl", ".jsonl.xz", ".jsonl.gz", ".jsonl.bz2")
HELD_OUT_PREFIX = "valid"


def corpus_files(manual_dir: str) -> dict[str, list[str]]:
    """Split name -> sorted paths (relative to `manual_dir`) of the corpus's JSON-lines files;
    a `validation` entry only when some file is named `valid-*`."""
    found = sorted(
        os.path.relpath(p, manual_dir)
        for p in glob.glob(os.path.join(manual_dir, "**", "*"), recursive=True)
        if p.endswith(SUFFIXES) and os.path.isfile(p)
    )
    if not found:
        raise FileNotFoundError(
            f"{NAME}: no {'/'.join(SUFFIXES)} file under manual_dir {manual_dir!r}."
        )
    held_out = [p for p in found if os.path.basename(p).startswith(HELD_OUT_PREFIX)]
    train = [p for p in found if p not in set(held_out)]
    if not train:
        raise FileNotFoundError(f"{NAME}: every file under {manual_dir!r} is a valid-* file.")
    return {"train": train, "validation": held_out} if held_out else {"train": train}


def fingerprint(manual_dir: str) -> dict[str, int]:
    """Relative path -> size in bytes of every corpus file: what a preparation came from."""
    return {
        rel: os.path.getsize(os.path.join(manual_dir, rel))
        for rels in corpus_files(manual_dir).values()
        for rel in rels
    }


class SinksJaxCorpus(tfds.core.GeneratorBasedBuilder):
    """Documents of local JSON-lines files (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default")]  # others: named per corpus
    # No checksums file: nothing is downloaded. (TFDS's search for one beside the module also
    # needs `importlib_resources`, which tensorflow-datasets does not install on Python 3.9+.)
    code_path = None
    RELEASE_NOTES = {"1.0.0": "JSON lines, `text` field, valid-* files held out."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the folder of the corpus's JSON-lines files (`*.jsonl`, optionally .xz/.gz/.bz2, "
        "a `text` field per line; `valid-*` files held out) as the manual directory: "
        "`tfds:sinks_jax_corpus?manual_dir=DIR`, or "
        "tfds.download.DownloadConfig(manual_dir=DIR)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Documents of local JSON-lines files (sinks_jax.data.tfds_corpus).",
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "file": tfds.features.Text()}
            ),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # file order, as the text: source reads them
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        self.info.metadata["files"] = fingerprint(manual_dir)  # saved with the dataset info
        return {
            split: self._generate_examples(manual_dir, rels)
            for split, rels in corpus_files(manual_dir).items()
        }

    def _generate_examples(self, manual_dir: str, rels: list[str]) -> Iterator[tuple[str, dict]]:
        """(key, example) per non-empty document; lines that are not UTF-8 JSON objects with a
        `text` string are skipped."""
        for rel in rels:
            with open_binary(os.path.join(manual_dir, rel)) as f:
                for i, raw in enumerate(f):
                    try:
                        text = json.loads(raw.decode("utf-8"))["text"]
                    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                        continue
                    if isinstance(text, str) and text.strip():
                        yield f"{rel}:{i}", {"text": text, "file": rel}
