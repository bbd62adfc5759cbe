"""The fused sigmoid-attention kernels (model/sigmoid_kernel.py) in Pallas interpret mode on the
CPU, against a float64 numpy brute force (outputs, row mass and the backward pass written out
by hand) and the `xla` sigmoid path (autodiff); their lowering to Triton for the GPU.

Interpret mode runs the kernels' own code, tile by tile, and compiles slowly (5 - 10 s per
kernel set): the default suite keeps one layout with every mask at once (segments, padding,
a window, key 0 global, GQA, T and head dim padded to the tiles, several tiles per axis);
the others are in the second CI stage. Tolerances: float32 arithmetic against float64 over
rows of at most 40 terms of size O(1): 1e-5 absolute for outputs, 1e-4 for gradients.
"""

import functools
import math

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sinks_jax.model import ModelConfig, backends
from sinks_jax.model import attention as attn
from sinks_jax.model import sigmoid_kernel as sk

B, T, H, K, D = 2, 40, 4, 2, 8  # T pads to 48 (three 16-tiles), D to 16.
SCALE = D**-0.5
TILES = sk.SigmoidBlocks(fwd_q=16, fwd_k=16, dq_q=16, dq_k=16, dkv_q=16, dkv_k=16)


def segments(T=T):
    seg = np.zeros((B, T), np.int32)
    seg[0, :7], seg[0, 7:8], seg[0, 8:30] = 1, 2, 3  # row 0: a 1-token document, then padding.
    seg[1, :11], seg[1, 11:] = 1, 2
    return seg


def numpy_sigmoid(q, k, v, dout, dlse, seg=None, gfk=False, window=None):
    """float64 brute force: out, lse (log row mass), and the VJP (dq, dk, dv) for cotangents
    (dout, dlse), written row by row: A = sigmoid(s - log n), dS = A (1 - A) (dO.v + dlse/L)."""
    q, k, v, dout, dlse = (np.asarray(x, np.float64) for x in (q, k, v, dout, dlse))
    Bq, Tq, Hq, _ = q.shape
    G = Hq // k.shape[2]
    out, lse = np.zeros(q.shape), np.zeros((Bq, Hq, Tq))
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    for b in range(Bq):
        for h in range(Hq):
            kh = h // G
            for i in range(Tq):
                seen = [
                    j
                    for j in range(i + 1)
                    if (seg is None or seg[b, i] == seg[b, j])
                    and (window is None or i - j < window)
                    or (gfk and j == 0)
                ]
                s = SCALE * k[b, seen, kh] @ q[b, i, h]
                a = 1 / (1 + np.exp(-(s - math.log(len(seen)))))
                out[b, i, h] = a @ v[b, seen, kh]
                lse[b, h, i] = np.log(a.sum())
                ds = a * (1 - a) * (v[b, seen, kh] @ dout[b, i, h] + dlse[b, h, i] / a.sum())
                dq[b, i, h] = SCALE * ds @ k[b, seen, kh]
                dk[b, seen, kh] += SCALE * ds[:, None] * q[b, i, h][None]
                dv[b, seen, kh] += a[:, None] * dout[b, i, h][None]
    return out, lse, (dq, dk, dv)


def inputs(seed=0, dtype=jnp.float32, T=T):
    ks = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(ks[0], (B, T, H, D), dtype)
    k = jax.random.normal(ks[1], (B, T, K, D), dtype)
    v = jax.random.normal(ks[2], (B, T, K, D), dtype)
    dout = jax.random.normal(ks[3], (B, T, H, D), dtype)
    dlse = jax.random.normal(ks[4], (B, H, T), jnp.float32)
    return q, k, v, dout, dlse


def kernel_vjp(q, k, v, dout, dlse, seg, gfk, window, blocks=TILES):
    def f(q, k, v):
        return sk.sigmoid_attention(
            q, k, v, None if seg is None else jnp.asarray(seg), scale=SCALE,
            visible_count=attn.visible_count, global_first_key=gfk, window=window, blocks=blocks,
        )  # fmt: skip

    (out, lse), vjp = jax.vjp(f, q, k, v)
    return out, lse, vjp((dout, dlse))


