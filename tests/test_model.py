"""The decoder: config validation, shapes, causality, segment isolation, statistics, scan."""

import json

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model import COLLECTABLE, ModelConfig, Transformer, forward, sink_query_mask

TINY = dict(vocab_size=97, num_layers=3, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)
# Gemma 2/3 knobs: local layers 0 and 2 (window 5), their own RoPE base, q/k norms, post-norms,
# soft-capped scores and logits.
GEMMA_LIKE = dict(
    sliding_window=5,
    layer_types=("local", "global", "local"),
    rope_local_theta=10.0,
    qk_norm=True,
    post_norms=True,
    norm_scale_offset=1.0,
    attn_logit_softcap=4.0,
    final_logit_softcap=10.0,
)


def make(**overrides):
    return Transformer(ModelConfig(**{**TINY, **overrides}), rngs=nnx.Rngs(0))


def tokens(B=2, T=16, seed=1):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, TINY["vocab_size"])


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(num_heads=12, num_kv_heads=5, d_model=48), "num_kv_heads=5"),
        (dict(d_model=30, num_heads=4), "d_model=30"),
        (dict(attention="flash"), "attention='flash'"),
        (dict(dtype="fp8"), "dtype='fp8'"),
        (dict(num_layers=0), "num_layers=0"),
        (dict(head_dim=7), "even for RoPE"),
        (dict(sink_key="bos"), "sink_key='bos'"),
        (dict(sliding_window=4, attention="pallas"), "'pallas' has no sliding window"),
        (dict(sliding_window=0), "sliding_window=0"),
        (dict(layer_types=("local",), sliding_window=4), "1 entries for num_layers=3"),
        (dict(layer_types=("local", "global", "local")), "sliding_window=None"),
        (dict(layer_types=("local", "global", "full"), sliding_window=4), "'full'"),
        (dict(attn_logit_softcap=50.0, attention="cudnn", dtype="bfloat16"), "soft-cap"),
    ],
)
def test_config_errors_name_the_bad_value(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**TINY, **bad})


