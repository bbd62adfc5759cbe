"""A sink cache's policy and the positions it gives (StreamingLLM's rule), as pure functions.

A policy `(sinks k, window W)`: at step t the current token attends to the first k tokens of
the stream and to the W most recent ones, itself included (keys j < k or t - W < j <= t), so
the cache holds k + W keys. `window=None` is dense attention (nothing is evicted).

Positions (RoPE): keys are cached *before* rotation and rotated by their position inside the
cache, the query by the last one. Before the cache is full (t < k + W) nothing has been
evicted and the positions are the true ones, so every target up to token k + W equals dense
attention; from t = k + W on, the sinks sit at positions 0 .. k-1, the window's keys at
k .. k+W-1 and the query at k + W - 1:

    query_position(t)      = min(t, k + W - 1)
    key_position(j, t)     = j                              if j < k
                           = query_position(t) - (t - j)    otherwise

so a window key keeps its true distance t - j to the query and a sink key is k + W - 1 - j
away. StreamingLLM's own script evicts after each step and then attends over the cache and
the current token: its `start_size=k, recent_size=R` is `CachePolicy(k, R + 1)` here.

Local layers (Gemma 2/3's sliding-window layers) keep the model's own window S and the true
positions: query t sees keys t - S < j <= t (`LocalWindow`).
"""

from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CachePolicy:
    """Keep the first `sinks` tokens and the `window` most recent ones (None: all tokens)."""

    sinks: int = 0
    window: int | None = None

    def __post_init__(self):
        k, w = self.sinks, self.window
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"CachePolicy: sinks={k!r} must be an int >= 0.")
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise ValueError(
                f"CachePolicy: window={w!r} must be an int >= 1 (the current token is always "
                "in its own window) or None for dense attention; sinks + window >= 1."
            )

    @property
    def dense(self) -> bool:
        return self.window is None

    @property
    def size(self) -> int | None:
        """Keys in the cache, k + W (None: dense)."""
        return None if self.window is None else self.sinks + self.window

    @property
    def name(self) -> str:
        """ "K+W" (StreamingLLM's notation with W counting the current token) or "dense"."""
        return "dense" if self.window is None else f"{self.sinks}+{self.window}"

    @property
    def first_eviction(self) -> int | None:
        """The first query that misses a token (k + W); None for dense."""
        return self.size

    @classmethod
    def parse(cls, text: str) -> CachePolicy:
        """ "K+W" (e.g. "4+1020") or "dense"."""
        text = str(text).strip()
        if text == "dense":
            return cls()
        m = re.fullmatch(r"(\d+)\+(\d+)", text)
        if not m:
            raise ValueError(
                f"cache {text!r}: write SINKS+WINDOW with two integers (e.g. 4+1020), or dense."
            )
        return cls(int(m.group(1)), int(m.group(2)))


@dataclasses.dataclass(frozen=True)
class LocalWindow:
    """A local layer's own sliding window: query t sees keys t - size < j <= t."""

    size: int


def query_position(t, policy: CachePolicy):
    """Position of the query of step t (int or int array)."""
    if policy.window is None:
        return t
    return jnp.minimum(t, policy.sinks + policy.window - 1)


def key_position(j, t, policy: CachePolicy):
    """Position of key j in the cache of step t (only meaningful where `visible`)."""
    if policy.window is None:
        return j
    return jnp.where(j < policy.sinks, j, query_position(t, policy) - (t - j))


def visible(j, t, policy: CachePolicy):
    """Whether key j is in the cache of step t (j <= t and j < k or t - W < j)."""
    seen = j <= t
    if policy.window is None:
        return seen
    return seen & ((j < policy.sinks) | (j > t - policy.window))


def visible_count(t, policy: CachePolicy):
    """How many keys query t sees: min(t + 1, k + W) (t + 1 when dense)."""
    if policy.window is None:
        return t + 1
    return jnp.minimum(t + 1, policy.sinks + policy.window)
