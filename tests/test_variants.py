"""Attention variants (model/variants.py) against a float64 numpy brute force, across backends.

Tolerances: every comparison is float32 arithmetic against float64, over rows of at most 25
terms of size O(1) (unit-normal q, k, v with scale 1/sqrt(D)); 1e-5 absolute is ~100 float32
ulps of such sums. Gradients go through one more backward pass of the same size: 1e-4.
"""

import functools
import math

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.model import attention as attn
from sinks_jax.model import variants
from sinks_jax.train import optim
from sinks_jax.train import step as step_lib

B, T, H, K, D = 2, 24, 4, 2, 8
SCALE = D**-0.5
SOFTMAX_SLOTS = ("sink_logit", "softmax_plus_one", "kv_bias")
BACKENDS = ("xla", "blockwise")


def numpy_variant(q, k, v, variant, seg=None, gfk=False, window=None, softcap=None, slot=None):
    """Brute force, float64: (out [B,T,H,D], full-row lse [B,H,T], noop [B,H,T], weight of
    every real key [B,H,T,T]). Slot variants append one key (its logit) and value to the row;
    sigmoid weighs each visible key by sigmoid(s - log n), n the number of keys the query sees."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    Bq, Tq, Hq, Dq = q.shape
    Kq = k.shape[2]
    slot = slot or {}
    out, lse, noop = np.zeros(q.shape), np.zeros((Bq, Hq, Tq)), np.zeros((Bq, Hq, Tq))
    weights = np.zeros((Bq, Hq, Tq, Tq))
    for b in range(Bq):
        for h in range(Hq):
            kh = h // (Hq // Kq)
            for i in range(Tq):
                seen = [
                    j
                    for j in range(i + 1)
                    if (
                        (seg is None or seg[b, i] == seg[b, j])
                        and (window is None or i - j < window)
                    )
                    or (gfk and j == 0)
                ]
                s = np.array([SCALE * q[b, i, h] @ k[b, j, kh] for j in seen])
                vals = v[b, seen, kh]
                if softcap is not None:
                    s = softcap * np.tanh(s / softcap)
                if variant == "sigmoid":
                    w = 1 / (1 + np.exp(-(s - math.log(len(seen)))))
                    out[b, i, h] = w @ vals
                    lse[b, h, i] = np.log(w.sum())
                    noop[b, h, i] = 1 - w.sum()
                    weights[b, h, i, seen] = w
                    continue
                if variant in SOFTMAX_SLOTS:  # concatenate the slot to the keys and values.
                    if variant == "kv_bias":
                        extra = SCALE * q[b, i, h] @ np.asarray(slot["key"], np.float64)[kh]
                        if softcap is not None:
                            extra = softcap * np.tanh(extra / softcap)
                        extra_v = np.asarray(slot["value"], np.float64)[kh]
                    else:
                        extra = 0.0 if variant == "softmax_plus_one" else float(slot["logit"][h])
                        extra_v = np.zeros(Dq)
                    s, vals = np.append(s, extra), np.vstack([vals, extra_v])
                p = np.exp(s - s.max())
                p /= p.sum()
                lse[b, h, i] = s.max() + np.log(np.exp(s - s.max()).sum())
                out[b, i, h] = p @ vals
                noop[b, h, i] = p[-1] if variant in SOFTMAX_SLOTS else 0.0
                weights[b, h, i, seen] = p[: len(seen)]
    return out, lse, noop, weights


def inputs(seed=0, T=T):
    ks = jax.random.split(jax.random.key(seed), 6)
    q = jax.random.normal(ks[0], (B, T, H, D))
    k = jax.random.normal(ks[1], (B, T, K, D))
    v = jax.random.normal(ks[2], (B, T, K, D))
    slot = {
        "logit": jax.random.normal(ks[3], (H,)) * 2.0,
        "key": jax.random.normal(ks[4], (K, D)),
        "value": jax.random.normal(ks[5], (K, D)),
    }
    return q, k, v, slot


def segments(T=T):
    seg = np.zeros((B, T), np.int32)
    seg[0, :7], seg[0, 7:8], seg[0, 8:20] = 1, 2, 3  # row 0: a 1-token document, then padding.
    seg[1, :11], seg[1, 11:] = 1, 2
    return seg


def as_slot(variant, slot):
    if variant == "sink_logit":
        return variants.Slot(logit_H=slot["logit"])
    if variant == "kv_bias":
        return variants.Slot(key_KxD=slot["key"], value_KxD=slot["value"])
    return None


@functools.partial(
    jax.jit,
    static_argnames=("backend", "variant", "global_first_key", "window", "softcap", "return_probs"),
)
def run(backend, variant, q, k, v, slot, seg=None, **kw):
    return attn.attention(
        q,
        k,
        v,
        backend=backend,
        scale=SCALE,
        segment_ids=None if seg is None else jnp.asarray(seg),
        block_size=8,
        variant=variant,
        slot=as_slot(variant, slot),
        **kw,
    )


MASKS = [
    dict(),
    dict(seg=True, gfk=True),
    dict(seg=True, window=5, softcap=3.0),
]


def kw_masks(kw):
    return dict(global_first_key=kw["global_first_key"], window=kw["window"])


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("gfk", [False, True])
def test_visible_count_is_the_row_sum_of_the_mask(window, gfk):
    seg = segments()
    count = attn.visible_count(T, jnp.asarray(seg), gfk, window)
    idx = np.arange(T)
    mask = (idx[None, :] <= idx[:, None]) & (seg[:, :, None] == seg[:, None, :])
    if window is not None:
        mask &= (idx[:, None] - idx[None, :] < window)[None]
    if gfk:
        mask[:, :, 0] = True
    np.testing.assert_array_equal(count, mask.sum(-1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_output_does_not_depend_on_later_tokens(backend):
    """b_i = -log n_i depends on what query i sees only: a prefix gives the same outputs."""
    q, k, v, slot = inputs(8)
    full = run(backend, "sigmoid", q, k, v, slot)
    prefix = run(backend, "sigmoid", q[:, :10], k[:, :10], v[:, :10], slot)
    np.testing.assert_allclose(prefix.out_BxTxHxD, full.out_BxTxHxD[:, :10], atol=1e-6)
    np.testing.assert_allclose(prefix.lse_BxHxT, full.lse_BxHxT[..., :10], atol=1e-6)


# blockwise under the masked layouts: the second CI stage (the default suite keeps its time).
@pytest.mark.parametrize(
    "backend, variant, mask",
    [
        pytest.param(b, v, m, marks=pytest.mark.slow if b == "blockwise" and m else ())
        for m in MASKS
        for v in (*SOFTMAX_SLOTS, "sigmoid")
        for b in BACKENDS
    ],
    ids=lambda x: (",".join(x) or "causal") if isinstance(x, dict) else str(x),
)
def test_variant_matches_numpy(backend, variant, mask):
    """softmax_plus_one: an extra key of logit 0 and value 0; sink_logit: logit s_h; kv_bias:
    the slot concatenated to K and V; sigmoid: sigmoid(s - log n) on the n visible keys. Outputs,
    full-row LSE, noop mass, and the sink column (the weight of key 0) from the LSE."""
    q, k, v, slot = inputs()
    seg = segments() if mask.get("seg") else None
    kw = dict(global_first_key=mask.get("gfk", False), window=mask.get("window"))
    kw["softcap"] = mask.get("softcap")
    res = run(backend, variant, q, k, v, slot, seg, **kw)
    out, lse, noop, weights = numpy_variant(q, k, v, variant, seg, kw["global_first_key"],
                                            kw["window"], kw["softcap"], slot)  # fmt: skip
    np.testing.assert_allclose(res.out_BxTxHxD, out, atol=1e-5)
    np.testing.assert_allclose(res.lse_BxHxT, lse, atol=1e-5)
    np.testing.assert_allclose(res.noop_BxHxT, noop, atol=1e-5)
    sink = attn.sink_index(None if seg is None else jnp.asarray(seg), T, B, per_segment=False)
    count = attn.visible_count(T, None if seg is None else jnp.asarray(seg), **kw_masks(kw))
    bias = variants.sigmoid_bias(count) if variant == "sigmoid" else None
    col = attn.sink_attention(
        q, k, res.lse_BxHxT, sink, scale=SCALE, segment_ids=None if seg is None else
        jnp.asarray(seg), sigmoid_bias=bias, **kw,
    )  # fmt: skip
    np.testing.assert_allclose(col, weights[..., 0], atol=1e-6)
    if backend == "xla":
        probs = run("xla", variant, q, k, v, slot, seg, return_probs=True, **kw).probs_BxHxTxT
        np.testing.assert_allclose(probs, weights, atol=1e-6)


@pytest.mark.parametrize("variant", SOFTMAX_SLOTS)
def test_merge_on_fused_style_outputs(variant):
    """The merge the fused backends (cudnn, pallas) use, on a plain softmax's (o, lse) from
    numpy: the same as the slot concatenated to the row."""
    q, k, v, slot = inputs(1)
    o, lse, _, _ = numpy_variant(q, k, v, "softmax")
    o, lse = jnp.asarray(o, jnp.float32), jnp.asarray(lse, jnp.float32)
    if variant == "kv_bias":
        merged = variants.kv_slot(o, lse, q, slot["key"], slot["value"], scale=SCALE)
    else:
        merged = variants.null_slot(o, lse, slot["logit"] if variant == "sink_logit" else None)
    out, lse_ref, noop, _ = numpy_variant(q, k, v, variant, slot=slot)
    for got, want in zip(merged, (out, lse_ref, noop)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("variant", [*SOFTMAX_SLOTS, "sigmoid"])
def test_attention_gradients_xla_equal_blockwise(variant):
    """d/d(q, k, v, slot parameters) of a loss of the output and the LSE, with segments,
    padding and key 0 global; the same for the two backends."""
    q, k, v, slot = inputs(3)
    seg = segments()

    def loss(backend, q, k, v, slot):
        res = run(backend, variant, q, k, v, slot, seg, global_first_key=True)
        return jnp.sum(res.out_BxTxHxD * jnp.cos(res.out_BxTxHxD)) + jnp.sum(jnp.sin(res.lse_BxHxT))

    grad = lambda backend: jax.jit(jax.grad(functools.partial(loss, backend), (0, 1, 2, 3)))
    g_ref, g = grad("xla")(q, k, v, slot), grad("blockwise")(q, k, v, slot)
    used = {"sink_logit": ["logit"], "kv_bias": ["key", "value"]}.get(variant, [])
    for name in ("logit", "key", "value"):  # the slot's own gradient, where it has one.
        assert bool(jnp.any(g[3][name] != 0)) == (name in used)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", [*SOFTMAX_SLOTS, "sigmoid"])
def test_keys_outside_the_segment_and_future_keys_have_no_effect(backend, variant):
    q, k, v, slot = inputs(4)
    seg = segments()
    base = run(backend, variant, q, k, v, slot, seg)
    # Row 1: keys 0..10 are document 1; change them all, and the future key 23.
    k2 = k.at[1, :11].add(3.0).at[1, 23].add(3.0)
    v2 = v.at[1, :11].add(3.0).at[1, 23].add(3.0)
    moved = run(backend, variant, q, k2, v2, slot, seg)
    for got, want in ((moved.out_BxTxHxD[1, 11:23], base.out_BxTxHxD[1, 11:23]),
                      (moved.lse_BxHxT[1, :, 11:23], base.lse_BxHxT[1, :, 11:23]),
                      (moved.noop_BxHxT[1, :, 11:23], base.noop_BxHxT[1, :, 11:23])):  # fmt: skip
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(moved.out_BxTxHxD[1, :11], base.out_BxTxHxD[1, :11])


def test_gate_matches_numpy():
    rng = np.random.default_rng(5)
    o = rng.normal(size=(B, 6, H, D)).astype(np.float32)
    x = rng.normal(size=(B, 6, 16)).astype(np.float32)
    w = rng.normal(size=(16, H, D)).astype(np.float32) * 0.3
    b = rng.normal(size=(H, D)).astype(np.float32)
    g = 1 / (1 + np.exp(-(np.einsum("btd,dhe->bthe", x.astype(np.float64), w) + b)))
    out, noop = variants.gate(jnp.asarray(o), jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    np.testing.assert_allclose(out, o * g, atol=1e-5)
    np.testing.assert_allclose(noop, 1 - g.mean(-1).transpose(0, 2, 1), atol=1e-6)


def reference_gate(o, x, w, b):
    """The gate as plain autodiff sees it (its formulation before its own VJP)."""
    logits = jnp.einsum("btd,dhe->bthe", x, w, preferred_element_type=jnp.float32)
    g = jax.nn.sigmoid(logits + b.astype(jnp.float32))
    return (o.astype(jnp.float32) * g).astype(o.dtype), 1.0 - g.mean(-1).transpose(0, 2, 1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gate_vjp_matches_autodiff(dtype):
    """The gate's own VJP against autodiff of the unfused formulation, for cotangents of the
    output and of the noop mass: equal to float32 rounding in float32; in bf16 the logits'
    cotangent enters the weight and input matmuls rounded to bf16 (autodiff runs them in
    float32), so those agree to bf16 precision."""
    dt = jnp.dtype(dtype)
    ks = jax.random.split(jax.random.key(9), 6)
    o = jax.random.normal(ks[0], (B, 6, H, D), dt)
    x = jax.random.normal(ks[1], (B, 6, 16), dt)
    w = (jax.random.normal(ks[2], (16, H, D)) * 0.3).astype(dt)
    b = jax.random.normal(ks[3], (H, D), dt)
    dout = jax.random.normal(ks[4], (B, 6, H, D), dt)
    dnoop = jax.random.normal(ks[5], (B, H, 6))
    @jax.jit
    def both(*args):
        (out, noop), vjp = jax.vjp(variants.gate, *args)
        (ref, ref_noop), vjp_ref = jax.vjp(reference_gate, *args)
        return (out, noop, ref, ref_noop), vjp((dout, dnoop)), vjp_ref((dout, dnoop))

    (got, got_noop, want, want_noop), grads, grads_ref = both(o, x, w, b)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_noop, want_noop)
    for name, g, r in zip(("o", "x", "w", "b"), grads, grads_ref):
        assert g.dtype == r.dtype, name
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        if dtype == "float32":
            np.testing.assert_allclose(g, r, atol=1e-5, err_msg=name)
        else:
            assert np.linalg.norm(g - r) <= 1e-2 * np.linalg.norm(r), name


def test_kv_slot_score_from_bf16_equals_the_float32_upcast():
    """kv_bias's slot score, accumulated in float32 from bf16 q and k_b, equals the float32
    dot of the upcast inputs (its formulation before), outputs and gradients."""
    q, _, _, slot = inputs(11)
    o, lse, _, _ = numpy_variant(q, *inputs(11)[1:3], "softmax")
    o, lse = jnp.asarray(o, jnp.bfloat16), jnp.asarray(lse, jnp.float32)
    qb, key, value = q.astype(jnp.bfloat16), slot["key"].astype(jnp.bfloat16), slot["value"]

    def upcast(o, lse, q, key, value):
        s = SCALE * jnp.einsum("bthd,hd->bht", q.astype(jnp.float32),
                               jnp.repeat(key.astype(jnp.float32), H // K, axis=0))  # fmt: skip
        return variants.merge_slot(o, lse, s, jnp.repeat(value, H // K, axis=0)[None, None])

    def loss(f, *a):
        out, lse2, mass = f(*a)
        return jnp.sum(jnp.sin(out.astype(jnp.float32))) + jnp.sum(lse2) + jnp.sum(mass**2)

    args = (o, lse, qb, key, value)
    kv = lambda o, lse, q, key, value: variants.kv_slot(o, lse, q, key, value, scale=SCALE)
    for got, want in zip(jax.jit(kv)(*args), jax.jit(upcast)(*args)):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   atol=1e-6)  # fmt: skip
    g_new = jax.jit(jax.grad(functools.partial(loss, kv), (0, 1, 2, 3, 4)))(*args)
    g_old = jax.jit(jax.grad(functools.partial(loss, upcast), (0, 1, 2, 3, 4)))(*args)
    for a, b in zip(g_new, g_old):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   atol=1e-5, rtol=1e-2)  # fmt: skip


def test_rejections_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"attention_variant='nope' is not one of"):
        ModelConfig(attention_variant="nope")
    with pytest.raises(ValueError, match=r"attention='cudnn' has no sigmoid attention.*"
                       r"backends that can: \['xla', 'blockwise', 'pallas'\]"):  # fmt: skip
        ModelConfig(attention="cudnn", dtype="bfloat16", attention_variant="sigmoid")
    ModelConfig(attention="pallas", dtype="bfloat16", attention_variant="sigmoid")
    for variant in ("sink_logit", "softmax_plus_one", "gated", "kv_bias"):
        ModelConfig(attention="cudnn", dtype="bfloat16", attention_variant=variant)
    q, k, v, _ = inputs()
    with pytest.raises(ValueError, match="'gated'"):
        attn.attention(q, k, v, variant="gated")
    with pytest.raises(ValueError, match="needs slot"):
        attn.attention(q, k, v, variant="kv_bias")


TINY = dict(vocab_size=37, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64,
            block_size=8)  # fmt: skip


def randomise_variant_params(model, seed=0):
    """Give the variant's parameters (zero at initialisation) random values."""
    for i, name in enumerate(("sink_logit", "bk_slot", "bv_slot", "w_attn_gate", "b_attn_gate")):
        if hasattr(model.layers, name):
            p = getattr(model.layers, name)
            p[...] = jax.random.normal(jax.random.key(seed + i), p[...].shape) * 0.5