def test_config_roundtrip_and_param_count():
    cfg = ModelConfig(**TINY).replace(rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == cfg.param_count()
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_dict({**TINY, "n_layer": 3})


def test_gemma_knobs_roundtrip_through_json_and_param_count():
    cfg = ModelConfig(**TINY, **GEMMA_LIKE)
    assert cfg.local_layers == (True, False, True)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == cfg.param_count()
    assert ModelConfig(**TINY, sliding_window=4).local_layers == (True,) * 3  # Mistral-style


def test_shapes_dtypes_and_collect():
    model = make()
    tok = tokens()
    logits, aux = model(tok)
    assert logits.shape == (2, 16, 97) and logits.dtype == jnp.float32
    assert aux == {}
    L, B, H, T, D = 3, 2, 4, 16, 32
    logits2, aux = model(tok, collect=COLLECTABLE)
    assert set(aux) == set(COLLECTABLE)
    assert aux["attn_probs"].shape == (L, B, H, T, T)
    assert aux["sink_attn"].shape == aux["lse"].shape == aux["value_norms"].shape == (L, B, H, T)
    assert aux["hidden"].shape == (L + 1, B, T, D)
    np.testing.assert_array_equal(logits, logits2)  # statistics never change the logits
    _, only = model(tok, collect=("lse",))
    assert set(only) == {"lse"}
    with pytest.raises(ValueError, match="unknown statistics"):
        model(tok, collect=("attention",))
    with pytest.raises(ValueError, match="attention='xla'"):
        make(attention="blockwise")(tok, collect=("attn_probs",))


def test_bf16_compute_keeps_fp32_params_and_logits():
    model = make(dtype="bfloat16")
    logits, aux = model(tokens(), collect=("hidden", "sink_attn"))
    assert logits.dtype == jnp.float32 and aux["hidden"].dtype == jnp.bfloat16
    assert aux["sink_attn"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_sink_attn_is_the_attention_column_of_the_sink_key():
    model = make()
    tok = tokens()
    _, aux = model(tok, collect=("attn_probs", "sink_attn", "lse"))
    np.testing.assert_allclose(aux["sink_attn"], aux["attn_probs"][..., 0], atol=1e-6)
    seg = jnp.array([[1] * 6 + [2] * 10, [1] * 9 + [2] * 5 + [0] * 2])
    per_doc = make(sink_key="segment")
    _, aux = per_doc(tok, seg, collect=("attn_probs", "sink_attn"))
    first = np.array([[0] * 6 + [6] * 10, [0] * 9 + [9] * 5 + [14] * 2])
    column = np.take_along_axis(
        np.asarray(aux["attn_probs"]), first[None, :, None, :, None], axis=-1
    )[..., 0]
    np.testing.assert_allclose(aux["sink_attn"], column, atol=1e-6)


def test_value_norms_and_hidden_match_a_manual_computation():
    model = make(num_kv_heads=1)
    tok = tokens()
    _, aux = model(tok, collect=("hidden", "value_norms"))
    emb = np.asarray(model.embedding[...])[np.asarray(tok)]
    np.testing.assert_allclose(aux["hidden"][0], emb, atol=1e-6)
    # layer 0 values: RMSNorm(x0) @ wv[0]
    x = emb / np.sqrt((emb**2).mean(-1, keepdims=True) + 1e-5)
    x = x * np.asarray(model.layers.attn_norm.scale[...][0])
    v = np.einsum("btd,dkh->btkh", x, np.asarray(model.layers.wv[...][0]))
    want = np.repeat(np.linalg.norm(v, axis=-1), 4, axis=2).transpose(0, 2, 1)
    np.testing.assert_allclose(aux["value_norms"][0], want, rtol=1e-5)


@pytest.mark.parametrize("backend", ["xla", "blockwise"])
def test_causality(backend):
    model = make(attention=backend, block_size=4)
    tok = tokens(B=1, T=16)
    j = 9
    tok2 = tok.at[0, j].set((tok[0, j] + 1) % 97)
    a, _ = model(tok)
    b, _ = model(tok2)
    np.testing.assert_allclose(a[:, :j], b[:, :j], atol=1e-6)
    assert np.abs(np.asarray(a[:, j:] - b[:, j:])).max() > 1e-4


@pytest.mark.parametrize("backend", ["xla", "blockwise"])
def test_segment_isolation(backend):
    model = make(attention=backend, block_size=8)
    doc_a, doc_b = tokens(1, 7, seed=2), tokens(1, 9, seed=3)
    packed = jnp.concatenate([doc_a, doc_b], axis=1)
    seg = jnp.array([[1] * 7 + [2] * 9])
    pos = jnp.array([list(range(7)) + list(range(9))])
    packed_logits, _ = model(packed, seg, pos)
    alone, _ = model(doc_b)
    np.testing.assert_allclose(packed_logits[:, 7:], alone, atol=1e-5)
    mixed, _ = model(packed, None, pos)  # no intra-doc masking: doc A leaks into doc B
    assert np.abs(np.asarray(mixed[:, 7:] - alone)).max() > 1e-3


def jitted_outputs_and_grads(model, tok, seg, collect):
    """(logits, aux) and the gradient of a loss of the logits, as one compiled program (eager
    dispatch would compile every operation on its own)."""
    graphdef, params = nnx.split(model)

    def f(params):
        def loss(p):
            logits, _ = forward(graphdef, p, tok, segment_ids=seg)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

        return forward(graphdef, params, tok, segment_ids=seg, collect=collect), jax.grad(loss)(
            params
        )

    return jax.jit(f)(params)


def test_blockwise_model_matches_xla_model_and_gradients():
    tok = tokens()
    seg = jnp.array([[1] * 5 + [2] * 11, [1] * 16])
    xla_model, bw_model = make(), make(attention="blockwise", block_size=4)
    collect = ("lse", "sink_attn")
    ((a, aux_a), ga), ((b, aux_b), gb) = (
        jitted_outputs_and_grads(m, tok, seg, collect) for m in (xla_model, bw_model)
    )
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(aux_a["lse"], aux_b["lse"], atol=1e-5)
    np.testing.assert_allclose(aux_a["sink_attn"], aux_b["sink_attn"], atol=1e-5)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_pure_forward_and_embedding_input():
    model = make()
    tok = tokens()
    graphdef, params = nnx.split(model)
    emb = model.embed(tok)
    a, _ = model(tok)
    b, aux = jax.jit(lambda p, e: forward(graphdef, p, embeddings_BxTxD=e, collect=("hidden",)))(
        params, emb
    )
    np.testing.assert_allclose(a, b, atol=1e-5)
    # d logits / d embeddings through the pure function exists and respects causality
    jac = jax.jacrev(lambda e: forward(graphdef, params, embeddings_BxTxD=e)[0][0, 3, 0])(emb)
    assert np.all(np.asarray(jac[0, 4:]) == 0) and np.abs(np.asarray(jac[0, :4])).max() > 0


def test_remat_gives_the_same_gradients():
    tok = tokens()

    def loss(model):
        return jnp.mean(model(tok)[0] ** 2)

    g1 = nnx.grad(loss)(make())
    g2 = nnx.grad(loss)(make(remat=True))
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_hf_style_knobs_run():
    model = make(
        norm_type="layer",
        activation="gelu_tanh",
        gated_mlp=False,
        position_type="learned",
        max_position_embeddings=32,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        tie_embeddings=True,
        embedding_scale=32**0.5,
    )
    logits, _ = model(tokens())
    assert np.isfinite(np.asarray(logits)).all()


def test_program_does_not_grow_with_depth():
    """Layers are scanned over stacked parameters: 48 layers lower to the same program as 2
    (compile time against depth is measured by `sinks-jax bench compile`, not here)."""

    def dot_count(layers):
        graphdef, params = nnx.split(make(num_layers=layers))
        fn = jax.jit(lambda p, t: forward(graphdef, p, t)[0])
        return fn.lower(params, tokens()).as_text().count("dot_general")

    assert dot_count(2) == dot_count(48)


def test_local_global_pattern_lowers_to_one_scanned_body():
    """Gemma 3's 5:1 pattern over 26 layers (not a multiple of 6) lowers to the same program
    as over 6 layers: one scanned body, whatever the depth and the pattern."""

    def dot_count(layers):
        types = tuple("global" if (i + 1) % 6 == 0 else "local" for i in range(layers))
        cfg = ModelConfig(**{**TINY, "num_layers": layers}, sliding_window=4, layer_types=types)
        graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
        fn = jax.jit(lambda p, t: forward(graphdef, p, t, collect=("sink_attn",))[0])
        return fn.lower(params, tokens()).as_text().count("dot_general")

    assert dot_count(6) == dot_count(26)


@pytest.mark.parametrize("backend", ["xla", "blockwise"])
def test_received_attention_equals_column_sums(backend):
    tok = tokens()
    seg = jnp.array([[1] * 5 + [2] * 11, [1] * 16])
    _, ref = make()(tok, seg, collect=("attn_probs",))
    _, aux = make(attention=backend, block_size=4)(tok, seg, collect=("received_attn",))
    np.testing.assert_allclose(aux["received_attn"], ref["attn_probs"].sum(axis=3), atol=1e-5)


def test_residual_stream_is_differentiable_and_matches_hidden():
    model = make()
    tok = tokens()
    emb = model.embed(tok)
    _, aux = model(tok, collect=("hidden",))
    hidden = model.residual_stream(emb)
    np.testing.assert_allclose(hidden, aux["hidden"], atol=1e-6)
    # the statistic is stop-gradient; the residual stream is not
    g_stat = jax.grad(
        lambda e: model(None, collect=("hidden",), embeddings_BxTxD=e)[1]["hidden"][-1].sum()
    )(emb)
    g_res = jax.grad(lambda e: model.residual_stream(e)[-1].sum())(emb)
    assert np.all(np.asarray(g_stat) == 0) and np.abs(np.asarray(g_res)).max() > 0


def test_bf16_logits_option():
    model = make(dtype="bfloat16", logits_dtype="bfloat16")
    logits, _ = model(tokens())
    assert logits.dtype == jnp.bfloat16


def test_output_head_gradients_match_plain_matmul():
    from sinks_jax.model.head import output_head

    h = jax.random.normal(jax.random.key(0), (2, 5, 16), jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (16, 40), jnp.bfloat16)

    def loss(head_fn, h, w):
        logits = head_fn(h, w)
        return jnp.sum(jax.nn.log_softmax(logits.astype(jnp.float32))[..., 3])

    plain = lambda h, w: jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)
    assert output_head(h, w).dtype == jnp.float32
    np.testing.assert_array_equal(output_head(h, w), plain(h, w))
    g_ref = jax.grad(lambda h, w: loss(plain, h, w), argnums=(0, 1))(h, w)
    g_got = jax.grad(lambda h, w: loss(output_head, h, w), argnums=(0, 1))(h, w)
    for a, b in zip(g_got, g_ref):  # bf16 rounding of the cotangent only
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.linalg.norm(a - b) <= 1e-2 * np.linalg.norm(b)


def test_local_layers_blockwise_matches_xla_statistics_and_gradients():
    tok = tokens(T=24)
    seg = jnp.array([[1] * 10 + [2] * 14, [1] * 24])
    xla_model = make(**GEMMA_LIKE)
    bw_model = make(**GEMMA_LIKE, attention="blockwise", block_size=4)  # blocks skipped
    collect = ("lse", "sink_attn", "hidden")  # received_attn: test_analyze_cmd, blockwise

    ((a, aux_a), ga), ((b, aux_b), gb) = (
        jitted_outputs_and_grads(m, tok, seg, collect) for m in (xla_model, bw_model)
    )
    np.testing.assert_allclose(a, b, atol=1e-5)
    for name in collect:
        np.testing.assert_allclose(aux_a[name], aux_b[name], atol=1e-5, err_msg=name)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("sink_key", ["window", "segment"])
def test_local_layers_sink_statistics_and_query_mask(sink_key):
    T, W = 24, GEMMA_LIKE["sliding_window"]
    tok = tokens(T=T)
    seg = jnp.array([[1] * 10 + [2] * 14, [1] * T])
    model = make(**GEMMA_LIKE, sink_key=sink_key)
    _, aux = model(tok, seg, collect=("attn_probs", "sink_attn", "received_attn"))
    probs = np.asarray(aux["attn_probs"])  # [L, B, H, T, T]
    t = np.arange(T)
    sink_BxT = np.where((t >= 10) & (sink_key == "segment"), 10, 0)[None].repeat(2, 0)
    sink_BxT[1] = 0
    column = np.take_along_axis(probs, sink_BxT[None, :, None, :, None], axis=-1)[..., 0]
    np.testing.assert_allclose(aux["sink_attn"], column, atol=1e-6)
    np.testing.assert_allclose(aux["received_attn"], probs.sum(axis=-2), atol=1e-5)
    mask = np.asarray(sink_query_mask(model.config, T, seg))  # [L, B, T]
    np.testing.assert_array_equal(np.broadcast_to(mask[:, :, None], column.shape), column > 0)
    # By hand: local layers see the sink from the first W queries of its document only.
    in_doc = (t < 10) | (sink_key == "segment")
    first = np.where(t >= 10, t - 10, t) if sink_key == "segment" else t
    np.testing.assert_array_equal(mask[0, 0], in_doc & (first < W))
    np.testing.assert_array_equal(mask[1, 0], in_doc)
    np.testing.assert_array_equal(mask[2, 1], t < W)
    np.testing.assert_array_equal(mask[1, 1], np.ones(T, bool))


@pytest.mark.slow  # three compiles: in the second CI stage
def test_scan_unroll_computes_the_same_function():
    """`scan_unroll` changes how the layer loop is compiled, not what it computes."""
    base = dict(vocab_size=53, num_layers=3, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)
    tok = jax.random.randint(jax.random.key(1), (2, 16), 0, 53)
    outs = []
    for unroll in (1, 3):
        model = Transformer(ModelConfig(**base, scan_unroll=unroll), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        loss = lambda p, graphdef=graphdef: jnp.sum(jax.nn.log_softmax(
            nnx.merge(graphdef, p)(tok)[0])[..., 0])  # fmt: skip
        outs.append(jax.value_and_grad(loss)(params))
    for other in outs[1:]:  # float32, the same operations in the same order.
        for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(outs[0])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="scan_unroll=0 must be a positive int"):
        ModelConfig(**base, scan_unroll=0)
