"""Long-context sink scores of Gemma 3 over several held-out documents (one window each), so
that the long-context rows of docs/real_models.md get intervals over documents and the
global layers can be read on their own.

    python docs/real_models_long_windows.py MODEL.gguf 'DATA/gutenberg/valid-*.jsonl.xz' \
        results/real_models/long_context/gemma3_global_windows.json --lengths 1024 4096

For each held-out document with at least T - 1 tokens, the window is `<bos>` + its first
T - 1 tokens. alpha_0 of every layer and head is scored as `sinks-jax analyze
--long-context` scores it (`sink_query_mask`: a local layer over the queries whose window
still holds key 0, the first 512; a global layer over all T queries), here in float32 on CPU
with the `blockwise` backend (exact; no T x T map). The JSON holds, per length, the scores of
the global and of the local layers, `[documents, layers, heads]`.
"""

from __future__ import annotations

import argparse
import glob
import json
import lzma
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("glob")
    ap.add_argument("out")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    args = ap.parse_args()

    import jax.numpy as jnp
    from flax import nnx

    from sinks_jax import analysis, hf
    from sinks_jax.model import sink_query_mask
    from sinks_jax.model.surgery import with_backend

    model, tok = hf.load(args.model)
    texts = []
    for path in sorted(glob.glob(args.glob)):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            texts += [(f"{path.split('/')[-2]}/{d}", json.loads(line)["text"])
                      for d, line in enumerate(f)]  # fmt: skip
    longest = max(args.lengths)
    docs = [(name, tok.encode(t[: 8 * longest])) for name, t in texts]  # enough characters
    fused = with_backend(model, "blockwise")
    local = np.asarray(model.config.local_layers, bool)

    @nnx.jit
    def column(model, tokens):
        return model(tokens, collect=("sink_attn",))[1]["sink_attn"]

    out = {"model": os.path.basename(args.model), "backend": "blockwise, float32, CPU",
           "documents": [], "local_layers": local.tolist(), "lengths": {}}  # fmt: skip
    for n in sorted(args.lengths):
        keep = [(name, ids) for name, ids in docs if len(ids) >= n - 1]
        mask = sink_query_mask(model.config, n)
        scores = []
        t0 = time.time()
        for name, ids in keep:
            tokens = jnp.asarray([[tok.bos_id] + list(ids[: n - 1])], jnp.int32)
            s = analysis.sink_scores_from_column(column(fused, tokens), query_mask_BxT=mask)
            scores.append(np.asarray(s)[:, 0])  # [L, H]
            print(f"T {n}: {name} {time.time() - t0:.0f} s", flush=True)
        s_NxLxH = np.stack(scores)
        out["lengths"][str(n)] = {
            "documents": [name for name, _ in keep],
            "global_scores_NxLxH": np.round(s_NxLxH[:, ~local], 6).tolist(),
            "local_scores_NxLxH": np.round(s_NxLxH[:, local], 6).tolist(),
        }
        out["documents"] = sorted(set(out["documents"]) | {name for name, _ in keep})
        with open(args.out, "w") as f:
            json.dump(out, f)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
