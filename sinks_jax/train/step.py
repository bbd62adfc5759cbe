"""Jitted train and eval steps over a functional model (graphdef + a pure dict of parameters).

A batch is a dict of int32 arrays `tokens, targets, segment_ids, positions, loss_mask`. The
train step takes them shaped `[k, B_micro, T]`: it scans over the `k` micro-batches, sums the
masked cross-entropy and its gradient, divides by the number of loss tokens of the whole
step, and applies one optimizer update. So k micro-steps give exactly the update of one step
on the concatenated batch.

`make_train_step(..., sink_stats=True)` builds a second variant whose forward pass also
collects `sink_attn` (attention of every query to its sink key, recovered from the
attention's log-sum-exp: it works with the fused backends) and returns, per layer and head,
the mean over sequences and over the queries that can see their sink key (`[L, H]`) and
the sink rates at eps 0.3 and 0.8, all at the full training context. The sink key is key 0
or each document's first key (`model.sink_key`). It also returns `noop_mass` `[L, H]`, the
mean over real queries of where the head's no-op went under `model.attention_variant` (the
`noop_mass` statistic of sinks_jax.model; 0 for softmax). Call it only on the steps that log
them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sinks_jax import analysis
from sinks_jax.model import ModelConfig, Transformer, fused, sink_query_mask
from sinks_jax.records.scores import SINK_EPS
from sinks_jax.train.chunked_loss import chunked_ce_sum

Batch = dict[str, jax.Array]
Params = dict[str, Any]


def apply_model(
    graphdef: nnx.GraphDef,
    params: Params,
    batch: Batch,
    *,
    use_segments: bool,
    collect: tuple[str, ...] = (),
    features: bool = False,
) -> tuple[Any, dict[str, jax.Array]]:
    """Logits `[B, T, V]` float32 and `aux` for a batch (`features`: the final hidden states
    and the head instead of the logits, see `Transformer.__call__`).

    `use_segments` passes `segment_ids` to attention (intra-document masking); without it the
    mask is causal over the whole window (padding is always at the end of a row, so causal
    masking already hides it from real tokens).
    """
    model = nnx.merge(graphdef, params)
    # Embeddings through the class method: the same computation as `model.embed`, written
    # so that it does not depend on the instance attribute of the same name.
    emb_BxTxD = Transformer.embed(model, batch["tokens"], batch["positions"])
    return model(
        None,
        batch["segment_ids"] if use_segments else None,
        batch["positions"],
        collect=collect,
        embeddings_BxTxD=emb_BxTxD,
        features=features,
    )


def on_mesh(fn: Callable, sharding: Any) -> Callable:
    """`fn` traced with `sharding`'s mesh as the abstract mesh in context, so that the fused
    attention kernels run per device on their own rows (`model/shard.py`)."""
    mesh = getattr(sharding, "mesh", None)
    if mesh is None:
        return fn

    @functools.wraps(fn)
    def traced_on_mesh(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    return traced_on_mesh


def masked_ce_sum(logits_BxTxV: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(sum of next-token cross-entropy in nats over loss tokens, number of loss tokens)."""
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxTxV.astype(jnp.float32), batch["targets"]
    )
    mask_BxT = batch["loss_mask"].astype(jnp.float32)
    return jnp.sum(ce_BxT * mask_BxT), jnp.sum(mask_BxT)


def sink_queries(
    segment_ids_BxT: jax.Array, model_cfg: ModelConfig, use_segments: bool
) -> jax.Array:
    """`[L, B, T]` bool: per layer, the real (non-padding) queries that can see their sink key.

    Under intra-document masking with `sink_key="window"` the queries of later documents
    cannot see key 0 (unless `global_first_key`); with `sink_key="segment"` every query sees
    its own document's first key. Without segments (causal) every query sees key 0, except in
    a local (sliding-window) layer, where only the first `sliding_window` queries do.
    """
    valid_BxT = segment_ids_BxT > 0
    segments = segment_ids_BxT if use_segments else None
    visible_LxBxT = sink_query_mask(model_cfg, segment_ids_BxT.shape[1], segments)
    return valid_BxT[None] & visible_LxBxT


