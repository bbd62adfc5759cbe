"""GPU-only agreement of the fused backends with the explicit xla path (bf16 tolerances).

Run on a CUDA machine with `python -m pytest -m gpu tests/test_gpu.py` (with `-m gpu` the test
set-up leaves JAX free to pick the GPU); skipped, with the platform JAX found, elsewhere.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attn
from sinks_jax.model import fused

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        jax.default_backend() != "gpu",
        reason=f"needs a CUDA GPU; JAX's platform here is {jax.default_backend()!r}",
    ),
]


def qkv(T, H=8, K=2, D=64, B=2, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(ks[0], (B, T, H, D), jnp.bfloat16),
        jax.random.normal(ks[1], (B, T, K, D), jnp.bfloat16),
        jax.random.normal(ks[2], (B, T, K, D), jnp.bfloat16),
    )


def packed_segments(B, T, seed=0):
    rng = np.random.default_rng(seed)
    seg = np.zeros((B, T), np.int32)
    for b in range(B):
        cuts = np.sort(rng.choice(np.arange(1, T), 3, replace=False))
        for s, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, T]), start=1):
            seg[b, lo:hi] = s
    return jnp.asarray(seg)


@pytest.mark.parametrize("T", [256, 2048])
@pytest.mark.parametrize(
    "backend,segments,gfk",
    [
        ("cudnn", False, False),
        ("pallas", False, False),
        ("pallas", True, False),
        ("pallas", True, True),  # key 0 merged in through the LSE
    ],
)
def test_fused_matches_xla(T, backend, segments, gfk):
    q, k, v = qkv(T)
    seg = packed_segments(2, T) if segments else None
    scale = 64**-0.5
    kw = dict(scale=scale, segment_ids=seg, global_first_key=gfk)
    ref = attn.attention(q, k, v, backend="xla", **kw)
    got = attn.attention(q, k, v, backend=backend, **kw)
    out_err = float(
        jnp.abs(got.out_BxTxHxD.astype(jnp.float32) - ref.out_BxTxHxD.astype(jnp.float32)).max()
    )
    lse_err = float(jnp.abs(got.lse_BxHxT - ref.lse_BxHxT).max())
    sink = attn.sink_index(seg, T, 2, per_segment=True)
    s_ref = attn.sink_attention(q, k, ref.lse_BxHxT, sink, **kw)
    s_got = attn.sink_attention(q, k, got.lse_BxHxT, sink, **kw)
    sink_rel = float((jnp.abs(s_got - s_ref) / (s_ref + 1e-6)).max())
    print(
        f"{backend} T={T} seg={segments} gfk={gfk}: out {out_err:.2e} lse {lse_err:.2e} "
        f"sink rel {sink_rel:.2e}"
    )
    assert out_err < 3e-2 and lse_err < 1e-2 and sink_rel < 1e-2

    def loss(backend, q, k, v):
        o = attn.attention(q, k, v, backend=backend, **kw).out_BxTxHxD
        return jnp.sum(o.astype(jnp.float32) ** 2)

    g_ref = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2))(q, k, v)
    g_got = jax.grad(lambda *a: loss(backend, *a), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_got, g_ref):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        print(f"  grad rel {rel:.2e}")
        assert rel < 2e-2


def test_pallas_private_api_on_this_jax():
    """The keyword calls into Pallas's private `_mha_forward`/`_mha_backward` bind and run on
    the installed jax (a changed signature raises a RuntimeError naming the checked versions)."""
    print(f"jax {jax.__version__}; checked range {fused.PALLAS_VERIFIED_JAX}")
    q, k, v = qkv(256)
    seg = packed_segments(2, 256)
    scale = 64**-0.5
    out, lse = fused.pallas_gpu_attention(q, k, v, seg, scale=scale)
    ref = attn.attention(q, k, v, backend="xla", scale=scale, segment_ids=seg)
    assert float(jnp.abs(lse - ref.lse_BxHxT).max()) < 1e-2
    dv = jax.grad(
        lambda v: jnp.sum(fused.pallas_gpu_attention(q, k, v, seg, scale=scale)[0] ** 2)
    )(v)
    assert dv.shape == v.shape and bool(jnp.isfinite(dv.astype(jnp.float32)).all())


def test_cudnn_path_is_the_float32_lse_layer():
    """On the supported jax range the cuDNN layer with the float32 LSE runs (no fallback)."""
    import warnings

    q, k, v = qkv(256)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fused.cudnn_attention(q, k, v, scale=64**-0.5)
    assert fused.cudnn_lse_dtype() == "float32"


@pytest.mark.parametrize("T,window", [(256, 64), (2048, 512)])
def test_cudnn_sliding_window_matches_xla(T, window):
    q, k, v = qkv(T)
    scale = 64**-0.5
    ref = attn.attention(q, k, v, backend="xla", scale=scale, window=window)
    got = attn.attention(q, k, v, backend="cudnn", scale=scale, window=window)
    out_err = float(
        jnp.abs(got.out_BxTxHxD.astype(jnp.float32) - ref.out_BxTxHxD.astype(jnp.float32)).max()
    )
    lse_err = float(jnp.abs(got.lse_BxHxT - ref.lse_BxHxT).max())
    sink = attn.sink_index(None, T, 2, per_segment=False)
    kw = dict(scale=scale, window=window)
    s_ref = attn.sink_attention(q, k, ref.lse_BxHxT, sink, **kw)
    s_got = attn.sink_attention(q, k, got.lse_BxHxT, sink, **kw)
    sink_rel = float((jnp.abs(s_got - s_ref) / (s_ref + 1e-6)).max())
    print(f"cudnn window={window} T={T}: out {out_err:.2e} lse {lse_err:.2e} sink {sink_rel:.2e}")
    assert out_err < 3e-2 and lse_err < 1e-2 and sink_rel < 1e-2
    assert float(jnp.abs(s_got[..., window:]).max()) == 0.0  # key 0 out of every later window


def test_cudnn_model_with_local_and_global_layers_matches_xla():
    from flax import nnx

    from sinks_jax.model import ModelConfig, Transformer

    base = dict(
        vocab_size=257,
        num_layers=4,
        d_model=256,
        num_heads=4,
        num_kv_heads=2,
        d_ff=512,
        dtype="bfloat16",
        sliding_window=64,
        layer_types=("local", "local", "global", "local"),
        rope_local_theta=1e4,
        rope_theta=1e6,
        qk_norm=True,
        post_norms=True,
    )
    tok = jax.random.randint(jax.random.key(0), (2, 512), 0, 257)
    out = {}
    for backend in ("xla", "cudnn"):
        model = Transformer(ModelConfig(**base, attention=backend), rngs=nnx.Rngs(0))
        out[backend] = model(tok, collect=("sink_attn", "lse"))
    (a, aux_a), (b, aux_b) = out["xla"], out["cudnn"]
    logit_err = float(jnp.abs(a - b).max())
    lse_err = float(jnp.abs(aux_a["lse"] - aux_b["lse"]).max())
    sink_err = float(jnp.abs(aux_a["sink_attn"] - aux_b["sink_attn"]).max())
    print(f"local/global cudnn vs xla: logits {logit_err:.2e} lse {lse_err:.2e}", sink_err)
    # bf16 activations: from the second layer on the two backends see inputs that differ by
    # bf16 rounding, so the LSE agrees to a few bf16 ulps of its size (2^-7 relative), not
    # to the 1e-2 of a single layer (test_cudnn_sliding_window_matches_xla).
    lse_tol = 2**-7 * float(jnp.abs(aux_a["lse"]).max())
    assert logit_err < 5e-2 and lse_err < lse_tol and sink_err < 1e-2, lse_tol


@pytest.mark.parametrize("with_lse", [False, True])
@pytest.mark.parametrize("variant", ["sink_logit", "softmax_plus_one", "kv_bias"])
def test_cudnn_slot_variants_match_xla_with_gradients(variant, with_lse):
    """The slot in cuDNN's row, one backward of the layer over the merged row
    (model/cudnn_slot.py; with the LSE in the loss its cotangent folded into the output the
    layer is handed), against the explicit path (bf16)."""
    from sinks_jax.model import variants

    T = 1024
    q, k, v = qkv(T)
    ks = jax.random.split(jax.random.key(1), 3)
    slot = variants.Slot(
        logit_H=jax.random.normal(ks[0], (8,)) if variant == "sink_logit" else None,
        key_KxD=jax.random.normal(ks[1], (2, 64)) if variant == "kv_bias" else None,
        value_KxD=jax.random.normal(ks[2], (2, 64)) if variant == "kv_bias" else None,
    )

    def loss(backend, q, k, v, slot):
        res = attn.attention(q, k, v, backend=backend, variant=variant, slot=slot, window=256)
        lse_term = jnp.sum(res.lse_BxHxT) if with_lse else 0.0
        return jnp.sum(res.out_BxTxHxD.astype(jnp.float32) ** 2) + lse_term

    g_ref = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2, 3))(q, k, v, slot)
    g_got = jax.grad(lambda *a: loss("cudnn", *a), argnums=(0, 1, 2, 3))(q, k, v, slot)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref)):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        print(f"{variant} grad rel {rel:.2e}")
        assert rel < 2e-2


# Sigmoid attention on its fused Pallas kernels (model/sigmoid_kernel.py) against the xla path.
SIGMOID_LAYOUTS = {
    "causal_gqa": dict(K=2),
    "mqa_segments_gfk": dict(K=1, segments=True, gfk=True),
    "segments_window": dict(K=2, segments=True, window=192),
}


@pytest.mark.parametrize("T", [256, 2048])
@pytest.mark.parametrize("layout", list(SIGMOID_LAYOUTS))
def test_pallas_sigmoid_matches_xla(T, layout):
    """bf16 inputs: output, lse (log row mass), noop mass, sink attention and the gradients of
    a loss of the output and the LSE, against the explicit path on the same inputs."""
    m = SIGMOID_LAYOUTS[layout]
    q, k, v = qkv(T, K=m["K"])
    seg = packed_segments(2, T) if m.get("segments") else None
    kw = dict(segment_ids=seg, global_first_key=m.get("gfk", False), window=m.get("window"),
              variant="sigmoid")  # fmt: skip

    def loss(backend, q, k, v):
        res = attn.attention(q, k, v, backend=backend, **kw)
        val = jnp.sum(res.out_BxTxHxD.astype(jnp.float32) ** 2) + jnp.sum(res.lse_BxHxT)
        return val, res

    run = lambda b: jax.jit(jax.value_and_grad(lambda *a: loss(b, *a), (0, 1, 2), has_aux=True))
    ((_, ref), g_ref), ((_, got), g_got) = run("xla")(q, k, v), run("pallas")(q, k, v)
    out_err = float(
        jnp.abs(got.out_BxTxHxD.astype(jnp.float32) - ref.out_BxTxHxD.astype(jnp.float32)).max()
    )
    lse_err = float(jnp.abs(got.lse_BxHxT - ref.lse_BxHxT).max())
    noop_err = float(jnp.abs(got.noop_BxHxT - ref.noop_BxHxT).max())
    print(f"sigmoid pallas {layout} T={T}: out {out_err:.2e} lse {lse_err:.2e} noop {noop_err:.2e}")
    assert out_err < 3e-2 and lse_err < 1e-2 and noop_err < 1e-2
    for a, b in zip(g_got, g_ref):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        print(f"  grad rel {rel:.2e}")
        assert rel < 2e-2


@pytest.mark.parametrize("approx", [False, True])
def test_pallas_sigmoid_float32_matches_xla_closely(approx):
    """float32 inputs (IEEE float32 products in the kernels, HIGHEST in the reference): the
    kernels' arithmetic itself, with segments, key 0 global and GQA; `approx` uses the PTX
    approximate exp2 and reciprocal."""
    from sinks_jax.model import sigmoid_kernel as sk

    T = 512
    ks = jax.random.split(jax.random.key(7), 4)
    q = jax.random.normal(ks[0], (2, T, 8, 64))
    k = jax.random.normal(ks[1], (2, T, 2, 64))
    v = jax.random.normal(ks[2], (2, T, 2, 64))
    do = jax.random.normal(ks[3], (2, T, 8, 64))
    seg = packed_segments(2, T, seed=3)

    def kernel(q, k, v):
        return sk.sigmoid_attention(q, k, v, seg, scale=0.125, visible_count=attn.visible_count,
                                    global_first_key=True, blocks=sk.SigmoidBlocks(approx=approx))

    def xla(q, k, v):
        res = attn.attention(q, k, v, backend="xla", variant="sigmoid", segment_ids=seg,
                             global_first_key=True, scale=0.125)  # fmt: skip
        return res.out_BxTxHxD, res.lse_BxHxT

    def vjp(f):
        (out, lse), back = jax.vjp(f, q, k, v)
        return (out, lse, *back((do, jnp.ones_like(lse))))

    with jax.default_matmul_precision("highest"):
        got, ref = jax.jit(lambda: vjp(kernel))(), jax.jit(lambda: vjp(xla))()
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), got, ref):
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        print(f"sigmoid float32 approx={approx} {name} rel {rel:.2e}")
        assert rel < 1e-4


# The LSE in a loss (tests/test_lse_gradients.py on the kernels themselves): a loss of the LSE
# alone, a z-loss, and the output of the first half of the queries with the LSE of all (the
# second half's LSE has a cotangent, its output none).
LSE_LOSSES = {
    "sum_lse": lambda out, lse: jnp.sum(lse),
    "z_loss": lambda out, lse: jnp.mean(lse**2),
    "half": lambda out, lse: (
        jnp.sum(jnp.sin(out[:, : out.shape[1] // 2].astype(jnp.float32))) + jnp.sum(jnp.cos(lse))
    ),
}


@pytest.mark.parametrize(
    "backend,segments,gfk,window",
    [
        ("cudnn", False, False, None),
        ("cudnn", False, False, 256),
        ("pallas", False, False, None),
        ("pallas", True, True, None),  # key 0 merged in through the LSE
    ],
)
def test_fused_lse_gradients_match_xla(backend, segments, gfk, window):
    """bf16 inputs, T = 1024: dq, dk, dv of every loss above against the explicit path."""
    T = 1024
    q, k, v = qkv(T)
    seg = packed_segments(2, T) if segments else None
    kw = dict(segment_ids=seg, global_first_key=gfk, window=window)

    def grads(backend):
        def all_losses(q, k, v):
            out = {}
            for name, loss in LSE_LOSSES.items():
                f = lambda q, k, v, loss=loss: loss(
                    *attn.attention(q, k, v, backend=backend, **kw)[:2]
                )
                out[name] = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
            return out

        return jax.jit(all_losses)(q, k, v)

    got, ref = grads(backend), grads("xla")
    for name in LSE_LOSSES:
        size = max(float(jnp.linalg.norm(b.astype(jnp.float32))) for b in ref[name])
        for x, a, b in zip("qkv", got[name], ref[name]):
            a, b = a.astype(jnp.float32), b.astype(jnp.float32)
            rel = float(jnp.linalg.norm(a - b)) / size  # dv is 0 for a loss of the LSE alone
            print(f"{backend} seg={segments} gfk={gfk} window={window} {name} d{x} rel {rel:.2e}")
            assert rel < 2e-2


@pytest.mark.parametrize("dtype,backend", [("bfloat16", "cudnn"), ("float32", "blockwise")])
def test_streaming_fast_matches_decode_on_gpu(dtype, backend):
    """Sink cache 4+124 over 600 tokens of 4 streams: all queries at once through the GPU's
    windowed kernel (chunks carrying the window) against token-by-token decoding."""
    from flax import nnx

    from sinks_jax.model import ModelConfig, Transformer
    from sinks_jax.streaming import CachePolicy, decode_nll, fast_nll

    cfg = ModelConfig(vocab_size=97, num_layers=2, d_model=128, num_heads=4, num_kv_heads=2,
                      d_ff=256, dtype=dtype, init_std=0.1)  # fmt: skip
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (4, 600), 0, 97)
    pol = CachePolicy(4, 124)
    got = np.asarray(fast_nll(model, tokens, pol, backend=backend, chunk=256), np.float64)
    dec = np.asarray(decode_nll(model, tokens, pol), np.float64)
    ref = np.asarray(fast_nll(model, tokens, pol, backend="xla", chunk=256), np.float64)
    tol = 1e-4 if dtype == "float32" else 5e-2
    print(f"stream {dtype} {backend}: max |fast - decode| {np.abs(got - dec).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=tol)
    np.testing.assert_allclose(got, dec, atol=tol)
    assert abs(got.mean() - dec.mean()) < tol / 10
