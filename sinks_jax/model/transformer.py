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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model import attention as attention_lib
from sinks_jax.model import received as received_lib
from sinks_jax.model import variants as variants_lib
from sinks_jax.model.config import ModelConfig
from sinks_jax.model.kv_heads import expand_kv

COLLECTABLE = (
    "attn_probs",
    "sink_attn",
    "lse",
    "hidden",
    "value_norms",
    "received_attn",
    "noop_mass",
)


def _init(rngs: nnx.Rngs, shape, std, dtype) -> nnx.Param:
    return nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32).astype(dtype) * std)


def _activation(name: str):
    return {
        "silu": jax.nn.silu,
        "relu": jax.nn.relu,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    }[name]


class Norm(nnx.Module):
    """RMSNorm (LLaMA; `scale_offset=1` gives Gemma's 1 + w) or LayerNorm (GPT-2), in float32,
    over the last axis of size `dim` (default d_model; head_dim for the q/k norms)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dim: int | None = None):
        del rngs
        self.kind, self.eps, self.offset = cfg.norm_type, cfg.norm_eps, cfg.norm_scale_offset
        dim = cfg.d_model if dim is None else dim
        init = 0.0 if cfg.norm_scale_offset else 1.0
        self.scale = nnx.Param(jnp.full((dim,), init, jnp.dtype(cfg.param_dtype)))
        if cfg.norm_type == "layer":
            self.bias = nnx.Param(jnp.zeros((dim,), jnp.dtype(cfg.param_dtype)))

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        x = x_BxTxD.astype(jnp.float32)
        if self.kind == "layer":
            x = x - x.mean(-1, keepdims=True)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        x = x * (self.scale[...].astype(jnp.float32) + self.offset)
        if self.kind == "layer":
            x = x + self.bias[...].astype(jnp.float32)
        return x.astype(x_BxTxD.dtype)


def rope_inverse_frequencies(cfg: ModelConfig, local: bool = False) -> jax.Array:
    """[head_dim / 2] float32 inverse frequencies, with LLaMA-3 or linear scaling if set.

    `local`: those of the local layers (base `rope_local_theta`, unscaled, when it is set).
    """
    d = cfg.head_size
    local_base = local and cfg.rope_local_theta is not None
    theta = cfg.rope_local_theta if local_base else cfg.rope_theta
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    scaling = None if local_base else cfg.rope_scaling_dict
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        return jnp.where(medium, smoothed, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported; supported: 'linear', 'llama3'.")


def layer_inv_freq(cfg: ModelConfig, local) -> jax.Array | None:
    """A layer's RoPE inverse frequencies (None without RoPE); `local` is a bool or a traced
    per-layer flag (then a select between the local and the global frequencies)."""
    if cfg.position_type != "rope":
        return None
    if isinstance(local, bool):
        return rope_inverse_frequencies(cfg, local)
    local_freqs, global_freqs = rope_inverse_frequencies(cfg, True), rope_inverse_frequencies(cfg)
    return jnp.where(local, local_freqs, global_freqs)


def apply_rope(x_BxTxHxD: jax.Array, positions_BxT: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotary embedding in the half-split layout: pairs (x[i], x[i + D/2]) rotate together."""
    angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
    cos = jnp.cos(angles_BxTxF)[:, :, None, :].astype(x_BxTxHxD.dtype)
    sin = jnp.sin(angles_BxTxF)[:, :, None, :].astype(x_BxTxHxD.dtype)
    x1, x2 = jnp.split(x_BxTxHxD, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Block(nnx.Module):
    """Pre-norm attention + MLP layer.

    Parameters (explicit arrays; hd = head_dim, K = kv heads, F = d_ff): wq [D, H, hd],
    wk/wv [D, K, hd], wo [H, hd, D], optional bq [H, hd], bk/bv [K, hd], bo [D]; w_gate/w_up
    [D, F], w_down [F, D], optional b_up [F], b_down [D]; attn_norm and mlp_norm (pre-norms),
    optional q_norm/k_norm [hd] (qk_norm) and post_attn_norm/post_mlp_norm (post_norms);
    the attention variant's (model/variants.py): sink_logit [H], bk_slot/bv_slot [K, hd]
    (kv_bias), w_attn_gate [D, H, hd] and b_attn_gate [H, hd] (gated); all start at 0.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        D, H, K, hd, F = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size, cfg.d_ff
        pdt, std = jnp.dtype(cfg.param_dtype), cfg.init_std
        out_std = std / math.sqrt(2 * cfg.num_layers)
        self.attn_norm = Norm(cfg, rngs=rngs)
        self.wq = _init(rngs, (D, H, hd), std, pdt)
        self.wk = _init(rngs, (D, K, hd), std, pdt)
        self.wv = _init(rngs, (D, K, hd), std, pdt)
        self.wo = _init(rngs, (H, hd, D), out_std, pdt)
        if cfg.qkv_bias:
            self.bq = nnx.Param(jnp.zeros((H, hd), pdt))
            self.bk = nnx.Param(jnp.zeros((K, hd), pdt))
            self.bv = nnx.Param(jnp.zeros((K, hd), pdt))
        if cfg.out_bias:
            self.bo = nnx.Param(jnp.zeros((D,), pdt))
        if cfg.qk_norm:
            self.q_norm = Norm(cfg, rngs=rngs, dim=hd)
            self.k_norm = Norm(cfg, rngs=rngs, dim=hd)
        if cfg.post_norms:
            self.post_attn_norm = Norm(cfg, rngs=rngs)
            self.post_mlp_norm = Norm(cfg, rngs=rngs)
        variant = cfg.attention_variant
        if variant == "sink_logit":
            self.sink_logit = nnx.Param(jnp.zeros((H,), pdt))
        if variant == "kv_bias":
            self.bk_slot = nnx.Param(jnp.zeros((K, hd), pdt))
            self.bv_slot = nnx.Param(jnp.zeros((K, hd), pdt))
        if variant == "gated":
            self.w_attn_gate = nnx.Param(jnp.zeros((D, H, hd), pdt))
            self.b_attn_gate = nnx.Param(jnp.zeros((H, hd), pdt))
        self.mlp_norm = Norm(cfg, rngs=rngs)
        if cfg.gated_mlp:
            self.w_gate = _init(rngs, (D, F), std, pdt)
        self.w_up = _init(rngs, (D, F), std, pdt)
        self.w_down = _init(rngs, (F, D), out_std, pdt)
        if cfg.mlp_bias:
            self.b_up = nnx.Param(jnp.zeros((F,), pdt))
            self.b_down = nnx.Param(jnp.zeros((D,), pdt))

    def _w(self, name: str) -> jax.Array:
        return getattr(self, name)[...].astype(jnp.dtype(self.cfg.dtype))

    def qkv(self, x_BxTxD, positions_BxT, inv_freq):
        """Projected (and rotated) queries, keys and values of the normed input."""
        cfg = self.cfg
        h = self.attn_norm(x_BxTxD)
        q = jnp.einsum("btd,dhk->bthk", h, self._w("wq"))
        k = jnp.einsum("btd,dhk->bthk", h, self._w("wk"))
        v = jnp.einsum("btd,dhk->bthk", h, self._w("wv"))
        if cfg.qkv_bias:
            q, k, v = q + self._w("bq"), k + self._w("bk"), v + self._w("bv")
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if cfg.position_type == "rope":
            q, k = apply_rope(q, positions_BxT, inv_freq), apply_rope(k, positions_BxT, inv_freq)
        return q, k, v

    def mlp(self, x_BxTxD):
        cfg = self.cfg
        h = self.mlp_norm(x_BxTxD)
        up = jnp.einsum("btd,df->btf", h, self._w("w_up"))
        if cfg.mlp_bias:
            up = up + self._w("b_up")
        act = _activation(cfg.activation)
        if cfg.gated_mlp:
            hidden = act(jnp.einsum("btd,df->btf", h, self._w("w_gate"))) * up
        else:
            hidden = act(up)
        out = jnp.einsum("btf,fd->btd", hidden, self._w("w_down"))
        out = out + self._w("b_down") if cfg.mlp_bias else out
        return self.post_mlp_norm(out) if cfg.post_norms else out

    def attend(self, q, k, v, segment_ids_BxT, local, return_probs=False):
        """`attention` of this layer: windowed where `local` (a bool, or a traced bool scalar
        choosing between the two static-window calls with lax.cond)."""
        cfg = self.cfg
        variant = "softmax" if cfg.attention_variant == "gated" else cfg.attention_variant
        slot = variants_lib.Slot(
            logit_H=self.sink_logit[...] if variant == "sink_logit" else None,  # fp32 as stored.
            key_KxD=self._w("bk_slot") if variant == "kv_bias" else None,
            value_KxD=self._w("bv_slot") if variant == "kv_bias" else None,
        )

        def run(window):
            return attention_lib.attention(
                q,
                k,
                v,
                backend=cfg.attention,
                segment_ids=segment_ids_BxT,
                global_first_key=cfg.global_first_key,
                window=window,
                softcap=cfg.attn_logit_softcap,
                scale=self.scale,
                return_probs=return_probs,
                block_size=cfg.block_size,
                variant=variant,
                slot=slot,
            )

        if isinstance(local, bool):
            return run(cfg.sliding_window if local else None)
        return jax.lax.cond(local, lambda: run(cfg.sliding_window), lambda: run(None))

    def sigmoid_bias(self, seq_len: int, segment_ids_BxT, local) -> jax.Array | None:
        """[B or 1, T] bias of sigmoid attention in this layer (None for the other variants)."""
        cfg = self.cfg
        if cfg.attention_variant != "sigmoid":
            return None
        window = layer_window(cfg, local, seq_len)
        count_BxT = attention_lib.visible_count(
            seq_len, segment_ids_BxT, cfg.global_first_key, window
        )
        return variants_lib.sigmoid_bias(count_BxT)

    @property
    def scale(self) -> float:
        cfg = self.cfg
        return cfg.query_scale if cfg.query_scale is not None else cfg.head_size**-0.5

    def __call__(
        self, x_BxTxD, positions_BxT, segment_ids_BxT, sink_idx_BxT, inv_freq, local, collect
    ):
        cfg = self.cfg
        q, k, v = self.qkv(x_BxTxD, positions_BxT, inv_freq)
        res = self.attend(q, k, v, segment_ids_BxT, local, "attn_probs" in collect)
        out_BxTxHxD, noop_BxHxT = res.out_BxTxHxD, res.noop_BxHxT
        if cfg.attention_variant == "gated":
            out_BxTxHxD, noop_BxHxT = variants_lib.gate(
                out_BxTxHxD, self.attn_norm(x_BxTxD), self._w("w_attn_gate"), self._w("b_attn_gate")
            )
        o = jnp.einsum("bthk,hkd->btd", out_BxTxHxD, self._w("wo"))
        if cfg.out_bias:
            o = o + self._w("bo")
        if cfg.post_norms:
            o = self.post_attn_norm(o)
        x_BxTxD = x_BxTxD + o
        x_BxTxD = x_BxTxD + self.mlp(x_BxTxD)

        stats = {}
        if "attn_probs" in collect:
            stats["attn_probs"] = res.probs_BxHxTxT
        if "lse" in collect:
            stats["lse"] = res.lse_BxHxT
        if "sink_attn" in collect:
            stats["sink_attn"] = attention_lib.sink_attention(
                q,
                k,
                res.lse_BxHxT,
                sink_idx_BxT,
                scale=self.scale,
                segment_ids=segment_ids_BxT,
                global_first_key=cfg.global_first_key,
                window=layer_window(cfg, local, q.shape[1]),
                softcap=cfg.attn_logit_softcap,
                sigmoid_bias=self.sigmoid_bias(q.shape[1], segment_ids_BxT, local),
            )
        if "noop_mass" in collect:
            zeros = jnp.zeros(res.lse_BxHxT.shape, jnp.float32)
            stats["noop_mass"] = zeros if noop_BxHxT is None else noop_BxHxT
        if "value_norms" in collect:
            vn_BxTxK = jnp.linalg.norm(v.astype(jnp.float32), axis=-1)
            stats["value_norms"] = expand_kv(vn_BxTxK, cfg.num_heads).transpose(0, 2, 1)
        if "received_attn" in collect:
            stats["received_attn"] = self.received_attention(q, k, v, segment_ids_BxT, local)
        if "hidden" in collect:
            stats["hidden"] = x_BxTxD
        return x_BxTxD, jax.lax.stop_gradient(stats)

    def received_attention(self, q, k, v, segment_ids_BxT, local, query_weights_BxT=None):
        """[B, H, T] attention every key receives in this layer, sum_i w_i A[i, k] (w = 1
        without `query_weights_BxT`): one VJP through the layer's own attention
        (model/received.py)."""

        def attend(q, k, v):
            return self.attend(q, k, v, segment_ids_BxT, local).out_BxTxHxD

        return received_lib.received_attention(q, k, v, attend, query_weights_BxT)


def layer_window(cfg: ModelConfig, local, seq_len: int):
    """The window a layer's queries look through: None (global), `sliding_window`, or, for a
    traced `local` flag, a traced int (seq_len stands for "no limit")."""
    if isinstance(local, bool):
        return cfg.sliding_window if local else None
    return jnp.where(local, cfg.sliding_window, seq_len)


def sink_query_mask(
    cfg: ModelConfig, seq_len: int, segment_ids_BxT: jax.Array | None = None
) -> jax.Array:
    """[L, B or 1, T] bool: per layer, the queries that can see their sink key.

    False where the sink key is masked: in another document (segment ids with
    sink_key="window"), or, in a local layer, `sliding_window` or more tokens back (key 0 is
    seen by queries t < sliding_window only) unless `global_first_key` keeps key 0 visible.
    Their `sink_attn` is exactly 0; pass this mask to the first-token score to average over
    the queries that could attend to the sink.
    """
    batch = 1 if segment_ids_BxT is None else segment_ids_BxT.shape[0]
    sink_idx_BxT = attention_lib.sink_index(
        segment_ids_BxT, seq_len, batch, per_segment=cfg.sink_key == "segment"
    )
    masks = {
        local: attention_lib.sink_visible(
            sink_idx_BxT,
            segment_ids_BxT,
            global_first_key=cfg.global_first_key,
            window=layer_window(cfg, local, seq_len),
        )
        for local in set(cfg.local_layers)
    }
    return jnp.stack([masks[local] for local in cfg.local_layers])


@jax.custom_vjp
def output_head(h_BxTxD: jax.Array, w_DxV: jax.Array) -> jax.Array:
    """float32 logits from low-precision operands, with low-precision backward matmuls.

    Forward: bf16 x bf16 with float32 accumulation and a float32 result, so the loss sees
    accurate logits. Backward: the float32 cotangent is cast to the operands' dtype before
    the two gradient matmuls; left to itself, XLA would run them as float32 (TF32) GEMMs,
    the single largest kernel of a 120M-parameter training step on an H200 (BENCHMARKS.md).
    """
    return jnp.einsum("btd,dv->btv", h_BxTxD, w_DxV, preferred_element_type=jnp.float32)


def _output_head_fwd(h_BxTxD, w_DxV):
    return output_head(h_BxTxD, w_DxV), (h_BxTxD, w_DxV)


def _output_head_bwd(res, g_BxTxV):
    h_BxTxD, w_DxV = res
    g = g_BxTxV.astype(h_BxTxD.dtype)
    dh = jnp.einsum("btv,dv->btd", g, w_DxV, preferred_element_type=jnp.float32)
    dw = jnp.einsum("btd,btv->dv", h_BxTxD, g, preferred_element_type=jnp.float32)
    return dh.astype(h_BxTxD.dtype), dw.astype(w_DxV.dtype)


output_head.defvjp(_output_head_fwd, _output_head_bwd)


class Transformer(nnx.Module):
    """Decoder-only transformer (see the module docstring for the call and `aux`).

    Parameters: embedding [V, D], optional pos_embedding [P, D] (learned positions), layers
    (a stacked `Block`, every array with a leading [L] axis), final_norm, lm_head [D, V] unless
    tied.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        pdt = jnp.dtype(cfg.param_dtype)
        self.embedding = _init(rngs, (cfg.vocab_size, cfg.d_model), cfg.init_std, pdt)
        if cfg.position_type == "learned":
            self.pos_embedding = _init(
                rngs, (cfg.max_position_embeddings, cfg.d_model), cfg.init_std, pdt
            )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_layers(rngs: nnx.Rngs) -> Block:
            return Block(cfg, rngs=rngs)

        self.layers = make_layers(rngs)  # every parameter has a leading [L] axis.
        self.final_norm = Norm(cfg, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = _init(rngs, (cfg.d_model, cfg.vocab_size), cfg.init_std, pdt)

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