def sink_summary(sink_attn_LxBxHxT: jax.Array, queries_LxBxT: jax.Array) -> dict[str, jax.Array]:
    """In-step sink statistics: `sink_attn` `[L, H]` (a row's score is the mean attention to
    the sink key over the row's queries that count, `queries_LxBxT` from `sink_queries`; then
    the mean over rows) and the sink rates (fraction of heads per row with score > eps,
    averaged over rows)."""
    scores_LxBxH = analysis.sink_scores_from_column(sink_attn_LxBxHxT, query_mask_BxT=queries_LxBxT)
    out = {"sink_attn": scores_LxBxH.mean(axis=1)}
    for eps in SINK_EPS:
        out[f"sink_rate_{eps}"] = analysis.sink_rate(scores_LxBxH, eps)
    return out


def noop_summary(noop_LxBxHxT: jax.Array, valid_BxT: jax.Array) -> jax.Array:
    """`[L, H]` mean of the `noop_mass` statistic over the real (non-padding) queries."""
    w_1xBx1xT = valid_BxT[None, :, None, :].astype(jnp.float32)
    total_LxH = jnp.sum(noop_LxBxHxT * w_1xBx1xT, axis=(1, 3))
    return total_LxH / jnp.maximum(jnp.sum(w_1xBx1xT, axis=(1, 3)), 1.0)


