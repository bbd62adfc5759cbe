"""Token-by-token decoding with a ring-buffer KV cache of k + W slots (`lax.scan` over tokens).

    state = init_state(model, policy, batch)              # empty caches, t = 0
    logits_BxV, state = step(model, state, tokens_B)       # one token of every stream
    nll_BxN = decode_nll(model, tokens_BxT, policy)        # targets 1 .. T-1, by segments

The cache holds keys *before* RoPE (and values) of every layer, for a batch of independent
streams that advance together. Slots: the first k tokens stay in slots 0 .. k-1; token t >= k
goes to slot k + (t - k) mod W, so the ring always holds the W most recent tokens. Every step
rotates the cached keys by their position in the cache and the query by the last one
(`policy.key_position`, `policy.query_position`), so positions never exceed k + W - 1.

Layer kinds:
  global layers       the policy's cache (k + W slots; T slots when dense);
  local layers        (Gemma 2/3's sliding-window layers) their own window S, S slots, true
                      positions: the model's own function, untouched by the policy;
  learned positions   (GPT-2) positions enter once, added to the token's embedding, and cannot
                      be re-rotated later: token t enters at its in-cache position
                      `query_position(t)` = min(t, k + W - 1) and its keys and values keep it.
                      After the first eviction every new token enters at position k + W - 1, so
                      the window's order is known only through what each token saw when it
                      entered; the table is never read past k + W - 1.

A step reads every slot (masked where empty or evicted): O(k + W) work per token and layer,
constant memory in the stream's length.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model.rope import layer_inv_freq
from sinks_jax.streaming import head as head_lib
from sinks_jax.streaming import layers as layers_lib
from sinks_jax.streaming.policy import CachePolicy, key_position, query_position
from sinks_jax.streaming.policy import visible as policy_visible


class Groups(NamedTuple):
    """Static layout: which layers are local, each layer's index inside its kind's cache."""

    local_L: tuple[bool, ...]
    index_L: tuple[int, ...]
    num_global: int
    num_local: int


def groups(cfg) -> Groups:
    local = tuple(cfg.local_layers)
    index, counts = [], [0, 0]
    for is_local in local:
        index.append(counts[is_local])
        counts[is_local] += 1
    return Groups(local, tuple(index), counts[0], counts[1])


class DecodeState(NamedTuple):
    """The caches of a batch of streams after `t` tokens.

    k_global/v_global [Lg, B, Sg, K, hd] and slot_global [Sg] (the token each slot holds, -1:
    empty); the same for the local layers (Sl = their window); `t` int32 scalar."""

    t: jax.Array
    k_global: jax.Array
    v_global: jax.Array
    slot_global: jax.Array
    k_local: jax.Array
    v_local: jax.Array
    slot_local: jax.Array


def cache_slots(cfg, policy: CachePolicy, max_len: int | None = None) -> tuple[int, int]:
    """(global slots, local slots): k + W and S, capped at `max_len` (never more than the
    stream's tokens; a dense cache needs `max_len`)."""
    if policy.dense and max_len is None:
        raise ValueError("streaming: a dense cache (window=None) needs max_len, its token count.")
    g = policy.size if not policy.dense else max_len
    s = cfg.sliding_window if any(cfg.local_layers) else 0
    if max_len is not None:
        g, s = min(g, max_len), min(s, max_len)
    return g, s


def init_state(model, policy: CachePolicy, batch: int, max_len: int | None = None) -> DecodeState:
    """Empty caches for `batch` streams (`max_len`: an upper bound on the stream's tokens)."""
    cfg = model.config
    layers_lib.check_model(cfg)
    g = groups(cfg)
    sg, sl = cache_slots(cfg, policy, max_len)
    dt = jnp.dtype(cfg.dtype)
    K, hd = cfg.kv_heads, cfg.head_size
    zeros = lambda L, S: jnp.zeros((L, batch, S, K, hd), dt)
    return DecodeState(
        t=jnp.zeros((), jnp.int32),
        k_global=zeros(g.num_global, sg),
        v_global=zeros(g.num_global, sg),
        slot_global=jnp.full((sg,), -1, jnp.int32),
        k_local=zeros(g.num_local, sl),
        v_local=zeros(g.num_local, sl),
        slot_local=jnp.full((sl,), -1, jnp.int32),
    )


def _global_slot(t, policy: CachePolicy, num_slots: int):
    if policy.dense:
        return t
    k, w = policy.sinks, policy.window
    return jnp.where(t < k, t, k + (t - k) % w) if num_slots >= k + w else t


def step(model, state: DecodeState, tokens_B: jax.Array, policy: CachePolicy):
    """One token of every stream: (float32 logits [B, V] of the next token, new state)."""
    cfg = model.config
    g = groups(cfg)
    t = state.t
    sg, sl = state.slot_global.shape[0], state.slot_local.shape[0]
    slot_g = _global_slot(t, policy, sg)
    idx_g = state.slot_global.at[slot_g].set(t)
    vis_g = (idx_g >= 0) & policy_visible(idx_g, t, policy)
    pq_g = query_position(t, policy)
    pk_g = key_position(idx_g, t, policy)
    if sl:
        slot_l = t % sl
        idx_l = state.slot_local.at[slot_l].set(t)
        vis_l = (idx_l >= 0) & (idx_l > t - cfg.sliding_window)
    else:
        slot_l, idx_l, vis_l = 0, state.slot_local, jnp.zeros((0,), bool)

    x = model.embed(tokens_B[:, None], jnp.broadcast_to(pq_g, (tokens_B.shape[0], 1)))
    graphdef, layer_state = nnx.split(model.layers)
    mixed = len(set(g.local_L)) > 1
    sigmoid = cfg.attention_variant == "sigmoid"

    def attend(layer, q, k, v, caches, local: bool, gi):
        kc_g, vc_g, kc_l, vc_l = caches
        if local:
            kc_l = kc_l.at[gi, :, slot_l].set(k[:, 0])
            vc_l = vc_l.at[gi, :, slot_l].set(v[:, 0])
            keys, values, vis, pq, pk = kc_l[gi], vc_l[gi], vis_l, t, idx_l
        else:
            kc_g = kc_g.at[gi, :, slot_g].set(k[:, 0])
            vc_g = vc_g.at[gi, :, slot_g].set(v[:, 0])
            keys, values, vis, pq, pk = kc_g[gi], vc_g[gi], vis_g, pq_g, pk_g
        freqs = layer_inv_freq(cfg, local)
        q_rot = layers_lib.rotate(cfg, q, pq, freqs)
        k_rot = layers_lib.rotate(cfg, keys, pk[None, :], freqs)
        bias = None
        if sigmoid:
            n = jnp.maximum(vis.sum(), 1).astype(jnp.float32)
            bias = jnp.full((q.shape[0], 1), -jnp.log(n))
        out, lse = layers_lib.attend_keys(
            q_rot,
            k_rot,
            values,
            vis[None, :],
            scale=layer.scale,
            softcap=cfg.attn_logit_softcap,
            sigmoid_bias_BxT=bias,
        )
        out = layers_lib.with_variant(layer, out, lse, q_rot)
        return out, (kc_g, vc_g, kc_l, vc_l)

    def layer_step(carry, xs):
        x, caches = carry
        layer_params, local, gi = xs
        layer = nnx.merge(graphdef, layer_params)
        q, k, v = layers_lib.project(layer, x)
        if mixed:
            out, caches = jax.lax.cond(
                local,
                lambda c: attend(layer, q, k, v, c, True, gi),
                lambda c: attend(layer, q, k, v, c, False, gi),
                caches,
            )
        else:
            out, caches = attend(layer, q, k, v, caches, g.local_L[0], gi)
        return (layers_lib.layer_output(layer, x, out), caches), None

    caches = (state.k_global, state.v_global, state.k_local, state.v_local)
    xs = (layer_state, jnp.asarray(g.local_L), jnp.asarray(g.index_L, jnp.int32))
    (x, caches), _ = jax.lax.scan(layer_step, (x, caches), xs)
    logits_BxV = head_lib.logits(model, x)[:, 0]
    new = DecodeState(t + 1, caches[0], caches[1], idx_g, caches[2], caches[3], idx_l)
    return logits_BxV, new


@functools.partial(jax.jit, static_argnames=("graphdef", "policy"))
def _decode_segment(graphdef, params, state: DecodeState, tokens_BxN, targets_BxN, policy):
    model = nnx.merge(graphdef, params)

    def body(state, xs):
        tok_B, tgt_B = xs
        logits_BxV, state = step(model, state, tok_B, policy)
        return state, head_lib.nll_from_logits(logits_BxV, tgt_B)

    state, nll_NxB = jax.lax.scan(body, state, (tokens_BxN.T, targets_BxN.T))
    return state, nll_NxB.T


def decode_nll(
    model, tokens_BxT, policy: CachePolicy, *, segment: int = 256, progress=None
) -> jax.Array:
    """float32 [B, T-1]: the NLL of tokens 1 .. T-1 of each stream, read one token at a time.

    Runs `segment` tokens per compiled scan (the last segment is padded; padding comes after
    every real token, so it changes nothing); `progress(n)` is told the tokens read."""
    tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
    B, T = tokens_BxT.shape
    if T < 2:
        raise ValueError(f"streaming: a stream needs at least 2 tokens to score, not {T}.")
    check_positions(model.config, policy, T)
    n = T - 1
    segment = max(1, min(segment, n))
    pad = (-n) % segment
    inputs = jnp.pad(tokens_BxT[:, :-1], ((0, 0), (0, pad)))
    targets = jnp.pad(tokens_BxT[:, 1:], ((0, 0), (0, pad)))
    graphdef, params = nnx.split(model)
    state = init_state(model, policy, B, max_len=n + pad)
    out = []
    for s in range(0, n + pad, segment):
        state, nll = _decode_segment(
            graphdef, params, state, inputs[:, s : s + segment], targets[:, s : s + segment], policy
        )
        out.append(nll)
        if progress is not None:
            jax.block_until_ready(nll)  # report what is done, not what is queued
            progress(min(s + segment, n))
    return jnp.concatenate(out, axis=1)[:, :n]


def check_positions(cfg, policy: CachePolicy, num_tokens: int) -> None:
    """Learned absolute positions: the table must cover every position the policy gives."""
    if cfg.position_type != "learned":
        return
    top = num_tokens - 1 if policy.dense else min(num_tokens, policy.size) - 1
    if top >= cfg.max_position_embeddings:
        raise ValueError(
            f"streaming: this model's learned position table has {cfg.max_position_embeddings} "
            f"entries, and cache {policy.name} over {num_tokens} tokens needs position {top}; "
            f"use a cache with sinks + window <= {cfg.max_position_embeddings}."
        )
