"""The decoder: a LLaMA-style Flax NNX transformer whose forward pass returns sink statistics.

    logits_BxTxV, aux = model(tokens_BxT, segment_ids=None, positions=None, collect=())

Layers are built once with `nnx.vmap` (parameters stacked on a leading layer axis) and applied
with `jax.lax.scan`, so compile time does not grow with depth. `collect` names the statistics
to return in `aux` (all under stop_gradient; none of them changes the logits):

    "attn_probs"   [L, B, H, T, T]  full maps (attention="xla" only)
    "sink_attn"    [L, B, H, T]     attention of each query to its sink key, from the LSE
                                    (exactly 0 where the query cannot see it: another
                                    document, or past a local layer's window; sink_query_mask)
    "lse"          [L, B, H, T]     natural-log log-sum-exp of the scaled scores
    "hidden"       [L+1, B, T, D]   residual stream: embeddings, then after each layer (the
                                    last entry is before the final norm)
    "value_norms"  [L, B, H, T]     ||W_V x_j (+ b_V)|| of every key j, per query head
    "received_attn" [L, B, H, T]    attention every key receives, sum_i A[i, k], from one
                                    backward pass of the backend w.r.t. V (never T x T)
    "noop_mass"    [L, B, H, T]     where the head's no-op went (`attention_variant`): the
                                    extra slot's share (sink_logit, softmax_plus_one,
                                    kv_bias), 1 - the mean gate (gated), 1 - the row's total
                                    weight (sigmoid); 0 for softmax (model/variants.py)

With an `attention_variant`, `sink_attn`, `lse`, `attn_probs` and `received_attn` are those of
the full row, slot included (the weight each key's value gets before any gate; for sigmoid the
unnormalised weights, `lse` the log of a row's total weight): one sink-score definition for
every variant (model/variants.py).

With collect=() the scan carries nothing extra, so the forward pass does no extra work.

Local (sliding-window) layers, as in Gemma 2/3 or Mistral: `ModelConfig.layer_types` says which
layers attend within `sliding_window` keys. When local and global layers are mixed, the scan
carries a per-layer flag and each layer picks its attention with `jax.lax.cond` between the two
static-window calls (and its RoPE frequencies with a select). Every backend thus sees a static
window (cuDNN needs one), the scanned body holds two attention calls whatever the depth or the
layer pattern (compile time stays flat; 26 or 62 layers need no pattern-sized groups), and the
parameters stay one stack. In a local layer, a query t >= window cannot see key 0: its
`sink_attn` is exactly 0; `sink_query_mask` gives, per layer, which queries see their sink key.

The pieces live one per module: the layer in `block` (its norms in `norm`, RoPE in `rope`), a
layer's window and `sink_query_mask` in `windows`, the float32 output matmul in `head`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model import attention as attention_lib
from sinks_jax.model.block import Block, normal_param
from sinks_jax.model.config import ModelConfig
from sinks_jax.model.head import output_head
from sinks_jax.model.norm import Norm
from sinks_jax.model.rope import layer_inv_freq

COLLECTABLE = (
    "attn_probs",
    "sink_attn",
    "lse",
    "hidden",
    "value_norms",
    "received_attn",
    "noop_mass",
)


class Transformer(nnx.Module):
    """Decoder-only transformer (see the module docstring for the call and `aux`).

    Parameters: embedding [V, D], optional pos_embedding [P, D] (learned positions), layers
    (a stacked `Block`, every array with a leading [L] axis), final_norm, lm_head [D, V] unless
    tied.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        pdt = jnp.dtype(cfg.param_dtype)
        self.embedding = normal_param(rngs, (cfg.vocab_size, cfg.d_model), cfg.init_std, pdt)
        if cfg.position_type == "learned":
            self.pos_embedding = normal_param(
                rngs, (cfg.max_position_embeddings, cfg.d_model), cfg.init_std, pdt
            )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_layers(rngs: nnx.Rngs) -> Block:
            return Block(cfg, rngs=rngs)

        self.layers = make_layers(rngs)  # every parameter has a leading [L] axis.
        self.final_norm = Norm(cfg, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = normal_param(rngs, (cfg.d_model, cfg.vocab_size), cfg.init_std, pdt)

    def embed(self, tokens_BxT: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """Input embeddings [B, T, D] in the compute dtype: the residual stream's layer 0."""
        cfg = self.config
        x = jnp.take(self.embedding[...], tokens_BxT, axis=0).astype(jnp.dtype(cfg.dtype))
        if cfg.embedding_scale is not None:
            x = x * jnp.asarray(cfg.embedding_scale, x.dtype)
        if cfg.position_type == "learned":
            positions = default_positions(tokens_BxT.shape) if positions is None else positions
            x = x + jnp.take(self.pos_embedding[...], positions, axis=0).astype(x.dtype)
        return x

    def __call__(
        self,
        tokens_BxT: jax.Array | None,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        *,
        collect=(),
        embeddings_BxTxD: jax.Array | None = None,
        features: bool = False,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits [B, T, V] float32 and `aux` holding exactly the statistics in `collect`.

        `embeddings_BxTxD` (optional) replaces `embed(tokens)` as the input, so that derivatives
        with respect to the input embeddings can be taken (tokens may then be None).
        `features=True` returns ((final normed hidden [B, T, D], head [D, V]), aux) in the
        compute dtype instead of the logits, for a loss that applies the head itself
        (`train/chunked_loss.py`).
        """
        cfg = self.config
        collect = frozenset(collect)
        unknown = sorted(collect - set(COLLECTABLE))
        if unknown:
            raise ValueError(f"collect: unknown statistics {unknown}; choose from {COLLECTABLE}.")
        if "attn_probs" in collect and cfg.attention != "xla":
            raise ValueError(
                f"collect 'attn_probs' needs attention='xla', not {cfg.attention!r}; "
                "use 'sink_attn' or 'lse' with fused backends."
            )
        if embeddings_BxTxD is None:
            if tokens_BxT is None:
                raise ValueError("Transformer: pass tokens_BxT or embeddings_BxTxD.")
            x = self.embed(tokens_BxT, positions)
        else:
            x = embeddings_BxTxD.astype(jnp.dtype(cfg.dtype))
        h_BxTxD, stats, _ = self._run_layers(x, segment_ids, positions, collect)
        h_BxTxD = self.final_norm(h_BxTxD)
        aux = dict(stats)
        if "hidden" in collect:
            aux["hidden"] = jnp.concatenate(
                [jax.lax.stop_gradient(x)[None], stats["hidden"]], axis=0
            )
        head = self.head_matrix().astype(h_BxTxD.dtype)
        if features:
            return (h_BxTxD, head), aux
        if cfg.logits_dtype == "float32" and h_BxTxD.dtype != jnp.float32:
            logits = output_head(h_BxTxD, head)
        else:
            logits = jnp.einsum(
                "btd,dv->btv", h_BxTxD, head, preferred_element_type=jnp.dtype(cfg.logits_dtype)
            )
        return attention_lib.soft_cap(logits, cfg.final_logit_softcap), aux

    def head_matrix(self) -> jax.Array:
        """The output head [D, V] as stored (the embedding's transpose when tied)."""
        return self.embedding[...].T if self.config.tie_embeddings else self.lm_head[...]

    def residual_stream(
        self,
        embeddings_BxTxD: jax.Array,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        """[L+1, B, T, D] residual stream from input embeddings, *differentiable* (unlike the
        `hidden` statistic): the function whose Jacobians measure over-squashing."""
        x = embeddings_BxTxD.astype(jnp.dtype(self.config.dtype))
        _, _, hidden_LxBxTxD = self._run_layers(x, segment_ids, positions, frozenset(), True)
        return jnp.concatenate([x[None], hidden_LxBxTxD], axis=0)

    def _run_layers(self, x_BxTxD, segment_ids, positions, collect, keep_hidden=False):
        """Scans the stacked layers: (final residual, stacked statistics, per-layer residuals
        with gradients when `keep_hidden`, else None)."""
        cfg = self.config
        B, T = x_BxTxD.shape[:2]
        positions = default_positions((B, T)) if positions is None else positions
        if positions.shape != (B, T):
            raise ValueError(f"positions shape {positions.shape} != (B, T) = {(B, T)}.")
        if segment_ids is not None and segment_ids.shape != (B, T):
            raise ValueError(f"segment_ids shape {segment_ids.shape} != (B, T) = {(B, T)}.")
        sink_idx = attention_lib.sink_index(
            segment_ids, T, B, per_segment=cfg.sink_key == "segment"
        )
        graphdef, layer_state = nnx.split(self.layers)
        # Local/global per layer: a static bool when all layers agree, else a scanned flag.
        mixed = len(set(cfg.local_layers)) > 1
        local_L = jnp.asarray(cfg.local_layers) if mixed else None

        def layer_step(x, xs):
            state, local = xs
            layer = nnx.merge(graphdef, state)
            local = local if mixed else cfg.local_layers[0]
            freqs = layer_inv_freq(cfg, local)
            y, stats = layer(x, positions, segment_ids, sink_idx, freqs, local, collect)
            return y, (stats, y if keep_hidden else None)

        if cfg.remat:
            layer_step = jax.checkpoint(layer_step, prevent_cse=False)
        h_BxTxD, (stats, hidden) = jax.lax.scan(
            layer_step, x_BxTxD, (layer_state, local_L), unroll=min(cfg.scan_unroll, cfg.num_layers)
        )
        return h_BxTxD, stats, hidden


def default_positions(shape) -> jax.Array:
    B, T = shape
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))


def forward(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tokens_BxT: jax.Array | None = None,
    *,
    embeddings_BxTxD: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    positions: jax.Array | None = None,
    collect=(),
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pure form of `Transformer.__call__` over `nnx.split(model)`, for jax.vjp / jax.jacrev."""
    model = nnx.merge(graphdef, params)
    return model(
        tokens_BxT, segment_ids, positions, collect=collect, embeddings_BxTxD=embeddings_BxTxD
    )