@pytest.mark.parametrize("variant", variants.VARIANTS)
def test_model_forward_returns_the_statistics(variant):
    """Every variant end to end (blockwise, segments): the collect keys, noop_mass included,
    with their shapes, a finite loss, and the parameter count."""
    tok = jax.random.randint(jax.random.key(0), (B, 20), 0, 37)
    seg = jnp.asarray(segments(20))
    collect = ("sink_attn", "lse", "noop_mass", "received_attn")
    cfg = ModelConfig(**TINY, attention="blockwise", attention_variant=variant)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    assert cfg.param_count() == sum(x.size for x in jax.tree.leaves(nnx.state(model)))
    graphdef, params = nnx.split(model)
    logits, aux = jax.jit(lambda p: nnx.merge(graphdef, p)(tok, seg, collect=collect))(params)
    assert set(aux) == set(collect) and bool(jnp.isfinite(jax.nn.log_softmax(logits)).all())
    for key in collect:
        assert aux[key].shape == (2, B, 4, 20) and bool(jnp.isfinite(aux[key]).all())
    if variant == "softmax":
        assert float(jnp.abs(aux["noop_mass"]).max()) == 0.0
    if variant == "gated":  # the gates start at 0.5 (W_g = 0, b_g = 0).
        np.testing.assert_allclose(aux["noop_mass"], 0.5, atol=1e-7)


