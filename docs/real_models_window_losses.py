"""Per-window, per-target next-token loss with and without `<bos>`, for docs/real_models.md.

    python docs/real_models_window_losses.py MODEL.gguf results/real_models/windows.jsonl \
        results/real_models/NAME/window_losses.json [--report results/real_models/NAME/report.json]

The same windows, layouts and targets as `sinks-jax analyze --loss-file` (T = 64: "with_bos"
reads `<bos>`, x_0..x_62 and "text_only" reads x_0..x_63, both scored on x_1..x_63), but
every target's loss is kept, with the window's held-out document, so that `results/analysis.py`
can give intervals over documents and the loss over any range of target positions (e.g. the
last 32 targets, which every layout predicts with at least 31 tokens of text before them).
With `--report`, the mean must match the analyze run's `bos_loss` (to 1e-4 nats), or
nothing is written. float32 on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("windows")
    ap.add_argument("out")
    ap.add_argument("--report", default=None)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sinks_jax import analysis, hf

    model, tok = hf.load(args.model)
    records = [json.loads(x) for x in open(args.windows, encoding="utf-8") if x.strip()]
    T = args.seq_len
    rows, docs = [], []
    for r in records:  # as analyze's bos_loss_report: windows with at least T tokens
        ids = tok.encode(r["text"])
        if len(ids) >= T:
            rows.append(ids[:T])
            docs.append(r["doc"])
    with_bos, text = analysis.bos_layouts(np.asarray(rows, np.int32), tok.bos_id)

    @nnx.jit
    def per_target(model, tokens_with_bos, tokens_text):
        targets = tokens_text[:, 1:, None]

        def nll(logits):
            logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            return -jnp.take_along_axis(logp, targets, axis=-1)[..., 0]

        return nll(model(tokens_with_bos)[0][:, 1:]), nll(model(tokens_text)[0][:, :-1])

    out_w, out_t = [], []
    for i in range(0, len(rows), args.batch):
        a, b = per_target(model, with_bos[i : i + args.batch], text[i : i + args.batch])
        out_w.append(np.asarray(a))
        out_t.append(np.asarray(b))
        print(f"{i + args.batch}/{len(rows)}", end="\r", flush=True)
    nll_w, nll_t = np.concatenate(out_w), np.concatenate(out_t)
    result = {
        "model": os.path.basename(args.model),
        "windows": os.path.basename(args.windows),
        "seq_len": T,
        "targets": "x_1..x_63 (position t of the target list is text token t + 1)",
        "doc": docs,
        "with_bos": {"nll_per_target_NxT": np.round(nll_w, 5).tolist(),
                     "mean": float(nll_w.mean())},
        "text_only": {"nll_per_target_NxT": np.round(nll_t, 5).tolist(),
                      "mean": float(nll_t.mean())},
    }  # fmt: skip
    if args.report:
        ref = json.load(open(args.report))["bos_loss"]
        got = (result["with_bos"]["mean"], result["text_only"]["mean"])
        want = (ref["loss_with_bos"], ref["loss_text_only"])
        print(f"\nmeans {got} against the report's {want}")
        if max(abs(g - w) for g, w in zip(got, want)) > 1e-4 or len(rows) != ref["num_sequences"]:
            print("does not match the analyze run: nothing written", file=sys.stderr)
            return 1
        result["matches_report"] = os.path.basename(os.path.dirname(args.report)) + "/report.json"
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"wrote {args.out}: {len(rows)} windows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
