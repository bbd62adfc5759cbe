"""One decoder layer (`Block`): pre-norm attention with its variant's parameters, then the
MLP; its `__call__` returns the statistics named in `collect` (model/transformer.py lists
them)."""

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
from sinks_jax.model.norm import Norm
from sinks_jax.model.rope import apply_rope
from sinks_jax.model.windows import layer_window


def normal_param(rngs: nnx.Rngs, shape, std, dtype) -> nnx.Param:
    """A parameter drawn from N(0, std^2) in float32, stored in `dtype`."""
    return nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32).astype(dtype) * std)


def _activation(name: str):
    return {
        "silu": jax.nn.silu,
        "relu": jax.nn.relu,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    }[name]


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
        self.wq = normal_param(rngs, (D, H, hd), std, pdt)
        self.wk = normal_param(rngs, (D, K, hd), std, pdt)
        self.wv = normal_param(rngs, (D, K, hd), std, pdt)
        self.wo = normal_param(rngs, (H, hd, D), out_std, pdt)
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
            self.w_gate = normal_param(rngs, (D, F), std, pdt)
        self.w_up = normal_param(rngs, (D, F), std, pdt)
        self.w_down = normal_param(rngs, (F, D), out_std, pdt)
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
