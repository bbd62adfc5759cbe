"""Negative log-likelihoods from the final residual, by token chunks (the logits of a large
vocabulary are never all in memory at once)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attention_lib


def logits(model, h_BxTxD: jax.Array) -> jax.Array:
    """float32 logits [B, T, V] of the final residual (final norm, head, soft-cap)."""
    cfg = model.config
    h = model.final_norm(h_BxTxD)
    head = model.head_matrix().astype(h.dtype)
    out = jnp.einsum("btd,dv->btv", h, head, preferred_element_type=jnp.float32)
    return attention_lib.soft_cap(out, cfg.final_logit_softcap)


def nll_from_logits(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """float32 [B, T]: -log softmax(logits)[target]."""
    lse = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    picked = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return lse - picked


def token_nll(model, h_BxTxD: jax.Array, targets_BxT: jax.Array, max_logits: int | None = None):
    """float32 [B, T] NLL of `targets` (token t's prediction scored against targets[t]), the
    head applied to sub-chunks of tokens so that at most ~`max_logits` logits live at once
    (default: 2^28 on a GPU, where large matmuls are what is fast, 2^25 elsewhere)."""
    if max_logits is None:
        max_logits = 1 << (28 if jax.default_backend() == "gpu" else 25)
    B, T, D = h_BxTxD.shape
    V = model.config.vocab_size
    sub = T
    while sub > 1 and B * sub * V > max_logits and sub % 2 == 0:
        sub //= 2
    if sub == T:
        return nll_from_logits(logits(model, h_BxTxD), targets_BxT)
    n = T // sub
    h_NxBxSxD = h_BxTxD.reshape(B, n, sub, D).transpose(1, 0, 2, 3)
    t_NxBxS = targets_BxT.reshape(B, n, sub).transpose(1, 0, 2)
    nll_NxBxS = jax.lax.map(
        lambda a: nll_from_logits(logits(model, a[0]), a[1]), (h_NxBxSxD, t_NxBxS)
    )
    return nll_NxBxS.transpose(1, 0, 2).reshape(B, T)
