"""Rebuild the held-out windows of the committed reproduction runs and record each window's
document (`results/window_documents.json`), for the intervals over documents in
`results/analysis.py`.

The runs committed before the evaluation kept document ids scored 256 windows of 64 tokens
drawn by `DataPipeline.sink_eval_sequences` (`eval_sink_windows=True`): a pure function of the
held-out files, the tokenizer and the packing code (one fixed shuffle, seed 0). So the
windows, and the document each comes from, are rebuilt exactly from the corpus and a
tokenizer trained by the same rule (`sinks-jax tokenizer train --kind bpe --vocab-size 16384`
on the same training files: the BPE trainer is deterministic). The check that it is the same
tokenizer: the held-out split must tokenise to the committed manifest's number of tokens and
documents (`prepared_manifest.json`), to the token.

    python results/window_documents.py main DATA_DIR TOKENIZER.json       # 3 sources
    python results/window_documents.py gutenberg DATA_DIR TOKENIZER.json  # Gutenberg only

DATA_DIR holds the corpus layout (`gutenberg/`, `openstax/`, `kjv_bible/` with `valid-*`
files); for `gutenberg` only its `gutenberg/` folder is read. The tokenizer of `main` is
trained on DATA_DIR's training files of all three sources, that of `gutenberg` on
Gutenberg's alone (what `launch/repro_h200.sh` does with such a folder). The entry is
merged into `results/window_documents.json`.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

OUT = os.path.join(HERE, "window_documents.json")
CORPORA = {  # name -> (source folders, committed manifest, runs scored on these windows)
    "main": (("gutenberg", "kjv_bible", "openstax"), "context/prepared_manifest.json",
             ["context", "depth", "packing", "variants", "strong"]),
    "gutenberg": (("gutenberg",), "variants_gutenberg/prepared_manifest.json",
                  ["variants_gutenberg"]),
}
NUM_WINDOWS, WINDOW_LEN = 256, 64  # configs/repro.py: eval_sink_sequences, eval_sink_len.


def held_out_windows(source: str, tokenizer_path: str) -> tuple[dict, object]:
    """The sink-evaluation sets of a repro run on `source` (`DataPipeline`'s own code)."""
    import ml_collections

    from sinks_jax.data.loader import LoaderSpec
    from sinks_jax.data.tokenizers import get_tokenizer
    from sinks_jax.train.data import DataPipeline

    tok = get_tokenizer(f"hf:{tokenizer_path}")
    pipe = DataPipeline.__new__(DataPipeline)  # only the held-out part: no training loader.
    pipe.config = ml_collections.ConfigDict({"eval_sink_windows": True, "seed": 0,
                                             "data": {"source": source}})
    pipe.tokenizer = tok
    pipe.spec = LoaderSpec(source=source, tokenizer=tok, seq_len=2048, split="valid")
    return pipe.sink_eval_sequences(NUM_WINDOWS, WINDOW_LEN), tok


def main(argv: list[str]) -> int:
    name, data_dir, tokenizer_path = argv
    folders, manifest_path, experiments = CORPORA[name]
    # The text source takes one glob; list the folders' files through a temporary layout.
    import glob as globlib
    import tempfile

    tmp = tempfile.mkdtemp(prefix="window_documents_")
    for folder in folders:
        os.makedirs(os.path.join(tmp, folder))
        for path in sorted(globlib.glob(os.path.join(data_dir, folder, "*.jsonl.xz"))):
            os.symlink(os.path.abspath(path), os.path.join(tmp, folder, os.path.basename(path)))
    source = f"text:{tmp}/*/*.jsonl.xz?valid={tmp}/*/valid-*.jsonl.xz"
    sets, tok = held_out_windows(source, tokenizer_path)

    from sinks_jax.data.corpus import document_tokens

    docs = list(document_tokens(source, tok, "valid"))
    manifest = json.load(open(os.path.join(HERE, manifest_path)))["splits"]["valid"]
    got = {"documents": len(docs), "tokens": int(sum(len(d) for d in docs))}
    want = {"documents": manifest["documents"], "tokens": manifest["tokens"]}
    if got != want:
        print(f"{name}: the held-out split tokenises to {got}, the committed manifest says "
              f"{want}: not the runs' tokenizer; nothing written.", file=sys.stderr)
        return 1
    text = sets["nobos"]
    doc_ids = sets["doc_ids"]
    for row, d in zip(text, doc_ids):  # every window lies inside its document
        toks = np.asarray(docs[d])
        hits = np.flatnonzero(toks[: len(toks) - WINDOW_LEN + 1] == row[0])
        assert any(np.array_equal(toks[h:h + WINDOW_LEN], row) for h in hits), d
    p = WINDOW_LEN // 2  # the perturbation spread leaves out windows whose swap changes nothing
    spread_rows = int((np.roll(text[:, p], 1) != text[:, p]).sum())
    entry = {
        "experiments": experiments,
        "doc_ids": [int(d) for d in doc_ids],
        "documents": len(docs),
        "documents_with_windows": int(len(np.unique(doc_ids))),
        "windows_per_document": np.bincount(doc_ids, minlength=len(docs)).tolist(),
        "heldout_tokens": got["tokens"],
        "manifest_tokens": want["tokens"],
        "perturbation_rows": spread_rows,
        "first_window_tokens": text[0].tolist(),
        "how": f"python results/window_documents.py {name} DATA_DIR TOKENIZER.json "
               "(held-out split matched the committed manifest to the token)",
    }
    out = json.load(open(OUT)) if os.path.exists(OUT) else {}
    out[name] = entry
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{name}: {len(doc_ids)} windows from {entry['documents_with_windows']} of "
          f"{len(docs)} documents; held-out tokens {got['tokens']} (manifest {want['tokens']}); "
          f"windows per document {entry['windows_per_document']}; written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
