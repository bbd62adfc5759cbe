"""All queries of a long stream at once: the window through a windowed attention kernel, the
sinks as a separate term with their in-cache positions, merged through the log-sum-exp.

    nll_BxN = fast_nll(model, tokens_BxT, policy, backend="blockwise")   # targets 1 .. T-1

What query t sees under `CachePolicy(k, W)` splits into two disjoint key sets:
  window  t - W < j <= t: true relative distances t - j, exactly what a sliding-window kernel
          computes (`xla`/`blockwise` on any platform, `cudnn` on a GPU in bf16);
  sinks   j < k with j <= t - W (the sinks the window does not already hold): the key at
          position j, the query at `query_position(t)` = min(t, k + W - 1), so the distance is
          min(t, k + W - 1) - j, as in the cache. A [T, k] term, computed explicitly.
Their (out, lse) merge exactly (`layers.merge`), then the variant's slot, as in the layer.

The stream is read in chunks of C tokens (a `lax` loop per chunk, compiled once), carrying
each layer's pre-RoPE keys and values of the last P = max(W, S) - 1 tokens (S: the local
layers' window) and of the k sinks: memory is constant in the stream's length and the work
is O(T (W + k)) (the kernel also runs over the P carried keys as queries whose outputs are
dropped: (P + C) / C of the window work). Inside a chunk the kernel sees positions 0 ..
P + C - 1, which keep every distance and keep RoPE's angles small, as in the cache; dense
attention (`window=None`) reads the stream as one chunk. Local layers keep their own window
and the true positions (`policy.LocalWindow`); learned absolute positions enter at
`query_position(t)`, as in `decode`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model import backends as backends_lib
from sinks_jax.model.rope import layer_inv_freq
from sinks_jax.streaming import head as head_lib
from sinks_jax.streaming import layers as layers_lib
from sinks_jax.streaming.decode import check_positions, groups
from sinks_jax.streaming.policy import CachePolicy, query_position, visible_count


def default_backend(cfg) -> str:
    """The windowed kernel for this model here: cuDNN on a GPU in bf16/fp16, else the model's
    own backend when it is a fused one that runs here with windows, else blockwise (any
    platform, O(T) memory). Never `xla` unless asked: it builds [T, T] score matrices."""
    platform = jax.default_backend()
    sigmoid = cfg.attention_variant == "sigmoid"
    needs = dict(
        platform=platform, dtype=cfg.dtype, window=True, softcap=cfg.attn_logit_softcap is not None
    )
    ok = lambda name: (
        not backends_lib.problems(name, **needs)
        and (not sigmoid or backends_lib.BACKENDS[name].sigmoid)
    )
    for name in ("cudnn", cfg.attention):
        if name != "xla" and ok(name):
            return name
    return "blockwise"


def tail_length(cfg, policy: CachePolicy) -> int:
    """P: the tokens before a chunk that its queries can still see through a window."""
    p = 0 if policy.dense else policy.window - 1
    if any(cfg.local_layers):
        p = max(p, cfg.sliding_window - 1)
    return p


def default_chunk(cfg, policy: CachePolicy) -> int:
    """C: at least 4 (P + 1) (8 (P + 1) on a GPU: the P carried keys run as dropped queries
    through the kernel) and 1024 tokens, a multiple of 256, and at least k."""
    p = tail_length(cfg, policy)
    factor = 8 if jax.default_backend() == "gpu" else 4
    c = max(factor * (p + 1), 1024, policy.sinks)
    return -(-c // 256) * 256


def _run_chunk(model, policy, backend, block_size, tokens_BxC, targets_BxC, start, tail, sinks):
    """One chunk: (nll [B, C], new tail, sinks). `tail` = (k, v) [L, B, P, K, hd] or None (the
    first chunk); `sinks` = (k, v) [L, B, k, K, hd] or None (taken from this chunk)."""
    cfg = model.config
    g = groups(cfg)
    B, C = tokens_BxC.shape
    k_sinks = policy.sinks
    P = tail_length(cfg, policy)
    P_in = 0 if tail is None else tail[0].shape[2]
    t_C = start + jnp.arange(C, dtype=jnp.int32)  # true token indices of the chunk
    u = jnp.arange(P_in + C, dtype=jnp.int32)  # positions inside the chunk's kernel call
    pq_C = query_position(t_C, policy)
    x = model.embed(tokens_BxC, jnp.broadcast_to(pq_C, (B, C)))
    graphdef, layer_state = nnx.split(model.layers)
    mixed = len(set(g.local_L)) > 1
    sigmoid = cfg.attention_variant == "sigmoid"
    window_g = policy.window
    # Sinks outside the window: key j < k with j <= t - W (never for dense).
    if k_sinks and not policy.dense:
        j_k = jnp.arange(k_sinks, dtype=jnp.int32)
        sink_vis_CxK = j_k[None, :] <= t_C[:, None] - window_g
    else:
        sink_vis_CxK = None

    def attend(layer, q, k_all, v_all, sk, sv, local: bool):
        freqs = layer_inv_freq(cfg, local)
        window = cfg.sliding_window if local else window_g
        q_all = jnp.concatenate([jnp.zeros((B, P_in) + q.shape[2:], q.dtype), q], axis=1)
        q_rot = layers_lib.rotate(cfg, q_all, u[None], freqs)
        k_rot = layers_lib.rotate(cfg, k_all, u[None], freqs)
        if sigmoid:
            n_C = jnp.minimum(t_C + 1, cfg.sliding_window) if local else visible_count(t_C, policy)
            bias_C = -jnp.log(n_C.astype(jnp.float32))
            bias = jnp.broadcast_to(jnp.pad(bias_C, (P_in, 0))[None], (B, P_in + C))
        else:
            bias = None
        out, lse = layers_lib.window_attention(
            q_rot,
            k_rot,
            v_all,
            backend=backend,
            window=window,
            scale=layer.scale,
            softcap=cfg.attn_logit_softcap,
            block_size=block_size,
            sigmoid_bias_BxT=bias,
        )
        parts = [(out[:, P_in:], lse[:, :, P_in:])]
        # The query as the cache rotates it: in-cache position (global), true (local).
        q_step = layers_lib.rotate(cfg, q, (t_C if local else pq_C)[None], freqs)
        if sink_vis_CxK is not None and not local:
            j_k = jnp.arange(k_sinks, dtype=jnp.int32)
            sk_rot = layers_lib.rotate(cfg, sk, j_k[None], freqs)
            parts.append(
                layers_lib.attend_keys(
                    q_step,
                    sk_rot,
                    sv,
                    sink_vis_CxK,
                    scale=layer.scale,
                    softcap=cfg.attn_logit_softcap,
                    sigmoid_bias_BxT=None if bias is None else bias[:, P_in:],
                )
            )
        out, lse = layers_lib.merge(parts, sigmoid) if len(parts) > 1 else parts[0]
        return layers_lib.with_variant(layer, out, lse, q_step)

    def layer_step(x, xs):
        layer_params, local, tail_kv, sink_kv = xs
        layer = nnx.merge(graphdef, layer_params)
        q, k, v = layers_lib.project(layer, x)
        k_all = k if tail_kv is None else jnp.concatenate([tail_kv[0], k], axis=1)
        v_all = v if tail_kv is None else jnp.concatenate([tail_kv[1], v], axis=1)
        sk, sv = (k[:, :k_sinks], v[:, :k_sinks]) if sink_kv is None else sink_kv
        if mixed:
            out = jax.lax.cond(
                local,
                lambda: attend(layer, q, k_all, v_all, sk, sv, True),
                lambda: attend(layer, q, k_all, v_all, sk, sv, False),
            )
        else:
            out = attend(layer, q, k_all, v_all, sk, sv, g.local_L[0])
        new_tail = (k_all[:, k_all.shape[1] - P :], v_all[:, v_all.shape[1] - P :])
        return layers_lib.layer_output(layer, x, out), (new_tail, (sk, sv))

    xs = (layer_state, jnp.asarray(g.local_L), tail, sinks)
    x, (new_tail, new_sinks) = jax.lax.scan(layer_step, x, xs)
    nll = head_lib.token_nll(model, x, targets_BxC)
    return nll, new_tail, new_sinks


@functools.partial(jax.jit, static_argnames=("graphdef", "policy", "backend", "block_size"))
def _first_chunk(graphdef, params, tokens, targets, policy, backend, block_size):
    model = nnx.merge(graphdef, params)
    return _run_chunk(model, policy, backend, block_size, tokens, targets, 0, None, None)


@functools.partial(jax.jit, static_argnames=("graphdef", "policy", "backend", "block_size"))
def _next_chunk(graphdef, params, tokens, targets, start, tail, sinks, policy, backend, block_size):
    model = nnx.merge(graphdef, params)
    return _run_chunk(model, policy, backend, block_size, tokens, targets, start, tail, sinks)


def fast_nll(
    model,
    tokens_BxT,
    policy: CachePolicy,
    *,
    backend: str | None = None,
    chunk: int | None = None,
    block_size: int | None = None,
    progress=None,
) -> jax.Array:
    """float32 [B, T-1]: the NLL of tokens 1 .. T-1 of each stream under the cache `policy`,
    all queries at once (by chunks of `chunk` tokens; dense: one chunk). Equal to
    `decode.decode_nll` up to float rounding. `progress(n)` is told the tokens read."""
    cfg = model.config
    layers_lib.check_model(cfg)
    tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
    T = tokens_BxT.shape[1]
    if T < 2:
        raise ValueError(f"streaming: a stream needs at least 2 tokens to score, not {T}.")
    check_positions(cfg, policy, T)
    backend = backend or default_backend(cfg)
    P = tail_length(cfg, policy)
    C = chunk or default_chunk(cfg, policy)
    if policy.dense or C >= T or P >= T - 1:  # one chunk holds the stream
        C = T
    if C < T and C < max(P, policy.sinks, 1):
        raise ValueError(
            f"streaming: chunk={C} must hold at least the {P} tokens a window reaches back and "
            f"the {policy.sinks} sinks; use chunk >= {max(P, policy.sinks, 1)}."
        )
    if block_size is None:
        block_size = cfg.block_size
    n = -(-T // C) * C
    tokens = jnp.pad(tokens_BxT, ((0, 0), (0, n - T)))
    targets = jnp.pad(tokens_BxT[:, 1:], ((0, 0), (0, n - T + 1)))
    graphdef, params = nnx.split(model)
    statics = dict(policy=policy, backend=backend, block_size=block_size)
    nll, tail, sinks = _first_chunk(graphdef, params, tokens[:, :C], targets[:, :C], **statics)
    out = [nll]
    if progress is not None:
        jax.block_until_ready(nll)  # report what is done, not what is queued
        progress(min(C, T - 1))
    for s in range(C, n, C):
        nll, tail, sinks = _next_chunk(
            graphdef,
            params,
            tokens[:, s : s + C],
            targets[:, s : s + C],
            jnp.int32(s),
            tail,
            sinks,
            **statics,
        )
        out.append(nll)
        if progress is not None:
            jax.block_until_ready(nll)  # report what is done, not what is queued
            progress(min(s + C, T - 1))
    return jnp.concatenate(out, axis=1)[:, : T - 1]
