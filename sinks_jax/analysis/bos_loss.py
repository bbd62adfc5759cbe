"""Next-token loss with and without a leading `<bos>` on the same targets (paper Table 2).

For text tokens x_0 .. x_{T-1}, the model reads two inputs of T tokens:

    with <bos>   [<bos>, x_0, ..., x_{T-2}]     (position t predicts x_t)
    text only    [x_0, ..., x_{T-1}]            (position t predicts x_{t+1})

and both are scored on the same T - 1 targets x_1 .. x_{T-1}, each seeing the same text before
it: the only difference is the `<bos>`. A model trained with a `<bos>` fixed at position 0
relies on it, and its text-only loss is far higher (2.69 -> 7.56 nats in the paper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bos_layouts(text_NxT: jax.Array, bos_id: int) -> tuple[jax.Array, jax.Array]:
    """(`<bos>` + the first T-1 tokens, the T tokens) of each row, int32 `[N, T]` both."""
    text_NxT = jnp.asarray(text_NxT, jnp.int32)
    bos_Nx1 = jnp.full((text_NxT.shape[0], 1), bos_id, jnp.int32)
    return jnp.concatenate([bos_Nx1, text_NxT[:, :-1]], axis=1), text_NxT


def same_target_nll(
    logits_with_bos_NxTxV: jax.Array, logits_text_NxTxV: jax.Array, text_NxT: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Summed next-token loss (nats) over the targets x_1 .. x_{T-1} of each row: float32 `[N]`
    with `<bos>` and `[N]` text only, from the logits of the two `bos_layouts` inputs."""
    targets_NxTm1x1 = jnp.asarray(text_NxT, jnp.int32)[:, 1:, None]

    def nll_N(logits_NxTm1xV):
        logp = jax.nn.log_softmax(logits_NxTm1xV.astype(jnp.float32), axis=-1)
        return -jnp.take_along_axis(logp, targets_NxTm1x1, axis=-1)[..., 0].sum(axis=1)

    return nll_N(logits_with_bos_NxTxV[:, 1:]), nll_N(logits_text_NxTxV[:, :-1])


def same_target_hits(
    logits_with_bos_NxTxV: jax.Array, logits_text_NxTxV: jax.Array, text_NxT: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Top-1 hits (the argmax is the next token) over the targets x_1 .. x_{T-1} of each row:
    int32 `[N]` with `<bos>` and `[N]` text only, aligned as in `same_target_nll`."""
    targets_NxTm1 = jnp.asarray(text_NxT, jnp.int32)[:, 1:]

    def hits_N(logits_NxTm1xV):
        return jnp.sum(jnp.argmax(logits_NxTm1xV, axis=-1) == targets_NxTm1, axis=1)

    return hits_N(logits_with_bos_NxTxV[:, 1:]), hits_N(logits_text_NxTxV[:, :-1])