def global_norm(tree: Any) -> jax.Array:
    """sqrt of the sum of squares of every leaf (float32)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def micro_grads(
    params: Params,
    batch_BxT: Batch,
    *,
    graphdef: nnx.GraphDef,
    use_segments: bool,
    sink_stats: bool,
) -> tuple[Params, jax.Array, jax.Array, dict[str, jax.Array]]:
    """One micro-batch: (gradient of the summed CE, summed CE, loss tokens, sink stats)."""
    collect = ("sink_attn", "noop_mass") if sink_stats else ()

    def loss_fn(p):
        model_cfg = nnx.merge(graphdef, p).config
        chunk = model_cfg.head_chunk
        out, aux = apply_model(
            graphdef, p, batch_BxT, use_segments=use_segments, collect=collect, features=chunk > 0
        )
        if chunk:  # head and CE fused over token chunks: no [B, T, V] logits.
            (h_BxTxD, head_DxV), mask_BxT = out, batch_BxT["loss_mask"].astype(jnp.float32)
            total = chunked_ce_sum(h_BxTxD, head_DxV, batch_BxT["targets"], mask_BxT, chunk)
            count = jnp.sum(mask_BxT)
        else:
            total, count = masked_ce_sum(out, batch_BxT)
        stats = {}
        if sink_stats:
            queries_LxBxT = sink_queries(batch_BxT["segment_ids"], model_cfg, use_segments)
            stats = sink_summary(aux["sink_attn"], queries_LxBxT)
            stats["noop_mass"] = noop_summary(aux["noop_mass"], batch_BxT["segment_ids"] > 0)
        return total, (count, stats)

    (total, (count, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, total, count, stats


def apply_gradients(
    params: Params,
    opt_state: Any,
    g_sum: Params,
    l_sum: jax.Array,
    c_sum: jax.Array,
    *,
    tx: optax.GradientTransformation,
) -> tuple[Params, Any, dict[str, jax.Array]]:
    """The optimizer update from summed gradients and losses (divided by the loss tokens)."""
    count = jnp.maximum(c_sum, 1.0)
    grads = jax.tree.map(lambda g: g / count, g_sum)
    loss, grad_norm = l_sum / count, global_norm(grads)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    # A non-finite loss or gradient leaves the state untouched, so that the loop can save the
    # last good state (the inputs are donated: they would be lost otherwise) and stop.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep, new_params, params)
    opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "loss_tokens": c_sum, "finite": finite}
    return params, opt_state, metrics


def train_step(
    params: Params,
    opt_state: Any,
    batch_KxBxT: Batch,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    use_segments: bool,
    sink_stats: bool,
) -> tuple[Params, Any, dict[str, jax.Array]]:
    """One optimizer step over `k` micro-batches as one pure function (a scan over them).

    `make_train_step` computes the same update; for k > 1 it runs the micro-batches as
    separate jitted calls, which XLA executes faster than a loop around the layer scan.
    """
    kw = dict(graphdef=graphdef, use_segments=use_segments, sink_stats=sink_stats)

    def micro_step(carry, mb):
        g_sum, l_sum, c_sum = carry
        grads, total, count, stats = micro_grads(params, mb, **kw)
        return (jax.tree.map(jnp.add, g_sum, grads), l_sum + total, c_sum + count), stats

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    (g_sum, l_sum, c_sum), stats_K = jax.lax.scan(micro_step, init, batch_KxBxT)
    params, opt_state, metrics = apply_gradients(params, opt_state, g_sum, l_sum, c_sum, tx=tx)
    metrics.update(jax.tree.map(lambda x: x.mean(axis=0), stats_K))
    return params, opt_state, metrics


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    param_shardings: Any,
    opt_shardings: Any,
    batch_sharding: Any,
    replicated: Any,
    use_segments: bool,
    sink_stats: bool = False,
) -> Callable[[Params, Any, Batch], tuple[Params, Any, dict[str, jax.Array]]]:
    """`step(params, opt_state, batch_KxBxT) -> (params, opt_state, metrics)` with explicit
    shardings; the parameter and optimizer-state buffers are donated. The metrics also say
    which cuDNN path ran, if any (`kernel_record`).

    With one micro-batch the whole step is one jitted call. With k > 1, micro-batch i is a
    jitted call that adds its gradients into donated accumulators, and a last call applies
    the update: the same arithmetic as `train_step`, without a loop around the layer scan,
    which XLA ran slower on GPU (BENCHMARKS.md).
    """
    kw = dict(graphdef=graphdef, use_segments=use_segments, sink_stats=sink_stats)

    def whole_step(params, opt_state, batch):
        return train_step(params, opt_state, batch, tx=tx, **kw)

    whole = jax.jit(
        on_mesh(whole_step, batch_sharding),
        in_shardings=(param_shardings, opt_shardings, batch_sharding),
        out_shardings=(param_shardings, opt_shardings, replicated),
        donate_argnums=(0, 1),
    )

    def micro(params, batch_KxBxT, i):
        mb = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), batch_KxBxT)
        return micro_grads(params, mb, **kw)

    def accumulate(acc, params, batch_KxBxT, i):
        add = lambda a, b: jax.tree.map(jnp.add, a, b)
        return add(acc, micro(params, batch_KxBxT, i))

    acc_shardings = (param_shardings, replicated, replicated, replicated)
    first_jit = jax.jit(
        on_mesh(micro, batch_sharding),
        in_shardings=(param_shardings, batch_sharding, replicated),
        out_shardings=acc_shardings,
    )
    accumulate_jit = jax.jit(
        on_mesh(accumulate, batch_sharding),
        in_shardings=(acc_shardings, param_shardings, batch_sharding, replicated),
        out_shardings=acc_shardings,
        donate_argnums=(0,),
    )

    def apply(params, opt_state, acc, k):
        g_sum, l_sum, c_sum, s_sum = acc
        params, opt_state, metrics = apply_gradients(params, opt_state, g_sum, l_sum, c_sum, tx=tx)
        metrics.update(jax.tree.map(lambda x: x / k, s_sum))
        return params, opt_state, metrics

    apply_jit = jax.jit(
        apply,
        static_argnums=(3,),
        in_shardings=(param_shardings, opt_shardings, acc_shardings),
        out_shardings=(param_shardings, opt_shardings, replicated),
        # Only params and optimizer state: no output has the accumulators' layout, so XLA
        # could not reuse their buffers (it warned "donated buffers were not usable").
        donate_argnums=(0, 1),
    )

    def run(params, opt_state, batch_KxBxT):
        k = jax.tree.leaves(batch_KxBxT)[0].shape[0]
        if k == 1:
            return whole(params, opt_state, batch_KxBxT)
        acc = first_jit(params, batch_KxBxT, jnp.int32(0))
        for i in range(1, k):
            acc = accumulate_jit(acc, params, batch_KxBxT, jnp.int32(i))
        return apply_jit(params, opt_state, acc, k)

    def step(params, opt_state, batch_KxBxT):
        params, opt_state, metrics = run(params, opt_state, batch_KxBxT)
        return params, opt_state, {**metrics, **kernel_record()}

    return step


def kernel_record() -> dict[str, str]:
    """`{"cudnn_lse_dtype": ...}` once a cuDNN attention was traced (which cuDNN path ran:
    "float32" from the cuDNN layer, the output dtype from the public fallback), else {}."""
    dtype = fused.cudnn_lse_dtype()
    return {} if dtype is None else {"cudnn_lse_dtype": dtype}


def make_eval_step(
    graphdef: nnx.GraphDef,
    *,
    param_shardings: Any,
    batch_sharding: Any,
    replicated: Any,
    use_segments: bool,
) -> Callable[[Params, Batch], tuple[jax.Array, jax.Array]]:
    """`eval(params, batch_BxT) -> (sum of CE in nats, number of loss tokens)`, jitted."""

    def body(params, batch):
        logits, _ = apply_model(graphdef, params, batch, use_segments=use_segments)
        return masked_ce_sum(logits, batch)

    return jax.jit(
        on_mesh(body, batch_sharding),
        in_shardings=(param_shardings, batch_sharding),
        out_shardings=(replicated, replicated),
    )


def bos_eval(
    graphdef: nnx.GraphDef, params: Params, with_bos_NxT: jax.Array, text_NxT: jax.Array
) -> dict[str, jax.Array]:
    """Held-out documents read twice, `<bos>` + text and text only (`analysis.bos_layouts`;
    one document per row, causal, positions 0..T-1):

      scores_bos, scores_nobos  [L, N, H]  Gu's sink score of key 0, from the model's sink_attn
      nll_bos, nll_nobos        [N]        summed next-token loss on the same T - 1 targets
                                           (`analysis.same_target_nll`)
    """
    out, logits = {}, {}
    for name, tokens_NxT in (("bos", with_bos_NxT), ("nobos", text_NxT)):
        logits[name], out[f"scores_{name}"] = _held_out_pass(graphdef, params, tokens_NxT)
    out["nll_bos"], out["nll_nobos"] = analysis.same_target_nll(
        logits["bos"], logits["nobos"], text_NxT
    )
    return out


def sink_score_eval(graphdef: nnx.GraphDef, params: Params, tokens_NxT: jax.Array) -> jax.Array:
    """`[L, N, H]` Gu's sink score of key 0 on held-out rows, as `bos_eval` reads it: one
    forward pass that stops at the final hidden states (no output head, no loss)."""
    _, scores_LxNxH = _held_out_pass(graphdef, params, tokens_NxT, logits=False)
    return scores_LxNxH


def _held_out_pass(
    graphdef: nnx.GraphDef, params: Params, tokens_NxT: jax.Array, logits: bool = True
) -> tuple[jax.Array | None, jax.Array]:
    """(logits, or None without `logits`; `[L, N, H]` sink scores) of rows read as one
    document each, causal, positions 0..T-1."""
    N, T = tokens_NxT.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (N, T))
    batch = {"tokens": tokens_NxT, "positions": positions, "segment_ids": None}
    out, aux = apply_model(
        graphdef, params, batch, use_segments=False, collect=("sink_attn",), features=not logits
    )
    return (out if logits else None), analysis.sink_scores_from_column(aux["sink_attn"])


def spread_eval(
    graphdef: nnx.GraphDef, params: Params, tokens_NxT: jax.Array, swapped_NxT: jax.Array
) -> jax.Array:
    """`[L+1, N, T]` relative divergence of the residual stream (embeddings, then each layer)
    when `tokens` are read as `swapped` (one token changed per row; one document per row,
    causal): ||h - h'|| / ||h|| (`analysis.perturbation_divergence`, `relative_divergence`)."""
    N, T = tokens_NxT.shape
    both_2NxT = jnp.concatenate([tokens_NxT, swapped_NxT], axis=0)
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (2 * N, T))
    batch = {"tokens": both_2NxT, "positions": positions, "segment_ids": None}
    _, aux = apply_model(graphdef, params, batch, use_segments=False, collect=("hidden",))
    hidden_a, hidden_b = aux["hidden"][:, :N], aux["hidden"][:, N:]
    return analysis.relative_divergence(
        analysis.perturbation_divergence(hidden_a, hidden_b), hidden_a
    )


def make_replicated_eval(
    fn: Callable,
    graphdef: nnx.GraphDef,
    *,
    param_shardings: Any,
    replicated: Any,
    num_token_arrays: int = 2,
) -> Callable:
    """`fn(graphdef, params, *tokens)` (`bos_eval`, `spread_eval`: two token arrays;
    `sink_score_eval`: one) jitted with explicit shardings: `evaluate(params, *tokens)`, small
    token arrays and results replicated."""

    def body(params, *tokens):
        return fn(graphdef, params, *tokens)

    return jax.jit(
        body,
        in_shardings=(param_shardings, *[replicated] * num_token_arrays),
        out_shardings=replicated,
    )
