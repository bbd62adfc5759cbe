"""Generation: `greedy_generate` (no KV cache: the full forward pass per token, a check that an
imported model speaks) and `generate` (a KV cache, greedy or sampled, optionally a sink cache
of bounded memory: `sinks_jax.streaming`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax.streaming import decode
from sinks_jax.streaming.policy import CachePolicy


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


def generate(
    model,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    sinks: int = 0,
    window: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    eos_id: int | None = None,
) -> list[int]:
    """The prompt followed by up to `max_new_tokens` tokens, read and written one token at a
    time through a KV cache (`sinks_jax.streaming.decode`); stops after `eos_id`.

    `window=None` keeps every token (a dense cache of prompt + new tokens). With `window=W` the
    cache keeps the first `sinks` tokens and the W most recent ones (StreamingLLM): memory is
    fixed at k + W slots per layer, so generation can run past the model's context.
    `temperature=0` is greedy; otherwise tokens are sampled from softmax(logits / temperature)
    with the PRNG seeded by `seed`. The prompt and the new tokens each run in one compiled
    scan.
    """
    prompt_ids = [int(i) for i in prompt_ids]
    if not prompt_ids or max_new_tokens < 1:
        raise ValueError(
            f"generate needs a non-empty prompt and max_new_tokens >= 1 (got "
            f"{len(prompt_ids)} prompt tokens, max_new_tokens={max_new_tokens})."
        )
    if temperature < 0:
        raise ValueError(f"generate: temperature={temperature} must be >= 0 (0: greedy).")
    policy = CachePolicy(sinks, window)
    total = len(prompt_ids) + max_new_tokens
    decode.check_positions(model.config, policy, total)
    graphdef, params = nnx.split(model)
    state = decode.init_state(model, policy, 1, max_len=total)
    new = _generate(
        graphdef,
        params,
        state,
        jnp.asarray(prompt_ids, jnp.int32)[None],
        jax.random.key(seed),
        policy,
        max_new_tokens,
        float(temperature),
    )
    out = list(prompt_ids)
    for token in np.asarray(new)[0].tolist():
        out.append(int(token))
        if token == eos_id:
            break
    return out


@functools.partial(jax.jit, static_argnames=("graphdef", "policy", "steps", "temperature"))
def _generate(graphdef, params, state, prompt_1xP, key, policy, steps, temperature):
    model = nnx.merge(graphdef, params)

    def read(state, token_B):
        logits_BxV, state = decode.step(model, state, token_B, policy)
        return state, logits_BxV

    state, logits_PxBxV = jax.lax.scan(read, state, prompt_1xP.T)

    def pick(logits_BxV, key):
        if temperature == 0.0:
            return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, logits_BxV / temperature, axis=-1).astype(jnp.int32)

    def write(carry, key):
        state, logits_BxV = carry
        token_B = pick(logits_BxV, key)
        logits_BxV, state = decode.step(model, state, token_B, policy)
        return (state, logits_BxV), token_B

    keys = jax.random.split(key, steps)
    _, tokens_NxB = jax.lax.scan(write, (state, logits_PxBxV[-1]), keys)
    return tokens_NxB.T