@pytest.mark.parametrize("variant", [pytest.param("gated", marks=pytest.mark.slow), "kv_bias"])
def test_model_gradients_xla_equal_blockwise(variant):
    """The gradient of every parameter, the variant's own included (given random values), is
    the same through the two backends, with segments. The attention-level gradients of the
    other variants are compared in test_attention_gradients_xla_equal_blockwise."""
    tok = jax.random.randint(jax.random.key(0), (B, 20), 0, 37)
    seg = jnp.asarray(segments(20))
    grads = {}
    for backend in BACKENDS:
        model = Transformer(ModelConfig(**TINY, attention=backend, attention_variant=variant),
                            rngs=nnx.Rngs(0))  # fmt: skip
        randomise_variant_params(model)
        graphdef, params = nnx.split(model)

        def loss(params):
            logits, _ = nnx.merge(graphdef, params)(tok, seg)
            return -jax.nn.log_softmax(logits)[..., 0].mean()

        grads[backend] = jax.jit(jax.grad(loss))(params)
    own = {"gated": ("w_attn_gate", "b_attn_gate"), "kv_bias": ("bk_slot", "bv_slot")}[variant]
    for name in own:
        assert float(jnp.abs(grads["xla"]["layers"][name][...]).max()) > 0
    for a, b in zip(jax.tree.leaves(grads["xla"]), jax.tree.leaves(grads["blockwise"])):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # a compiled train step per variant: the second CI stage.
