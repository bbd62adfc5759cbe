"""`sinks-jax analyze`: sink, perturbation-spread and Jacobian report on a model.

    sinks-jax analyze --workdir runs/ctx512 --out reports/ctx512
    sinks-jax analyze --hf path/to/hf_dir --prompts prompts.jsonl --seq-len 64 --eps 0.3 0.8
    sinks-jax analyze --init-tiny --out /tmp/report          # random tiny model (smoke test)

Writes `report.json` (every number and the settings that produced it) and PNG figures:
sink-score heatmap, sink rate per layer, perturbation spread with and without `<bos>`,
Jacobian sensitivity beside the path bound, value norms of the sink token vs the rest.

Sequences: "with_bos" is `<bos>` followed by the first T-1 prompt tokens; "text_only" is the
first T prompt tokens. Prompts shorter than T are skipped (`--short skip`, the default) or
padded at the end (`--short pad`); padding is excluded from every statistic (causal attention
never lets a real query see a later pad token).

Prompts: `--prompts FILE`, `--prompts-source SPEC`, or by default the run's own held-out
documents with `--workdir` and the built-in English paragraphs otherwise; `settings.prompts`
in report.json (and the printed summary) says which were used.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import analysis, plots
from sinks_jax.analysis import prompts as builtin_prompts
from sinks_jax.data import tokenizers
from sinks_jax.model import ModelConfig, Transformer, sink_query_mask
from sinks_jax.model import fused
from sinks_jax.model.transformer import layer_inv_freq
from sinks_jax.progress import progress

# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sinks-jax analyze",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a training run's workdir (latest checkpoint is used)")
    src.add_argument("--hf", help="a Hugging Face checkpoint folder (config.json, safetensors)")
    src.add_argument(
        "--init-hf-config",
        help="a randomly initialised model of a Hugging Face shape: a config.json path, or "
        "'llama-3.1-8b' (bf16; tokens from --tokenizer, default byte)",
    )
    src.add_argument(
        "--init-tiny",
        action="store_true",
        help="a freshly initialised tiny model (byte vocabulary): smoke tests",
    )
    prm = p.add_mutually_exclusive_group()
    prm.add_argument(
        "--prompts",
        help="prompt file: .txt (one prompt per line) or .jsonl with a 'text' field; "
        "default: with --workdir the run's held-out documents (--prompts-source run), "
        "otherwise the built-in set of 10 paragraphs",
    )
    prm.add_argument(
        "--prompts-source",
        help="draw prompts from a data source spec (e.g. synthetic:bigram_backcopy, "
        "text:GLOB), its 'valid' split; 'run' = the --workdir run's source",
    )
    p.add_argument(
        "--num-prompts",
        type=int,
        default=170,
        help="prompts drawn with --prompts-source (default 170, as the paper)",
    )
    p.add_argument("--seq-len", type=int, default=64, help="tokens per sequence T (default 64)")
    p.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[0.3, 0.8],
        help="sink-rate thresholds (default 0.3 0.8)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument(
        "--tokenizer",
        default="byte",
        help="tokenizer spec: 'byte' (default), 'sp:PATH.model' or "
        "'hf:PATH/tokenizer.json'; with --workdir the run's own tokenizer is "
        "used, with --hf the checkpoint's",
    )
    p.add_argument(
        "--short",
        choices=("skip", "pad"),
        default="skip",
        help="prompts shorter than T: skip them (default) or pad at the end",
    )
    p.add_argument(
        "--spread-len",
        type=int,
        default=128,
        help="text tokens of the perturbation prompt (default 128)",
    )
    p.add_argument(
        "--spread-prompt",
        default=None,
        help="perturbation prompt (default: the Shakespeare paragraph; with "
        "--prompts-source, the first drawn prompt)",
    )
    p.add_argument(
        "--swap",
        default=None,
        help="OLD=NEW: words to swap in the perturbation prompt (same tokenised "
        "length); @POS: replace the token at text position POS by the next "
        "token id. Default: greatest=best or a same-length synonym; with "
        "--prompts-source, @(n/2)",
    )
    p.add_argument(
        "--jacobian-layers",
        choices=("last", "all"),
        default="last",
        help="hidden layers whose Jacobian is measured (default: last)",
    )
    p.add_argument(
        "--jacobian-chunk",
        type=int,
        default=64,
        help="output directions per backward batch (lower it if memory is short)",
    )
    p.add_argument(
        "--skip-jacobian",
        action="store_true",
        help="skip the Jacobian (D backward passes; slow on large models)",
    )
    p.add_argument(
        "--no-bos", action="store_true", help="the tokenizer has no <bos>: analyse text only"
    )
    p.add_argument(
        "--loss-file",
        help="text file (.txt one text per line, or .jsonl 'text'): next-token loss with and "
        "without <bos> on the same targets (the paper's Table 2 evaluation)",
    )
    p.add_argument(
        "--long-context",
        type=int,
        nargs="+",
        default=[],
        help="also measure sinks at each of these many tokens (the prompts joined) through "
        "a fused backend, with time and peak memory",
    )
    p.add_argument(
        "--long-context-only",
        action="store_true",
        help="with --long-context: skip the T-token report and the figures (report.json holds "
        "the settings and the long-context results)",
    )
    p.add_argument(
        "--long-backend",
        default=None,
        help="fused backend for --long-context (default: cudnn on GPU, blockwise elsewhere)",
    )
    p.add_argument("--out", required=True, help="output folder for report.json and figures")
    p.add_argument("--seed", type=int, default=0, help="init seed for --init-tiny")
    return p


# --------------------------------------------------------------------------- tokenizers


def load_tokenizer(spec: Any) -> Any:
    """A tokenizer from its spec (`byte`, `sp:PATH.model`, `hf:PATH/tokenizer.json`).

    Any object with `encode(str) -> list[int]`, `decode`, `vocab_size`, `bos_id`, `pad_id`
    (e.g. the one `sinks_jax.hf.load` returns) is passed through.
    """
    if not isinstance(spec, str):
        return spec
    return tokenizers.get_tokenizer(spec)


# --------------------------------------------------------------------------- inputs


def load_prompts(path: str | None) -> list[str]:
    """Prompts from a .txt (one per non-empty line) or .jsonl ('text' field) file, or built-ins."""
    if path is None:
        return list(builtin_prompts.DEFAULT_PROMPTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts {path!r}: no such file.")
    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if path.endswith(".jsonl"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e}).") from e
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{n}: each JSON line needs a string 'text' field.")
                texts.append(record["text"])
            else:
                texts.append(line)
    if not texts:
        raise ValueError(
            f"--prompts {path!r} holds no prompts (empty or blank lines only); "
            "write one prompt per line, or omit --prompts for the built-in set."
        )
    return texts


def prompts_from_source(spec: str, num: int, min_tokens: int, tok: Any) -> list[list[int]]:
    """Token ids of the first `num` documents of at least `min_tokens` tokens of a source's
    'valid' split (`prepared:DIR` corpora are read as stored, without re-tokenising)."""
    from sinks_jax.data import document_tokens  # only needed here

    token_lists: list[list[int]] = []
    seen = 0
    for ids in document_tokens(spec, tok, "valid"):
        seen += 1
        if len(ids) >= min_tokens:
            token_lists.append([int(t) for t in ids])
        if len(token_lists) == num or seen >= 100 * num:
            break
    if not token_lists:
        raise ValueError(
            f"--prompts-source {spec!r}: no document of at least {min_tokens} "
            f"tokens among the first {seen}; use --short pad."
        )
    return token_lists


def make_sequences(
    token_lists: Sequence[Sequence[int]],
    seq_len: int,
    *,
    bos_id: int | None,
    pad_id: int,
    short: str,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """int32 tokens `[N, T]`, float valid mask `[N, T]`, and the indices of the kept prompts.

    With `bos_id`, each row is `<bos>` + the first T-1 prompt tokens; otherwise the first T.
    """
    need = seq_len - (1 if bos_id is not None else 0)
    rows, masks, kept = [], [], []
    for idx, toks in enumerate(token_lists):
        toks = list(toks[:need])
        if len(toks) < need and short == "skip":
            continue
        prefix = [bos_id] if bos_id is not None else []
        row = prefix + toks
        masks.append([1.0] * len(row) + [0.0] * (seq_len - len(row)))
        rows.append(row + [pad_id] * (seq_len - len(row)))
        kept.append(idx)
    return (
        np.asarray(rows, np.int32).reshape(-1, seq_len),
        np.asarray(masks, np.float32).reshape(-1, seq_len),
        kept,
    )


# --------------------------------------------------------------------------- model access


class Loaded(NamedTuple):
    model: Transformer
    tokenizer: Any
    tokenizer_spec: str  # the tokenizer actually used (the run's or checkpoint's, or --tokenizer)
    description: str
    run_config: dict | None  # the training config with --workdir


def load_model(args: argparse.Namespace) -> Loaded:
    """The model and its tokenizer from --workdir, --hf, --init-hf-config or --init-tiny."""
    if args.init_tiny:
        tok = load_tokenizer(args.tokenizer)
        cfg = ModelConfig(
            vocab_size=tok.vocab_size,
            num_layers=2,
            d_model=32,
            num_heads=4,
            num_kv_heads=2,
            d_ff=64,
            attention="xla",
        )
        model = Transformer(cfg, rngs=nnx.Rngs(args.seed))
        return Loaded(model, tok, args.tokenizer, f"tiny random init (seed {args.seed})", None)
    if args.init_hf_config:
        from sinks_jax import hf

        if args.init_hf_config.lower() == "llama-3.1-8b":
            hf_config = hf.LLAMA_3_1_8B
        elif os.path.isfile(args.init_hf_config):
            with open(args.init_hf_config) as f:
                hf_config = json.load(f)
        else:
            raise FileNotFoundError(
                f"--init-hf-config {args.init_hf_config!r}: not a file; give a config.json "
                "path or 'llama-3.1-8b'."
            )
        dtype = "bfloat16" if jax.default_backend() == "gpu" else "float32"
        model = hf.random_model(hf_config, seed=args.seed, dtype=dtype, attention="xla")
        desc = f"random init of {args.init_hf_config}"
        return Loaded(model, load_tokenizer(args.tokenizer), args.tokenizer, desc, None)
    if args.hf:
        try:
            from sinks_jax import hf
        except ImportError as e:
            raise RuntimeError(
                f"--hf needs sinks_jax.hf, which could not be imported ({e})."
            ) from e
        model, tok = hf.load(args.hf)
        if tok is None and args.tokenizer == "byte":
            raise FileNotFoundError(
                f"--hf {args.hf!r}: no tokenizer.json in the folder; pass "
                "the model's tokenizer with --tokenizer hf:PATH/tokenizer.json."
            )
        desc = f"hf:{os.path.abspath(args.hf)}"
        if tok is None:
            return Loaded(model, load_tokenizer(args.tokenizer), args.tokenizer, desc, None)
        path = os.path.abspath(args.hf)
        if path.endswith(".gguf"):  # the tokenizer the GGUF file's metadata describes
            spec = f"gguf:{path}"
        else:
            spec = f"hf:{os.path.join(path, 'tokenizer.json')}"
        return Loaded(model, tok, spec, desc, None)
    try:
        from sinks_jax.train import checkpoint
    except ImportError as e:
        raise RuntimeError(
            f"--workdir needs sinks_jax.train.checkpoint, which could not be imported ({e})."
        ) from e
    if not os.path.isdir(args.workdir):
        raise FileNotFoundError(f"--workdir {args.workdir!r}: no such folder.")
    model, info = checkpoint.load_model(args.workdir)
    spec = _tokenizer_spec(info) or args.tokenizer
    desc = f"workdir:{os.path.abspath(args.workdir)}"
    return Loaded(model, load_tokenizer(spec), spec, desc, info)


def _tokenizer_spec(info: Any) -> str | None:
    """The tokenizer a training config names (`data.tokenizer`), if any."""
    try:
        return str(info["data"]["tokenizer"])
    except (KeyError, TypeError, IndexError):
        data = getattr(info, "data", None)
        return getattr(data, "tokenizer", None)


def _run_source(run_config: dict) -> str:
    """The data source a training config names (`data.source`)."""
    try:
        return str(run_config["data"]["source"])
    except (KeyError, TypeError):
        raise ValueError(
            "--workdir: the run's config.json names no data.source to draw held-out prompts "
            "from; pass --prompts FILE or --prompts-source SPEC."
        ) from None


def with_backend(model: Transformer, backend: str, dtype: str | None = None) -> Transformer:
    """The same parameters under another attention backend (e.g. "xla" for full maps) and,
    optionally, another compute dtype."""
    cfg = model.config
    dtype = dtype or cfg.dtype
    if cfg.attention == backend and cfg.dtype == dtype:
        return model
    abstract = nnx.eval_shape(
        lambda: Transformer(cfg.replace(attention=backend, dtype=dtype), rngs=nnx.Rngs(0))
    )
    graphdef, _ = nnx.split(abstract)
    return nnx.merge(graphdef, nnx.state(model))


def residual_stream_fn(model: Transformer):
    """`(forward_fn, params)`: `forward_fn(params, emb_BxTxD) -> hidden [L+1, B, T, D]`.

    Differentiable in the embeddings (the model's own `hidden` statistic is stop-gradient).
    """
    graphdef, params = nnx.split(model)

    def forward_fn(params, emb_BxTxD):
        return nnx.merge(graphdef, params).residual_stream(emb_BxTxD)

    return forward_fn, params


def received_attention_model(
    model: Transformer, hidden_Lp1xBxTxD: jax.Array, valid_BxT: jax.Array
) -> jax.Array:
    """`[L, B, H, T]` attention each key receives from the valid queries, layer by layer.

    Recomputes every layer's q, k, v from its input (`hidden[l]`) and takes one VJP through
    the model's own attention backend, so no T x T map is built on fused backends.
    """
    cfg = model.config
    B, T = valid_BxT.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    graphdef, layer_state = nnx.split(model.layers)

    def per_layer(args):
        x_BxTxD, state, local = args  # local: the layer's sliding-window flag.
        layer = nnx.merge(graphdef, state)
        q, k, v = layer.qkv(x_BxTxD, positions, layer_inv_freq(cfg, local))

        def attend(q, k, v):  # the layer's own attention (window, soft-cap, backend).
            return layer.attend(q, k, v, None, local)

        return analysis.received_attention_from_qkv(q, k, v, attend, valid_BxT)

    local_L = jnp.asarray(cfg.local_layers)
    return jax.lax.map(per_layer, (hidden_Lp1xBxTxD[:-1], layer_state, local_L))


# --------------------------------------------------------------------------- loss and long context


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
    for i in progress(range(0, len(rows), batch), desc="loss", unit="batch"):
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


# --------------------------------------------------------------------------- measurements


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


def choose_swap(tok: Any, text: str, swap: str | None) -> tuple[str, str, list[int], list[int]]:
    """`(old, new, tokens, swapped_tokens)` with equal tokenised lengths."""
    if swap and swap.startswith("@"):
        base = tok.encode(text)
        try:
            pos = int(swap[1:])
        except ValueError:
            raise ValueError(f"--swap {swap!r}: write @POS with an integer position.") from None
        if not 0 <= pos < len(base):
            raise ValueError(f"--swap {swap!r}: position outside the prompt's {len(base)} tokens.")
        swapped = list(base)
        swapped[pos] = (base[pos] + 1) % tok.vocab_size
        specials = {getattr(tok, n, None) for n in ("bos_id", "eos_id", "pad_id")}
        while swapped[pos] in specials or swapped[pos] == base[pos]:
            swapped[pos] = (swapped[pos] + 1) % tok.vocab_size
        return f"token {base[pos]} @{pos}", f"token {swapped[pos]}", base, swapped
    if swap:
        if "=" not in swap:
            raise ValueError(f"--swap {swap!r}: write OLD=NEW, e.g. --swap greatest=best.")
        old, new = swap.split("=", 1)
        candidates = [new]
    else:
        old, candidates = builtin_prompts.SWAP_WORD, list(builtin_prompts.SWAP_CANDIDATES)
    if old not in text:
        raise ValueError(f"--swap: word {old!r} does not occur in the perturbation prompt.")
    base = tok.encode(text)
    lengths = {}
    for new in candidates:
        swapped = tok.encode(text.replace(old, new, 1))
        if len(swapped) == len(base) and swapped != base:
            return old, new, base, swapped
        lengths[new] = len(swapped)
    raise ValueError(
        f"--swap: no replacement for {old!r} keeps the tokenised length "
        f"{len(base)} (got {lengths}); pass --swap {old}=WORD with a word of the "
        "same token count."
    )


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
        "divergence_without_bos_Lp1xT": divergence([]).tolist(),
    }
    if bos_id is not None:
        out["divergence_with_bos_Lp1xT"] = divergence([bos_id]).tolist()

    out["token_labels"] = [tok.decode([t]) for t in base]
    prefix = [bos_id] if bos_id is not None else []
    out["collapse_vs_length"] = collapse_vs_length(model, hidden_fn, prefix + base)
    out["collapse_vs_length"]["sequence"] = "with_bos" if prefix else "text_only"
    if args.skip_jacobian:
        return out
    # Jacobian sensitivity of the last token to every source, and the path bound beside it.
    seq = ([bos_id] if bos_id is not None else []) + base
    tokens = jnp.asarray([seq], jnp.int32)
    # The explicit backend in float32: full maps for the bound, a plain XLA graph that vmap can
    # batch (fused kernels may lack batching rules for their backward pass), and derivatives
    # not rounded to bfloat16.
    xla_model = with_backend(model, "xla", "float32")
    forward_fn, params = residual_stream_fn(xla_model)
    emb = hidden_fn(xla_model, tokens)[0, 0]  # [T, D]
    target = len(seq) - 1
    layers = None if args.jacobian_layers == "all" else [-1]
    sens = jax.jit(
        functools.partial(
            analysis.jacobian_sensitivity, forward_fn, layers=layers, chunk_size=args.jacobian_chunk
        )
    )(params, emb, target)
    probs = nnx.jit(lambda m, t: m(t, collect=("attn_probs",))[1]["attn_probs"])(xla_model, tokens)
    bound = analysis.path_bound(probs)[0, target]
    out["jacobian"] = {
        "sequence": "with_bos" if bos_id is not None else "text_only",
        "compute": "attention=xla, dtype=float32",
        "target": target,
        "layers": "all (0 = embeddings)" if layers is None else "last",
        "sensitivity_NxT": np.asarray(sens).tolist(),
        "path_bound_T": np.asarray(bound).tolist(),
    }
    return out


# --------------------------------------------------------------------------- main


def _caption(settings: dict[str, Any]) -> str:
    keys = ("model", "seq_len", "num_sequences", "short", "eps")
    return "  ".join(f"{k}={settings[k]}" for k in keys if k in settings)


def write_figures(report: dict[str, Any], out_dir: str) -> list[str]:
    """Draws the report's figures; returns their paths."""
    cap = _caption(report["settings"])
    main_key = "with_bos" if "with_bos" in report["sinks"] else "text_only"
    sinks = report["sinks"][main_key]
    paths = [
        plots.sink_score_heatmap(
            np.asarray(sinks["sink_score_mean_LxH"]),
            os.path.join(out_dir, "sink_scores.png"),
            caption=cap,
            title=f"Sink score alpha_0 ({main_key}, mean over prompts)",
        ),
        plots.sink_rate_per_layer(
            {
                float(e): np.asarray(r) / 100
                for e, r in sinks["sink_rate_per_layer_percent"].items()
            },
            os.path.join(out_dir, "sink_rate_per_layer.png"),
            caption=cap,
            title=f"Sink rate per layer ({main_key})",
        ),
        plots.value_norms_sink_vs_rest(
            np.asarray(sinks["value_norm_sink_LxH"]),
            np.asarray(sinks["value_norm_rest_LxH"]),
            np.asarray(sinks["sink_score_mean_LxH"]),
            os.path.join(out_dir, "value_norms.png"),
            caption=cap,
        ),
    ]
    spread = report["spread"]
    without = np.asarray(spread["divergence_without_bos_Lp1xT"])
    with_bos = np.asarray(spread.get("divergence_with_bos_Lp1xT", np.zeros_like(without)))
    spread_cap = (
        cap + f"  swap '{spread['old']}'->'{spread['new']}' at token {spread['swap_position']}"
    )
    paths.append(
        plots.spread_heatmaps(
            with_bos,
            without,
            os.path.join(out_dir, "spread.png"),
            swap_position=spread["swap_position"],
            token_labels=spread["token_labels"],
            caption=spread_cap,
        )
    )
    cvl = spread["collapse_vs_length"]
    paths.append(
        plots.collapse_curves(
            sinks["rank_collapse_Lp1"],
            cvl["lengths"],
            np.asarray(cvl["repeat_last_token_Lp1xR"])[-1],
            np.asarray(cvl["last_two_tokens_Lp1xR"])[-1],
            os.path.join(out_dir, "collapse.png"),
            caption=cap + f"  sequence={cvl['sequence']}",
        )
    )
    jac = spread.get("jacobian")
    if jac is None:
        return paths
    paths.append(
        plots.sensitivity_vs_bound(
            np.asarray(jac["sensitivity_NxT"])[-1],
            np.asarray(jac["path_bound_T"]),
            jac["target"],
            os.path.join(out_dir, "jacobian_vs_path_bound.png"),
            caption=cap + f"  sequence={jac['sequence']}",
        )
    )
    return paths


def choose_prompts(
    args: argparse.Namespace, tok: Any, run_config: dict | None
) -> tuple[list[list[int]], str]:
    """`(token lists, description)`: --prompts FILE, --prompts-source SPEC, else with --workdir
    the run's own held-out documents (a model trained on synthetic data has never seen
    English), else the built-in paragraphs. Sets the perturbation prompt to the first drawn
    document. `prepared:DIR` sources are read as stored, without re-tokenising."""
    if args.prompts:
        return [tok.encode(t) for t in load_prompts(args.prompts)], f"file:{args.prompts}"
    if args.prompts_source is None and run_config is None:
        return [tok.encode(t) for t in load_prompts(None)], "built-in paragraphs"
    from_run = args.prompts_source in (None, "run")
    if from_run and run_config is None:
        raise ValueError("--prompts-source run needs --workdir (the run's data.source).")
    spec = _run_source(run_config) if from_run else args.prompts_source
    min_tokens = 0 if args.short == "pad" else args.seq_len
    try:
        token_lists = prompts_from_source(spec, args.num_prompts, min_tokens, tok)
    except (ValueError, FileNotFoundError) as e:
        if args.prompts_source is not None:
            raise
        raise ValueError(
            f"--workdir {args.workdir!r}: the run's held-out data ({spec}) cannot be read ({e}); "
            "pass --prompts FILE or --prompts-source SPEC."
        ) from e
    if args.spread_prompt is None:
        args.spread_prompt = tok.decode(token_lists[0])
        args.swap = args.swap or f"@{min(args.spread_len, len(token_lists[0])) // 2}"
    where = "the run's held-out documents, " if from_run else ""
    return token_lists, f"source:{spec} ({where}valid split)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.seq_len < 2:
        raise ValueError(f"--seq-len {args.seq_len}: need at least 2 tokens.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be at least 1.")
    t0 = time.time()
    loaded = load_model(args)
    model, tok, run_config = loaded.model, loaded.tokenizer, loaded.run_config
    cfg = model.config
    bos_id = None if args.no_bos else getattr(tok, "bos_id", None)
    token_lists, prompts_desc = choose_prompts(args, tok, run_config)
    max_id = max((max(t) for t in token_lists if t), default=-1)
    if max_id >= cfg.vocab_size or (bos_id is not None and bos_id >= cfg.vocab_size):
        raise ValueError(
            f"tokenizer/model mismatch: token id {max(max_id, bos_id or 0)} >= "
            f"model vocab_size {cfg.vocab_size}; pass the tokenizer the model was "
            f"trained with (--tokenizer, now {loaded.tokenizer_spec!r})."
        )

    choose_swap(tok, args.spread_prompt or builtin_prompts.SHAKESPEARE, args.swap)  # fail early
    layouts = {"text_only": None} if bos_id is None else {"with_bos": bos_id, "text_only": None}
    settings = {
        "model": loaded.description,
        "model_config": cfg.to_dict(),
        "seq_len": args.seq_len,
        "eps": list(args.eps),
        "batch_size": args.batch_size,
        "short": args.short,
        "tokenizer": loaded.tokenizer_spec,
        "bos_id": bos_id,
        "prompts": prompts_desc,
        "num_prompts": len(token_lists),
        "layouts": {
            "with_bos": "<bos> + first T-1 prompt tokens",
            "text_only": "first T prompt tokens",
        },
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
    }
    report: dict[str, Any] = {"settings": settings, "sinks": {}}
    if args.long_context_only:
        if not args.long_context:
            raise ValueError("--long-context-only needs --long-context N [N ...].")
        return _finish(args, report, t0, long_context_reports(model, token_lists, bos_id, args))
    for name, prefix in progress(layouts.items(), desc="sinks", unit="layout"):
        tokens, valid, kept = make_sequences(
            token_lists,
            args.seq_len,
            bos_id=prefix,
            pad_id=int(getattr(tok, "pad_id", 0) or 0),
            short=args.short,
        )
        if not kept:
            lengths = sorted(len(t) for t in token_lists)
            raise ValueError(
                f"all {len(token_lists)} prompts are shorter than --seq-len "
                f"{args.seq_len} tokens (lengths {lengths[:5]}...{lengths[-1]}); "
                "use --short pad or a smaller --seq-len."
            )
        res = sink_report(model, tokens, valid, args.eps, args.batch_size, desc=name)
        res["kept_prompt_indices"] = kept
        report["sinks"][name] = res
    settings["num_sequences"] = report["sinks"]["text_only"]["num_sequences"]
    report["spread"] = spread_report(model, tok, bos_id, args)
    if args.loss_file:
        if bos_id is None:
            raise ValueError("--loss-file compares with and without <bos>; the tokenizer has none.")
        loss_tokens = [tok.encode(t) for t in load_prompts(args.loss_file)]
        report["bos_loss"] = bos_loss_report(
            model, loss_tokens, bos_id, args.seq_len, args.batch_size
        )
        settings["loss_file"] = args.loss_file
    long_context = long_context_reports(model, token_lists, bos_id, args)
    os.makedirs(args.out, exist_ok=True)
    report["figures"] = [os.path.basename(p) for p in write_figures(report, args.out)]
    return _finish(args, report, t0, long_context)


def long_context_reports(model, token_lists, bos_id, args) -> list[dict[str, Any]]:
    """One `long_context_report` per --long-context length, shortest first."""
    return [
        long_context_report(model, token_lists, bos_id, n, args.long_backend, args.eps)
        for n in sorted(args.long_context)
    ]


def _finish(args, report: dict[str, Any], t0: float, long_context: list) -> dict[str, Any]:
    """Adds the long-context results and the run time; writes report.json."""
    if long_context:
        report["long_context"] = long_context
    report["settings"]["seconds"] = round(time.time() - t0, 2)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"sinks-jax analyze: error: {e}", file=sys.stderr)
        return 2
    print(f"  prompts: {report['settings']['prompts']}")
    for name, res in report["sinks"].items():
        rates = ", ".join(f"eps={e}: {r:.2f}%" for e, r in res["sink_rate_percent"].items())
        print(f"{name:>9}: {res['num_sequences']} sequences, sink rate {rates}")
    if "bos_loss" in report:
        b = report["bos_loss"]
        print(
            f"     loss: with <bos> {b['loss_with_bos']:.4f}, text only {b['loss_text_only']:.4f} "
            f"nats; top-1 accuracy {b['top1_accuracy_with_bos']:.4f} / "
            f"{b['top1_accuracy_text_only']:.4f} ({b['targets']} targets)"
        )
    for lc in report.get("long_context", []):
        rates = ", ".join(f"eps={e}: {r:.2f}%" for e, r in lc["sink_rate_percent"].items())
        print(
            f"     T={lc['seq_len']} ({lc['backend']}): sink rate {rates}; "
            f"{lc['seconds_incl_compile']} s; peak {lc['peak_device_bytes']} bytes"
        )
    figures = len(report.get("figures", []))
    print(f"wrote {os.path.join(args.out, 'report.json')} and {figures} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
