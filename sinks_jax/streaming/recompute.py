"""The sliding window *with re-computation* (StreamingLLM's strongest baseline): every target
is predicted by a fresh forward pass over the W tokens before it, at positions 0 .. W-1.

O(T W^2) attention and O(T W) layer work: W times the cost of a cache, and the quality a
window of W tokens gives when nothing is cached. Targets before the first full window are
those of the dense forward pass over the first W tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax.model.attention import soft_cap
from sinks_jax.streaming import head as head_lib


@functools.partial(jax.jit, static_argnames=("graphdef", "last_only"))
def _windows_nll(graphdef, params, windows_NxW, targets_NxW, last_only: bool):
    """NLL of each window's positions [N, W] (or of its last position only, [N, 1])."""
    model = nnx.merge(graphdef, params)
    (h_NxWxD, head), _ = model(windows_NxW, features=True)
    if last_only:
        h_NxWxD, targets_NxW = h_NxWxD[:, -1:], targets_NxW[:, -1:]
    logits = jnp.einsum("btd,dv->btv", h_NxWxD, head, preferred_element_type=jnp.float32)
    logits = soft_cap(logits, model.config.final_logit_softcap)
    return head_lib.nll_from_logits(logits, targets_NxW)


def recompute_nll(model, tokens_BxT, window: int, *, batch: int = 16, progress=None) -> jax.Array:
    """float32 [B, T-1]: target t+1 scored by the model run on tokens max(0, t-W+1) .. t."""
    tokens = np.asarray(tokens_BxT, np.int32)
    B, T = tokens.shape
    if T < 2:
        raise ValueError(f"streaming: a stream needs at least 2 tokens to score, not {T}.")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"streaming: recompute window={window!r} must be an int >= 1.")
    W = min(window, T - 1)
    graphdef, params = nnx.split(model)
    # Targets 1 .. W-1: the dense pass over the first W tokens.
    head_nll = _windows_nll(graphdef, params, tokens[:, :W], tokens[:, 1 : W + 1], False)
    out = np.zeros((B, T - 1), np.float32)
    out[:, : W - 1] = np.asarray(head_nll)[:, : W - 1]
    starts = np.arange(0, T - W)  # window [s, s+W) predicts token s + W
    pairs = [(b, s) for b in range(B) for s in starts]
    offsets = np.arange(W)
    for i in range(0, len(pairs), batch):
        group = pairs[i : i + batch]
        n = len(group)
        group = group + [group[-1]] * (batch - n)  # one compiled shape
        rows = np.stack([tokens[b, s + offsets] for b, s in group])
        tgts = np.stack([tokens[b, s + 1 + offsets] for b, s in group])
        nll = np.asarray(_windows_nll(graphdef, params, rows, tgts, True))[:n, 0]
        for (b, s), value in zip(group[:n], nll):
            out[b, s + W - 1] = value
        if progress is not None:
            progress(min(W - 1 + (i + n) // B, T - 1))
    return jnp.asarray(out)