def test_train_step_logs_the_noop_mass():
    cfg = ModelConfig(**TINY, attention="blockwise", attention_variant="sink_logit")
    graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    opt = dict(lr=1e-3, min_lr=1e-4, warmup_steps=1, b1=0.9, b2=0.95, eps=1e-8,
               weight_decay=0.1, clip_norm=1.0)  # fmt: skip
    tx = optim.make_optimizer(opt, 4)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 37, (1, 2, 17)).astype(np.int32)
    seg = np.ones((1, 2, 16), np.int32)
    seg[0, 1, 12:] = 0  # padding
    batch = dict(tokens=ids[..., :-1], targets=ids[..., 1:], segment_ids=seg,
                 positions=np.broadcast_to(np.arange(16, dtype=np.int32), (1, 2, 16)).copy(),
                 loss_mask=(seg > 0).astype(np.int32))  # fmt: skip
    step = jax.jit(functools.partial(step_lib.train_step, graphdef=graphdef, tx=tx,
                                     use_segments=False, sink_stats=True))  # fmt: skip
    _, _, m = step(params, tx.init(params), batch)
    assert bool(m["finite"]) and m["noop_mass"].shape == (2, 4)
    # The slot's mass, averaged by hand over the 16 + 12 real queries.
    _, aux = nnx.merge(graphdef, state)(jnp.asarray(batch["tokens"][0]), collect=("noop_mass",))
    want = (aux["noop_mass"][:, 0].sum(-1) + aux["noop_mass"][:, 1, :, :12].sum(-1)) / 28
    np.testing.assert_allclose(m["noop_mass"], want, atol=1e-6)


@pytest.mark.slow  # the Pallas kernel interpreted on the CPU: the second CI stage.
def test_pallas_route_with_a_slot_matches_xla(monkeypatch):
    """The Pallas kernel (interpret mode on the CPU) under the dispatcher: its differentiable
    LSE carries the slot merge's gradient; with segments and key 0 global."""
    from sinks_jax.model import fused

    pallas = fused.pallas_gpu_attention
    monkeypatch.setattr(fused, "pallas_gpu_attention",
                        functools.partial(pallas, block_size=8, interpret=True))  # fmt: skip
    q, k, v, slot = inputs(6)
    seg = segments()

    def loss(backend, q, k, v, slot):
        res = run(backend, "kv_bias", q, k, v, slot, seg, global_first_key=True)
        return jnp.sum(jnp.sin(res.out_BxTxHxD)) + jnp.sum(jnp.cos(res.lse_BxHxT))

    grad = lambda backend: jax.jit(jax.grad(functools.partial(loss, backend), (0, 1, 2, 3)))
    g_ref, g = grad("xla")(q, k, v, slot), grad("pallas")(q, k, v, slot)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-4)