MASKS = {
    "segments+window+gfk": dict(seg=True, gfk=True, window=6),
    "causal": dict(),
    "segments": dict(seg=True),
    "segments+gfk": dict(seg=True, gfk=True),
    "window+gfk": dict(gfk=True, window=20),
}


@pytest.mark.parametrize(
    "mask",
    [pytest.param(m, marks=pytest.mark.slow if i else ()) for i, m in enumerate(MASKS)],
)
def test_kernel_matches_numpy_with_gradients(mask):
    """Outputs, log row mass and the VJP for random cotangents of both, float32 inputs."""
    m = MASKS[mask]
    seg = segments() if m.get("seg") else None
    q, k, v, dout, dlse = inputs(1)
    out, lse, grads = jax.jit(
        functools.partial(kernel_vjp, seg=seg, gfk=m.get("gfk", False), window=m.get("window"))
    )(q, k, v, dout, dlse)
    out_np, lse_np, grads_np = numpy_sigmoid(q, k, v, dout, dlse, seg, m.get("gfk", False),
                                             m.get("window"))  # fmt: skip
    np.testing.assert_allclose(out, out_np, atol=1e-5)
    np.testing.assert_allclose(lse, lse_np, atol=1e-5)
    for name, got, want in zip("qkv", grads, grads_np):
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"d{name}")


def test_visibility_is_the_mask_as_ranges():
    """first_i and last_j from `visible_count` bound exactly the keys (queries) the mask lets
    each query (key) see, segments, padding and windows included; the bias is -log n_i."""
    seg = jnp.asarray(segments())
    idx = np.arange(T)
    for window in (None, 6):
        for gfk in (False, True):
            mask = np.asarray(attn.visible_mask(T, seg, gfk, window))
            bias, first, last = sk.visibility(attn.visible_count, T, seg, gfk, window)
            ranged = (idx[None, None, :] >= np.asarray(first)[:, :, None]) & (
                idx[None, None, :] <= idx[None, :, None]
            )
            by_keys = (idx[None, :, None] >= idx[None, None, :]) & (
                idx[None, :, None] <= np.asarray(last)[:, None, :]
            )
            if gfk:
                ranged[:, :, 0] = by_keys[:, :, 0] = True
            np.testing.assert_array_equal(ranged, mask)
            np.testing.assert_array_equal(by_keys, mask)
            np.testing.assert_allclose(bias, -np.log(mask.sum(-1)), atol=1e-6)


def test_attention_dispatches_pallas_sigmoid():
    """`attention(backend="pallas", variant="sigmoid")` runs the kernels (interpret mode off
    GPU, default tiles fitted to T) and returns the xla path's output, lse and noop mass, with
    segments and key 0 global (the gradients: test_kernel_matches_numpy_with_gradients and,
    through the model, test_model_on_pallas_sigmoid_matches_blockwise)."""
    q, k, v, _, _ = inputs(2, T=24)
    kw = dict(scale=SCALE, segment_ids=jnp.asarray(segments(24)), global_first_key=True,
              variant="sigmoid")  # fmt: skip
    run = lambda backend: jax.jit(functools.partial(attn.attention, backend=backend, **kw))
    ref, got = run("xla")(q, k, v), run("pallas")(q, k, v)
    for name in ("out_BxTxHxD", "lse_BxHxT", "noop_BxHxT"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), atol=1e-5)


@pytest.mark.slow  # bf16 through the interpreted kernels: the second CI stage.
def test_bf16_inputs_accumulate_in_float32():
    """bf16 q, k, v: the kernels' float32 scores and sums, with A rounded to bf16 only where
    it enters a matmul, against the float64 brute force on the same bf16 inputs."""
    seg = segments()
    q, k, v, dout, dlse = inputs(3, jnp.bfloat16)
    out, lse, grads = jax.jit(functools.partial(kernel_vjp, seg=seg, gfk=True, window=None))(
        q, k, v, dout, dlse
    )
    assert out.dtype == jnp.bfloat16 and lse.dtype == jnp.float32
    out_np, lse_np, grads_np = numpy_sigmoid(q, k, v, dout, dlse, seg, True)
    rel = lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
    assert rel(out, out_np) < 1e-2 and float(np.abs(lse - lse_np).max()) < 1e-2
    for got, want in zip(grads, grads_np):
        assert got.dtype == jnp.bfloat16 and rel(got, want) < 2e-2


