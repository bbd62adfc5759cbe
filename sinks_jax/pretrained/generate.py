"""Greedy decoding, to check that an imported model speaks (no KV cache: a demo, not a server)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def greedy_generate(
    model, prompt_ids: Sequence[int], max_new_tokens: int, eos_id: int | None = None
) -> list[int]:
    """The prompt followed by up to `max_new_tokens` argmax tokens (stops after `eos_id`).

    Every step runs the full causal forward pass over one fixed-length buffer (so it compiles
    once); tokens after the current position do not affect its logits.
    """
    prompt_ids = [int(i) for i in prompt_ids]
    if not prompt_ids or max_new_tokens < 1:
        raise ValueError(
            f"greedy_generate needs a non-empty prompt and max_new_tokens >= 1 (got "
            f"{len(prompt_ids)} prompt tokens, max_new_tokens={max_new_tokens})."
        )
    total = len(prompt_ids) + max_new_tokens
    tokens_1xT = np.zeros((1, total), dtype=np.int32)
    tokens_1xT[0, : len(prompt_ids)] = prompt_ids

    @nnx.jit
    def next_token(model, tokens_1xT, t):
        logits_1xTxV, _ = model(tokens_1xT)
        return jnp.argmax(jax.lax.dynamic_index_in_dim(logits_1xTxV[0], t, keepdims=False))

    out = list(prompt_ids)
    for t in range(len(prompt_ids), total):
        token = int(next_token(model, jnp.asarray(tokens_1xT), t - 1))
        tokens_1xT[0, t] = token
        out.append(token)
        if token == eos_id:
            break
    return out
