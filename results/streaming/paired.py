"""Paired differences between two caches of one `sinks-jax stream` run: the mean, over every
target, of NLL(cache A) - NLL(cache B) on the same tokens, with a 95 % percentile bootstrap over
chunks of targets (2,000 resamples, seed 0). Prints the table in docs/streaming.md.

    python results/streaming/paired.py
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = [  # (run folder, cache A, cache B, targets per chunk)
    ("smollm2-135m_size256", "0+256", "1+255", 1000),
    ("smollm2-135m_size256", "1+255", "4+252", 1000),
    ("smollm2-135m_bos_size256", "0+256", "1+255", 1000),
    ("smollm2-135m_65k_size1024", "0+1024", "1+1023", 1000),
    ("smollm2-135m_65k_size1024", "1+1023", "4+1020", 1000),
    ("smollm2-135m_200k_size1024", "0+1024", "1+1023", 1000),
    ("smollm2-135m_200k_size1024", "1+1023", "4+1020", 1000),
    ("gemma3-270m_bos_size1024", "0+1024", "1+1023", 1000),
    ("gemma3-270m_bos_size1024", "1+1023", "4+1020", 1000),
    ("gemma3-270m_bos_65k_size1024", "0+1024", "1+1023", 1000),
    ("gemma3-270m_nobos_size1024", "0+1024", "1+1023", 1000),
    ("gemma3-270m_nobos_size1024", "0+1024", "4+1020", 1000),
    ("trained_T64_softmax_fixed_bos", "0+16", "1+15", 256),
    ("trained_T64_sink_logit", "0+16", "1+15", 256),
    ("trained_T64_softmax_plus_one", "0+16", "1+15", 256),
    ("trained_softmax_fixed_bos", "0+64", "1+63", 500),
    ("trained_softmax_bos_per_doc", "0+64", "1+63", 500),
    ("trained_sink_logit", "0+64", "1+63", 500),
    ("trained_softmax_plus_one", "0+64", "1+63", 500),
]


def paired(folder, a, b, chunk, resamples=2000, seed=0):
    nll = np.load(os.path.join(HERE, folder, "stream_nll.npz"))
    diff = nll[a].astype(np.float64) - nll[b].astype(np.float64)  # [streams, targets]
    streams, n = diff.shape
    whole = n // chunk
    chunks = diff[:, : whole * chunk].reshape(streams * whole, chunk).mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(chunks), (resamples, len(chunks)))
    low, high = np.percentile(chunks[idx].mean(axis=1), [2.5, 97.5])
    return diff.mean(), low, high


if __name__ == "__main__":
    print("| run | A | B | mean NLL(A) - NLL(B), nats | 95 % interval |")
    print("|---|---|---|---:|---|")
    for folder, a, b, chunk in PAIRS:
        if os.path.exists(os.path.join(HERE, folder, "stream_nll.npz")):
            mean, low, high = paired(folder, a, b, chunk)
            print(f"| {folder} | {a} | {b} | {mean:+.4f} | [{low:+.4f}, {high:+.4f}] |")
