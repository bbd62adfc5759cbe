"""The numbers of the report: sink statistics over many sequences, perturbation spread and
Jacobian sensitivity, representational collapse against length, loss with and without
`<bos>`, and sink statistics of one long sequence through a fused backend."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import analysis
from sinks_jax.analysis import prompts as builtin_prompts
from sinks_jax.analyze.inputs import choose_swap
from sinks_jax.model import Transformer, fused, sink_query_mask
from sinks_jax.model.surgery import received_attention_model, residual_stream_fn, with_backend
from sinks_jax.progress import progress, stage


def batch_statistics(
    model: Transformer, tokens_BxT: jax.Array, valid_BxT: jax.Array
) -> dict[str, jax.Array]:
    """Per-sequence sink and value statistics of one batch (padding excluded)."""
    cfg = model.config
    collect = ["sink_attn", "hidden", "value_norms"] + (
        ["attn_probs"] if cfg.attention == "xla" else []
    )
    _, aux = model(tokens_BxT, collect=tuple(collect))
    n_B = jnp.sum(valid_BxT, axis=1)
    w = valid_BxT[None, :, None, :]
    out = {
        # alpha_0 over the real queries that see key 0 (all of them, but past a local window).
        "scores_LxBxH": analysis.sink_scores_from_column(
            aux["sink_attn"],
            query_mask_BxT=(valid_BxT > 0) & sink_query_mask(cfg, tokens_BxT.shape[1]),
        ),
        "sink_vn_LxBxH": aux["value_norms"][..., 0],
        "rest_vn_LxBxH": jnp.sum(aux["value_norms"][..., 1:] * w[..., 1:], -1)
        / jnp.maximum(n_B - 1, 1)[None, :, None],
    }
    received = received_attention_model(model, aux["hidden"], valid_BxT)
    seen_by_T = jnp.maximum(n_B[:, None] - jnp.arange(tokens_BxT.shape[1])[None], 1)
    out["alpha_LxBxHxT"] = received * valid_BxT[None, :, None, :] / seen_by_T[None, :, None, :]
    out["rank_collapse_Lp1xB"] = analysis.rank_collapse(aux["hidden"])
    out["repr_collapse_Lp1xB"] = analysis.representational_collapse(aux["hidden"])
    if "attn_probs" in aux:
        ent = analysis.attention_entropy(aux["attn_probs"])
        out["entropy_LxBxH"] = jnp.sum(ent * w, -1) / n_B[None, :, None]
    return out


_batch_statistics_jit = nnx.jit(batch_statistics)  # one trace cache for every layout and call


def sink_report(
    model: Transformer,
    tokens_NxT: np.ndarray,
    valid_NxT: np.ndarray,
    eps_values: Sequence[float],
    batch_size: int,
    desc: str,
) -> dict[str, Any]:
    """Sink rates, scores, received attention, value norms and collapse over all sequences."""
    parts: list[dict[str, np.ndarray]] = []
    N = tokens_NxT.shape[0]
    for start in progress(range(0, N, batch_size), desc=desc, unit="batch", leave=False):
        tok, val = tokens_NxT[start : start + batch_size], valid_NxT[start : start + batch_size]
        pad = batch_size - tok.shape[0]  # pad the last batch to keep one compiled shape
        if pad:
            tok = np.concatenate([tok, np.repeat(tok[:1], pad, 0)])
            val = np.concatenate([val, np.repeat(val[:1], pad, 0)])
        res = jax.device_get(_batch_statistics_jit(model, jnp.asarray(tok), jnp.asarray(val)))
        keep = batch_size - pad
        parts.append({k: np.take(v, range(keep), axis=1) for k, v in res.items()})
    cat = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    scores = cat["scores_LxBxH"]
    full = valid_NxT.all(axis=1)  # collapse measures only on unpadded sequences
    out: dict[str, Any] = {
        "num_sequences": int(N),
        "sink_rate_percent": {
            f"{e:g}": 100 * float(analysis.sink_rate(scores, e)) for e in eps_values
        },
        "sink_rate_per_layer_percent": {
            f"{e:g}": (100 * np.asarray(analysis.sink_rate_per_layer(scores, e))).tolist()
            for e in eps_values
        },
        "sink_rate_per_head_percent": {
            f"{e:g}": (100 * np.asarray(analysis.sink_rate_per_head(scores, e))).tolist()
            for e in eps_values
        },
        "sink_score_mean_LxH": scores.mean(axis=1).tolist(),
        "sink_score_per_sequence_LxNxH": scores.tolist(),
        "received_alpha_mean_LxHxT": cat["alpha_LxBxHxT"].mean(axis=1).tolist(),
        "received_alpha_mean_T": cat["alpha_LxBxHxT"].mean(axis=(0, 1, 2)).tolist(),
        # alpha_0 two ways: sink column from the LSE vs the VJP through the backend.
        "received_vs_column_max_abs_diff": float(
            np.abs(cat["alpha_LxBxHxT"][..., 0] - scores).max()
        ),
        "value_norm_sink_LxH": cat["sink_vn_LxBxH"].mean(axis=1).tolist(),
        "value_norm_rest_LxH": cat["rest_vn_LxBxH"].mean(axis=1).tolist(),
        "rank_collapse_Lp1": (
            cat["rank_collapse_Lp1xB"][:, full].mean(axis=1).tolist() if full.any() else None
        ),
        "representational_collapse_Lp1": (
            cat["repr_collapse_Lp1xB"][:, full].mean(axis=1).tolist() if full.any() else None
        ),
    }
    if "entropy_LxBxH" in cat:
        out["attention_entropy_nats_LxH"] = cat["entropy_LxBxH"].mean(axis=1).tolist()
    return out


def collapse_vs_length(model: Transformer, hidden_fn, seq: list[int]) -> dict[str, Any]:
    """Both representational-collapse forms for prefixes of `seq` of growing length n.

    Causality lets one batch serve every n: row n holds `seq[:n] + [seq[n-1]] + seq[n+1:]`,
    whose position n is the last token of "the prefix with its last token repeated", while
    the plain prefix's last token is position n-1 of `seq` itself.
    """
    N = len(seq)
    lengths = sorted({round(float(x)) for x in np.geomspace(2, N - 1, 12)})
    rows = [seq[:n] + [seq[n - 1]] + seq[n + 1 :] for n in lengths]
    h_full = hidden_fn(model, jnp.asarray([seq], jnp.int32))[:, 0]  # [L+1, N, D]
    h_rep = hidden_fn(model, jnp.asarray(rows, jnp.int32))  # [L+1, R, N, D]
    idx = jnp.asarray(lengths)
    last_Lp1xRx1xD = h_full[:, idx - 1][:, :, None]
    rep_Lp1xRx1xD = h_rep[:, jnp.arange(len(lengths)), idx][:, :, None]
    last_two_Lp1xRx2xD = jnp.stack([h_full[:, idx - 2], h_full[:, idx - 1]], axis=2)
    return {
        "lengths": lengths,
        "repeat_last_token_Lp1xR": np.asarray(
            analysis.representational_collapse_repeat(last_Lp1xRx1xD, rep_Lp1xRx1xD)
        ).tolist(),
        "last_two_tokens_Lp1xR": np.asarray(
            analysis.representational_collapse(last_two_Lp1xRx2xD)
        ).tolist(),
    }


def spread_report(model: Transformer, tok: Any, bos_id: int | None, args) -> dict[str, Any]:
    """Perturbation spread with and without `<bos>`, Jacobian sensitivity and path bound."""
    text = args.spread_prompt or builtin_prompts.SHAKESPEARE
    old, new, base, swapped = choose_swap(tok, text, args.swap)
    n = min(args.spread_len, len(base))
    base, swapped = base[:n], swapped[:n]
    changed = [i for i in range(n) if base[i] != swapped[i]]
    if not changed:
        raise ValueError(
            f"--spread-len {args.spread_len}: the swapped word lies beyond the "
            f"first {n} tokens; raise --spread-len."
        )
    pos = changed[0]
    hidden_fn = nnx.jit(lambda m, t: m(t, collect=("hidden",))[1]["hidden"])

    def divergence(prefix):
        a = jnp.asarray([prefix + base], jnp.int32)
        b = jnp.asarray([prefix + swapped], jnp.int32)
        div = analysis.perturbation_divergence(hidden_fn(model, a), hidden_fn(model, b))
        return np.asarray(analysis.drop_prefix(div[:, 0], len(prefix)))

    out: dict[str, Any] = {
        "prompt": text,
        "old": old,
        "new": new,
        "num_text_tokens": n,
        "swap_position": pos,
        "changed_positions": changed,
    }
    with stage(f"perturbation spread ({n} tokens, token {pos} swapped)"):
        out["divergence_without_bos_Lp1xT"] = divergence([]).tolist()
        if bos_id is not None:
            out["divergence_with_bos_Lp1xT"] = divergence([bos_id]).tolist()

    out["token_labels"] = [tok.decode([t]) for t in base]
    prefix = [bos_id] if bos_id is not None else []
    with stage("representational collapse against length"):
        out["collapse_vs_length"] = collapse_vs_length(model, hidden_fn, prefix + base)
    out["collapse_vs_length"]["sequence"] = "with_bos" if prefix else "text_only"
    if args.skip_jacobian:
        return out
    out["jacobian"] = jacobian_report(model, hidden_fn, bos_id, base, args)
    return out


def jacobian_report(model: Transformer, hidden_fn, bos_id: int | None, base: list[int], args):
    """Jacobian sensitivity of the last token of the perturbation prompt to every source
    (exact, or estimated from --jacobian-directions random directions), and the path bound."""
    seq = ([bos_id] if bos_id is not None else []) + base
    tokens = jnp.asarray([seq], jnp.int32)
    target = len(seq) - 1
    layers = None if args.jacobian_layers == "all" else [-1]
    D = model.config.d_model
    K = getattr(args, "jacobian_directions", None)  # None: exact
    K = None if K is None or K >= D else K
    n_layers = (model.config.num_layers + 1) if layers is None else 1
    which = "every layer" if layers is None else "last layer"
    how = f"{D} directions, exact" if K is None else f"{K} of {D} directions, estimated"
    with stage(f"jacobian ({which}, {how}: {n_layers * (K or D)} backward passes)"):
        # The explicit backend in float32: full maps for the bound, a plain XLA graph that
        # vmap can batch (fused kernels may lack batching rules for their backward pass), and
        # derivatives not rounded to bfloat16.
        xla_model = with_backend(model, "xla", "float32")
        forward_fn, params = residual_stream_fn(xla_model)
        emb = hidden_fn(xla_model, tokens)[0, 0]  # [T, D]
        sens = jax.jit(
            functools.partial(
                analysis.jacobian_sensitivity,
                forward_fn,
                layers=layers,
                chunk_size=args.jacobian_chunk,
                num_directions=K,
            )
        )(params, emb, target)
        sens = np.asarray(sens)
    with stage("path bound"):
        probs = nnx.jit(lambda m, t: m(t, collect=("attn_probs",))[1]["attn_probs"])(
            xla_model, tokens
        )
        bound = np.asarray(analysis.path_bound(probs)[0, target])
    return {
        "sequence": "with_bos" if bos_id is not None else "text_only",
        "compute": "attention=xla, dtype=float32",
        "target": target,
        "layers": "all (0 = embeddings)" if layers is None else "last",
        "directions": D if K is None else K,
        "exact": K is None,
        "method": (
            "every output direction (exact)"
            if K is None
            else f"{K} random orthonormal output directions per layer (key 0): an unbiased "
            f"estimate of each squared norm, relative sd <= sqrt(2/{K}); exact with "
            "--jacobian-directions all"
        ),
        "sensitivity_NxT": sens.tolist(),
        "path_bound_T": bound.tolist(),
    }


def bos_loss_report(
    model: Transformer, token_lists: Sequence[Sequence[int]], bos_id: int, seq_len: int, batch: int
) -> dict[str, Any]:
    """Mean next-token loss (nats) and top-1 accuracy on the same targets with and without a
    leading `<bos>`.

    For text tokens x_0..x_{T-1}: "with_bos" reads [<bos>, x_0..x_{T-2}] and "text_only" reads
    [x_0..x_{T-1}]; both are scored on the targets x_1..x_{T-1}, each seeing the same text
    before it, so the only difference is the `<bos>`.
    """
    rows = [list(t[:seq_len]) for t in token_lists if len(t) >= seq_len]
    if not rows:
        raise ValueError(f"--loss-file: no text has {seq_len} tokens; lower --seq-len.")
    with_bos, x_NxT = analysis.bos_layouts(np.asarray(rows, np.int32), bos_id)

    @nnx.jit  # the model is an argument, not a closure: its weights must not become constants
    def losses(model, tokens_with_bos, tokens_text):
        logits_w, logits_t = model(tokens_with_bos)[0], model(tokens_text)[0]
        nll_w, nll_t = analysis.same_target_nll(logits_w, logits_t, tokens_text)
        hit_w, hit_t = analysis.same_target_hits(logits_w, logits_t, tokens_text)
        return nll_w.sum(), nll_t.sum(), hit_w.sum(), hit_t.sum()

    totals = np.zeros(4)
    for i in progress(range(0, len(rows), batch), desc="loss", unit="batch", leave=False):
        totals += np.asarray(losses(model, with_bos[i : i + batch], x_NxT[i : i + batch]), float)
    n = len(rows) * (seq_len - 1)
    return {
        "num_sequences": len(rows),
        "targets": n,
        "loss_with_bos": totals[0] / n,
        "loss_text_only": totals[1] / n,
        "top1_accuracy_with_bos": totals[2] / n,  # argmax of the next-token distribution
        "top1_accuracy_text_only": totals[3] / n,
    }


def long_context_report(
    model: Transformer,
    token_lists: Sequence[Sequence[int]],
    bos_id: int | None,
    length: int,
    backend: str | None,
    eps: Sequence[float],
) -> dict[str, Any]:
    """Sink statistics of one sequence of `length` tokens (texts joined, repeated if short)
    through a fused backend: per-(layer, head) first-token score, sink rate, the keys that
    receive the most attention (`top_received_attention_sum`: attention summed over the
    queries, then averaged over layers and heads), wall time and peak device memory."""
    gpu = jax.default_backend() == "gpu"
    backend = backend or ("cudnn" if gpu else "blockwise")
    dtype = "bfloat16" if backend == "cudnn" and model.config.dtype == "float32" else None
    fused_model = with_backend(model, backend, dtype)
    stream = [t for toks in token_lists for t in toks]
    if not stream:
        raise ValueError("--long-context: the texts hold no tokens.")
    prefix = [bos_id] if bos_id is not None else []
    body = (stream * (length // len(stream) + 1))[: length - len(prefix)]
    tokens = jnp.asarray([prefix + body], jnp.int32)

    @nnx.jit  # the model is an argument, not a closure: its weights must not become constants
    def stats(model, tokens):
        _, aux = model(tokens, collect=("sink_attn", "received_attn"))
        return aux["sink_attn"], aux["received_attn"].mean(axis=(0, 1, 2))

    start = time.time()
    sink_attn, received_T = jax.block_until_ready(stats(fused_model, tokens))
    seconds = time.time() - start
    start = time.time()
    jax.block_until_ready(stats(fused_model, tokens))  # compiled: the run time alone
    seconds_run = time.time() - start
    # Local layers: only the queries inside the window of key 0 can attend to it.
    visible_Lx1xT = sink_query_mask(model.config, length)
    scores_LxBxH = analysis.sink_scores_from_column(sink_attn, query_mask_BxT=visible_Lx1xT)
    top = jax.lax.top_k(received_T, 8)
    try:
        peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use")
    except Exception:  # CPU has no allocator statistics
        peak = None
    return {
        "seq_len": length,
        "backend": backend,
        "local_layers": list(model.config.local_layers),
        "queries_scored_per_layer": np.asarray(visible_Lx1xT.sum(axis=(1, 2))).tolist(),
        "with_bos": bos_id is not None,
        "sink_scores_LxH": np.asarray(scores_LxBxH[:, 0]).tolist(),
        "sink_rate_percent": {
            str(e): 100 * float(analysis.sink_rate(scores_LxBxH, e)) for e in eps
        },
        "sink_score_mean": float(scores_LxBxH.mean()),
        "top_received_keys": np.asarray(top[1]).tolist(),
        "top_received_attention_sum": np.asarray(top[0]).tolist(),
        "cudnn_lse_dtype": fused.cudnn_lse_dtype() if backend == "cudnn" else None,
        "seconds_incl_compile": round(seconds, 3),
        "seconds_compiled": round(seconds_run, 3),
        "peak_device_bytes": peak,
    }
