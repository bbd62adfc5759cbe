"""The model's layer, taken apart for a cache: pre-RoPE projections, attention over an explicit
set of keys, the exact log-sum-exp merge of two attention parts, and the rest of the layer.

Built from the model's public pieces (`Block.qkv`, `Block.mlp`, the norms, `rope.apply_rope`,
`variants`), so a cache sees the same parameters and the same arithmetic as the forward pass:
`layer_output` is `Block.__call__` after its attention (tests/test_streaming.py checks that
dense streaming reproduces the forward pass's NLL for every family and attention variant).

Attention parts are `(out [B, T, H, D] float32, lse [B, H, T] float32)`, the natural-log LSE
of the scaled (soft-capped) scores over the part's keys (-inf where a query sees none, with
out = 0 there). For sigmoid attention a part's `out` is the unnormalised sum of weighted
values and its `lse` the log of its total weight, as the backends return them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attention_lib
from sinks_jax.model import blockwise as blockwise_lib
from sinks_jax.model import variants as variants_lib
from sinks_jax.model.config import ModelConfig
from sinks_jax.model.rope import apply_rope


def project(layer, x_BxTxD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries, keys and values of the layer's normed input, *before* RoPE (biases and q/k
    norms applied): `Block.qkv` at rotation angle 0, which is the identity exactly."""
    cfg: ModelConfig = layer.cfg
    B, T = x_BxTxD.shape[:2]
    zeros_BxT = jnp.zeros((B, T), jnp.int32)
    no_turn = jnp.zeros((cfg.head_size // 2,), jnp.float32)
    return layer.qkv(x_BxTxD, zeros_BxT, no_turn)


def rotate(cfg: ModelConfig, x_BxTxHxD: jax.Array, positions_BxT, inv_freq) -> jax.Array:
    """RoPE at `positions` (broadcast to [B, T]); the identity for models without RoPE."""
    if cfg.position_type != "rope":
        return x_BxTxHxD
    B, T = x_BxTxHxD.shape[:2]
    positions_BxT = jnp.broadcast_to(jnp.asarray(positions_BxT, jnp.int32), (B, T))
    return apply_rope(x_BxTxHxD, positions_BxT, inv_freq)


def attend_keys(
    q_BxTxHxD,
    k_BxSxKxD,
    v_BxSxKxD,
    visible_TxS,
    *,
    scale: float,
    softcap: float | None = None,
    sigmoid_bias_BxT=None,
) -> tuple[jax.Array, jax.Array]:
    """Attention of T queries over S explicit keys under a [T, S] (or [B, T, S]) mask, in
    float32: (out [B, T, H, D], lse [B, H, T]); rows with no visible key give (0, -inf)."""
    B, T, H, D = q_BxTxHxD.shape
    K = k_BxSxKxD.shape[2]
    q = q_BxTxHxD.reshape(B, T, K, H // K, D).astype(jnp.float32)
    s_BxKxGxTxS = jnp.einsum("btkgd,bskd->bkgts", q, k_BxSxKxD.astype(jnp.float32)) * scale
    s_BxKxGxTxS = attention_lib.soft_cap(s_BxKxGxTxS, softcap)
    mask = jnp.asarray(visible_TxS)
    mask = (mask[None] if mask.ndim == 2 else mask)[:, None, None]  # [B or 1, 1, 1, T, S]
    if sigmoid_bias_BxT is None:
        m = jnp.max(jnp.where(mask, s_BxKxGxTxS, -jnp.inf), axis=-1, keepdims=True)
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        p = jnp.where(mask, jnp.exp(s_BxKxGxTxS - m), 0.0)
        total = p.sum(-1)
        lse = jnp.where(total > 0, m[..., 0] + jnp.log(jnp.where(total > 0, total, 1.0)), -jnp.inf)
        p = p / jnp.where(total > 0, total, 1.0)[..., None]
    else:
        b = jnp.asarray(sigmoid_bias_BxT, jnp.float32)[:, None, None, :, None]
        p = jnp.where(mask, jax.nn.sigmoid(s_BxKxGxTxS + b), 0.0)
        total = p.sum(-1)
        lse = jnp.where(total > 0, jnp.log(jnp.where(total > 0, total, 1.0)), -jnp.inf)
    out = jnp.einsum("bkgts,bskd->btkgd", p, v_BxSxKxD.astype(jnp.float32))
    return out.reshape(B, T, H, D), lse.reshape(B, H, T)


def window_attention(
    q_BxTxHxD,
    k_BxTxKxD,
    v_BxTxKxD,
    *,
    backend: str,
    window: int | None,
    scale: float,
    softcap: float | None = None,
    block_size: int = 512,
    sigmoid_bias_BxT=None,
) -> tuple[jax.Array, jax.Array]:
    """Causal attention within `window` keys (None: all earlier keys) through a backend's
    kernel: (out float32, lse). Sigmoid attention takes the caller's per-query bias (the
    count of keys the *cache* shows, sinks included), on the xla and blockwise backends."""
    if sigmoid_bias_BxT is None:
        res = attention_lib.attention(
            q_BxTxHxD,
            k_BxTxKxD,
            v_BxTxKxD,
            backend=backend,
            window=window,
            softcap=softcap,
            scale=scale,
            block_size=block_size,
        )
        return res.out_BxTxHxD.astype(jnp.float32), res.lse_BxHxT
    if backend == "xla":
        res = attention_lib.xla_attention(
            q_BxTxHxD,
            k_BxTxKxD,
            v_BxTxKxD,
            scale=scale,
            window=window,
            softcap=softcap,
            sigmoid_bias=sigmoid_bias_BxT,
        )
        return res.out_BxTxHxD.astype(jnp.float32), res.lse_BxHxT
    if backend == "blockwise":
        out, lse = blockwise_lib.blockwise_attention(
            q_BxTxHxD,
            k_BxTxKxD,
            v_BxTxKxD,
            scale=scale,
            window=window,
            softcap=softcap,
            block_size=block_size,
            sigmoid_bias=sigmoid_bias_BxT,
        )
        return out.astype(jnp.float32), lse
    raise ValueError(
        f"streaming: sigmoid attention runs on the 'xla' and 'blockwise' backends, not {backend!r}."
    )


def merge(parts, sigmoid: bool = False) -> tuple[jax.Array, jax.Array]:
    """One attention from parts over disjoint key sets, exactly: lse = logaddexp of the parts'
    LSEs; out = the parts' outputs weighted by exp(lse_i - lse) (softmax) or summed (sigmoid)."""
    lse = parts[0][1]
    for _, lse_i in parts[1:]:
        lse = jnp.logaddexp(lse, lse_i)
    out = 0.0
    for out_i, lse_i in parts:
        if sigmoid:
            out = out + out_i
        else:
            w_BxHxT = jnp.where(jnp.isfinite(lse_i), jnp.exp(lse_i - lse), 0.0)
            out = out + out_i * w_BxHxT.transpose(0, 2, 1)[..., None]
    return out, lse


def with_variant(layer, out_BxTxHxD, lse_BxHxT, q_slot_BxTxHxD) -> jax.Array:
    """The attention variant's slot merged into the output (`model/variants.py`): sink_logit,
    softmax_plus_one and kv_bias; the others return `out` unchanged (gated acts in
    `layer_output`, sigmoid in the parts). `q_slot` is the query as rotated for this step
    (kv_bias scores it against its unrotated key)."""
    cfg: ModelConfig = layer.cfg
    variant = cfg.attention_variant
    if variant == "sink_logit":
        return variants_lib.null_slot(out_BxTxHxD, lse_BxHxT, layer.sink_logit[...])[0]
    if variant == "softmax_plus_one":
        return variants_lib.null_slot(out_BxTxHxD, lse_BxHxT, None)[0]
    if variant == "kv_bias":
        dt = jnp.dtype(cfg.dtype)
        return variants_lib.kv_slot(
            out_BxTxHxD,
            lse_BxHxT,
            q_slot_BxTxHxD,
            layer.bk_slot[...].astype(dt),
            layer.bv_slot[...].astype(dt),
            scale=layer.scale,
            softcap=cfg.attn_logit_softcap,
        )[0]
    return out_BxTxHxD


def layer_output(layer, x_BxTxD, out_BxTxHxD) -> jax.Array:
    """The rest of `Block.__call__` after attention: the gate (gated), the output projection,
    the post-norm, both residual adds and the MLP."""
    cfg: ModelConfig = layer.cfg
    dt = jnp.dtype(cfg.dtype)
    w = lambda name: getattr(layer, name)[...].astype(dt)
    out = out_BxTxHxD.astype(dt)
    if cfg.attention_variant == "gated":
        out, _ = variants_lib.gate(
            out, layer.attn_norm(x_BxTxD), w("w_attn_gate"), w("b_attn_gate")
        )
    o = jnp.einsum("bthk,hkd->btd", out, w("wo"))
    if cfg.out_bias:
        o = o + w("bo")
    if cfg.post_norms:
        o = layer.post_attn_norm(o)
    x_BxTxD = x_BxTxD + o
    return x_BxTxD + layer.mlp(x_BxTxD)


def check_model(cfg: ModelConfig) -> None:
    """What a sink cache cannot model, as one error naming the field."""
    if cfg.global_first_key and any(cfg.local_layers):
        raise ValueError(
            "streaming: global_first_key=True with local layers (key 0 visible past the local "
            "windows) is not modelled; the cache policy decides which keys stay."
        )
