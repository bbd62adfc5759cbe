"""One evaluation's numbers from its per-token NLL: mean, perplexity, a bootstrap interval
over chunks of tokens, the targets after the first eviction, and curves against tokens read.

`nll_SxN` [streams, N - 1]: entry (s, t) is the NLL of token t + 1 of stream s, predicted by
query t (which, under a cache k + W, first misses a token at t = k + W).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from sinks_jax.analysis.bootstrap import bootstrap_interval


def _ppl(nll: float) -> float:
    return float(math.exp(min(nll, 700.0)))


def summarize(
    nll_SxN,
    *,
    first_eviction: int | None,
    bin_size: int = 1000,
    curve_bin: int | None = None,
    context: int | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """mean_nll, ppl, the `level` bootstrap interval over `bin_size`-target chunks (whole
    chunks only; every target counts in the mean), `after_eviction`, `within_context` (the
    targets inside the first `context` tokens, when the stream is longer: where dense
    attention is still inside the model's training context), and `curve` (bins of
    `curve_bin` targets, default `bin_size`)."""
    nll = np.asarray(nll_SxN, np.float64)
    S, N = nll.shape
    mean = float(nll.mean())
    out = {"num_predicted": int(S * N), "mean_nll": mean, "ppl": _ppl(mean)}
    full = N // bin_size
    if full >= 2 or (full >= 1 and S >= 2):
        chunks = nll[:, : full * bin_size].reshape(S * full, bin_size).mean(axis=1)
        _, low, high = bootstrap_interval(
            chunks.astype(np.float32), jax.random.key(seed), num_resamples=resamples, level=level
        )
        low, high = float(low), float(high)
        out.update(nll_low=low, nll_high=high, ppl_low=_ppl(low), ppl_high=_ppl(high))
    else:
        out.update(nll_low=None, nll_high=None, ppl_low=None, ppl_high=None)
    if first_eviction is not None and first_eviction < N:
        tail = nll[:, first_eviction:]
        m = float(tail.mean())
        out["after_eviction"] = {"num_predicted": int(tail.size), "mean_nll": m, "ppl": _ppl(m)}
    else:
        out["after_eviction"] = None
    if context is not None and 1 < context < N + 1:  # the first `context` tokens of each stream
        head = nll[:, : context - 1]
        m = float(head.mean())
        out["within_context"] = {"num_predicted": int(head.size), "mean_nll": m, "ppl": _ppl(m)}
    else:
        out["within_context"] = None
    out["curve"] = curve(nll, curve_bin or bin_size)
    return out


def curve(nll_SxN: np.ndarray, bin_size: int) -> dict:
    """Per bin of `bin_size` targets (the last may be shorter): tokens read at its end, the
    bin's perplexity and the cumulative one (means over streams too)."""
    S, N = nll_SxN.shape
    ends = list(range(bin_size, N, bin_size)) + [N]
    tokens, ppl_bin, ppl_cum = [], [], []
    start, total = 0, 0.0
    for end in ends:
        part = nll_SxN[:, start:end]
        total += float(part.sum())
        tokens.append(end + 1)  # targets 1 .. end: end + 1 tokens read
        ppl_bin.append(_ppl(float(part.mean())))
        ppl_cum.append(_ppl(total / (S * end)))
        start = end
    return {"tokens": tokens, "ppl_bin": ppl_bin, "ppl_cumulative": ppl_cum}
