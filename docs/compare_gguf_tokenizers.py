"""Our GGUF tokenizers against `transformers`' on 1,000 held-out lines (docs/gguf.md's table).

    python docs/compare_gguf_tokenizers.py MODELS_DIR DATA_DIR

MODELS_DIR as written by `sinks-jax models fetch smollm2-135m gemma3-270m --dir MODELS_DIR`;
DATA_DIR holds `gutenberg/valid-000.jsonl.xz` and `openstax/valid-000.jsonl.xz`.
"""

import json
import lzma
import os
import sys

from transformers import AutoTokenizer

from sinks_jax.pretrained.fetch import MODELS
from sinks_jax.pretrained.gguf import load_gguf_tokenizer


def lines(data_dir: str, per_file: int = 500) -> list[str]:
    out = []
    for corpus in ("gutenberg", "openstax"):
        got = []
        with lzma.open(os.path.join(data_dir, corpus, "valid-000.jsonl.xz"), "rt") as f:
            for doc in f:
                got += [ln for ln in json.loads(doc)["text"].split("\n") if ln.strip()]
                if len(got) >= per_file:
                    break
        out += got[:per_file]
    return out


def main(models_dir: str, data_dir: str) -> None:
    texts = lines(data_dir)
    print(f"{len(texts)} lines, {sum(map(len, texts))} characters")
    for name in ("smollm2-135m", "gemma3-270m"):
        folder, file = os.path.join(models_dir, name), MODELS[name].filename
        ours = load_gguf_tokenizer(os.path.join(folder, file))
        ref = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        a = ours.encode_batch(texts)
        b = [ref.encode(t, add_special_tokens=False) for t in texts]
        differ = [i for i in range(len(texts)) if list(a[i]) != b[i]]
        round_trip = sum(ours.decode(list(ids)) == t for ids, t in zip(a, texts))
        print(f"{name}: tokens ours {sum(map(len, a))} transformers {sum(map(len, b))}; "
              f"lines that differ {len(differ)}; round trips {round_trip}")
        for i in differ[:3]:
            print("   ", repr(texts[i][:70]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