@pytest.mark.parametrize("approx", [False, True])
def test_kernels_lower_to_triton(approx):
    """Forward, dQ and dK/dV lower to Triton IR for the GPU (no device needed): every
    operation has a Triton lowering and every tile a power-of-two size, at a model's shape
    (bf16, head dim 64, MQA) with segments, a window and key 0 global."""
    Tg, Hg, Dg = 256, 8, 64
    q = jax.ShapeDtypeStruct((2, Tg, Hg, Dg), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, Tg, 1, Dg), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, Tg), jnp.int32)

    def loss(q, k, v, seg):
        out, lse = sk.sigmoid_attention(
            q, k, v, seg, scale=Dg**-0.5, visible_count=attn.visible_count,
            global_first_key=True, window=64, blocks=sk.SigmoidBlocks(approx=approx),
            interpret=False,
        )  # fmt: skip
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

    lowered = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, kv, kv, seg)
    text = lowered.lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 3  # forward, dQ, dK/dV.


def test_tiles_are_checked_and_fitted():
    with pytest.raises(ValueError, match=r"fwd_k=24 must be a power of two of at least 16"):
        sk.SigmoidBlocks(fwd_k=24)
    fitted = sk.SigmoidBlocks().fitted(40)
    assert (fitted.fwd_q, fitted.fwd_k, fitted.largest) == (64, 64, 64)
    assert sk.SigmoidBlocks().fitted(3).largest == 16
    q, k, v, _, _ = inputs()
    with pytest.raises(ValueError, match="cannot soft-cap"):
        sk.sigmoid_attention(q, k, v, scale=SCALE, visible_count=attn.visible_count, softcap=5.0)


def test_backend_table_runs_sigmoid_on_pallas():
    """pallas takes sigmoid (windows included, which its softmax kernel lacks); cudnn refuses
    it, naming the backends that can."""
    ModelConfig(attention="pallas", dtype="bfloat16", attention_variant="sigmoid",
                sliding_window=64, layer_types=("local", "global"))  # fmt: skip
    assert backends.problems("pallas", variant="sigmoid", window=True, segment_ids=True) == []
    assert backends.problems("pallas", variant="softmax", window=True) != []
    with pytest.raises(ValueError, match=r"attention='cudnn' has no sigmoid attention.*"
                       r"backends that can: \['xla', 'blockwise', 'pallas'\]"):  # fmt: skip
        ModelConfig(attention="cudnn", dtype="bfloat16", attention_variant="sigmoid")


@pytest.mark.slow  # a model through the interpreted kernels: the second CI stage.
def test_model_on_pallas_sigmoid_matches_blockwise():
    """The decoder with sigmoid attention on pallas (interpreted) and on blockwise: logits and
    every statistic (sink_attn from the bias, lse, noop_mass), with segments; and the gradient
    of a loss."""
    from flax import nnx

    from sinks_jax.model import Transformer

    tiny = dict(vocab_size=37, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64,
                block_size=8, attention_variant="sigmoid")  # fmt: skip
    tok = jax.random.randint(jax.random.key(0), (B, 20), 0, 37)
    seg = jnp.asarray(segments(20))
    collect = ("sink_attn", "lse", "noop_mass")
    results = {}
    for backend in ("blockwise", "pallas"):
        model = Transformer(ModelConfig(**tiny, attention=backend), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        def loss(params):
            logits, aux = nnx.merge(graphdef, params)(tok, seg, collect=collect)
            return -jax.nn.log_softmax(logits)[..., 0].mean(), (logits, aux)

        results[backend] = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    ((_, (la, aux_a)), ga), ((_, (lb, aux_b)), gb) = results["blockwise"], results["pallas"]
    np.testing.assert_allclose(la, lb, atol=1e-5)
    for key in collect:
        np.testing.assert_allclose(aux_a[key], aux_b[key], atol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(a, b, atol=1e-5)
