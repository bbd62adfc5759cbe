"""Streaming with attention sinks: a rolling KV cache that keeps the first k tokens and the W
most recent ones (StreamingLLM), as pure functions over a model.

    policy   `CachePolicy(sinks, window)`, its positions (keys cached before RoPE, rotated by
             their position in the cache) and what each query sees
    layers   the model's layer taken apart for a cache (pre-RoPE projections, attention over
             explicit keys, the exact log-sum-exp merge, the rest of the layer)
    head     NLL from the final residual, by token chunks
    decode   token-by-token decoding with a ring-buffer cache (`lax.scan`), batched streams
    fast     all queries at once: windowed kernel + sink term, merged through the LSE
    recompute  the sliding window with re-computation (a fresh pass per target)
    summary  a run's numbers from per-token NLLs (mean, bootstrap interval, curves)
    grid, table, figures, texts   what the `stream` command asks for, prints, draws and reads

Imports run downwards: fast -> decode -> layers, head, policy -> sinks_jax.model. The
commands (`sinks-jax stream`, `sinks-jax generate`) live beside them in `command` and
`generate_command`, imported only when used. docs/streaming.md has the conventions and the
measurements.
"""

from sinks_jax.streaming.decode import DecodeState, decode_nll, init_state, step
from sinks_jax.streaming.fast import default_backend, fast_nll
from sinks_jax.streaming.policy import CachePolicy, LocalWindow
from sinks_jax.streaming.recompute import recompute_nll

__all__ = [
    "CachePolicy",
    "DecodeState",
    "LocalWindow",
    "decode_nll",
    "default_backend",
    "fast_nll",
    "init_state",
    "recompute_nll",
    "step",
]
