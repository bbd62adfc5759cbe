"""The LSE as part of a loss, through every fused backend, against the explicit xla path.

A loss may read the LSE alone (`sum(lse)`, a z-loss `mean(lse^2)`), or the output on some rows
and the LSE on others: then a query's LSE has a cotangent while its output has none, and a flash
backward must take the LSE's cotangent g as the shift of its row term, D_i = dout_i . out_i - g_i,
not through dout. cuDNN runs as the faked layer of tests/test_fused.py (cuDNN has no CPU
build), Pallas and splash in Pallas interpret mode (the kernels' own code). Every loss of a case
is differentiated in one compiled program: interpret mode is slow to compile, so the default run
keeps one case per backend (splash's through the soft-capping test below) and the second CI
stage (`-m slow`) the rest.

Also here: key 0 merged into a segment-masked kernel through the LSE (`global_first_key` with
segment ids) is soft-capped like every other score, with inputs large enough that the cap binds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_fused import fake_cudnn_layer  # noqa: F401  (the faked cuDNN layer, a fixture)

from sinks_jax.model import attention as attn
from sinks_jax.model import blockwise, flash_lse, fused

SLOW = pytest.mark.slow


def qkv(B, T, H, K, D, seed=0, size=1.0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (
        size * jax.random.normal(ks[0], (B, T, H, D)),
        size * jax.random.normal(ks[1], (B, T, K, D)),
        jax.random.normal(ks[2], (B, T, K, D)),
    )


def documents(T, cuts):
    """[1, T] segment ids 1, 2, ... starting at each cut."""
    return jnp.asarray((1 + (np.arange(T)[:, None] >= np.asarray(cuts)[None]).sum(-1))[None])


def first_half(x_BxTx___):
    return x_BxTx___[:, : x_BxTx___.shape[1] // 2]


# Losses of (out [B,T,H,D], lse [B,H,T]). "half": the output of the first half of the queries
# and the LSE of every query, so the second half's LSE has a cotangent and its output none.
LOSSES = {
    "sum_lse": lambda out, lse: jnp.sum(lse),
    "z_loss": lambda out, lse: jnp.mean(lse**2),
    "mixed": lambda out, lse: jnp.sum(jnp.sin(out) * out) + jnp.mean(lse**2),
    "half": lambda out, lse: jnp.sum(jnp.sin(first_half(out))) + jnp.sum(jnp.cos(lse)),
}


def all_gradients(attend, q, k, v):
    """{loss: (dq, dk, dv)} for every loss, as one compiled program."""

    def grads(q, k, v):
        out = {}
        for name, loss in LOSSES.items():
            f = lambda q, k, v, loss=loss: loss(*attend(q, k, v)[:2])
            out[name] = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
        return out

    return jax.jit(grads)(q, k, v)


def assert_gradients_match(got, want, tol):
    """Per loss, the largest difference relative to the largest reference gradient of the loss
    (dv is exactly 0 for a loss of the LSE alone)."""
    errors = {}
    for name in LOSSES:
        f32 = lambda x: np.asarray(x, np.float32)
        a_b = [(f32(a), f32(b)) for a, b in zip(got[name], want[name])]
        size = max(float(np.abs(b).max()) for _, b in a_b)
        assert size > 1e-3, name  # the loss reaches q and k
        errors[name] = max(float(np.abs(a - b).max()) for a, b in a_b) / size
    assert max(errors.values()) < tol, errors


def xla(**kw):
    def attend(q, k, v):
        res = attn.attention(q, k, v, backend="xla", **kw)
        return res.out_BxTxHxD, res.lse_BxHxT

    return attend


@pytest.mark.parametrize(
    "window, dtype, tol",
    [
        (None, jnp.float32, 1e-5),  # sums of <= 12 O(1) terms in two orders
        pytest.param(5, jnp.float32, 1e-5, marks=SLOW),
        (None, jnp.bfloat16, 2e-2),  # as cuDNN runs (bf16 in and out, float32 LSE)
    ],
)
def test_cudnn_lse_gradients_match_xla(fake_cudnn_layer, window, dtype, tol):  # noqa: F811
    """Through the faked layer (the float32-LSE cuDNN path), every loss; the bfloat16
    reference is xla on the same bfloat16 inputs."""
    q, k, v = (x.astype(dtype) for x in qkv(2, 12, 4, 2, 16))

    def cudnn(q, k, v):
        return fused._cudnn_with_f32_lse(q, k, v, 0.25, window)

    got = all_gradients(cudnn, q, k, v)
    want = all_gradients(xla(scale=0.25, window=window), q, k, v)
    assert_gradients_match(got, want, tol)
    # Runs of the layer's backward: the LSE's own for "sum_lse" and "z_loss" (no output
    # cotangent at all), one for "mixed" (every query's output cotangent carries its g), two
    # for "half" (the queries whose output has no cotangent take the second).
    assert fake_cudnn_layer["backward_runs"] == 1 + 1 + 1 + 2


PALLAS_CASES = [
    pytest.param(False, False, id="causal", marks=SLOW),
    pytest.param(True, False, id="documents", marks=SLOW),  # the inner kernel of the next
    pytest.param(True, True, id="documents-first-key"),
]


@pytest.mark.parametrize("segments, first_key", PALLAS_CASES)
def test_pallas_lse_gradients_match_xla(segments, first_key):
    q, k, v = qkv(1, 32, 4, 2, 16)
    kw = dict(scale=0.25, segment_ids=documents(32, [9, 20]) if segments else None,
              global_first_key=first_key)  # fmt: skip

    def pallas(q, k, v):
        return fused.pallas_gpu_attention(
            q, k, v, kw["segment_ids"], scale=0.25, global_first_key=first_key, block_size=16,
            interpret=True,
        )  # fmt: skip

    got = all_gradients(pallas, q, k, v)
    want = all_gradients(xla(**kw), q, k, v)
    assert_gradients_match(got, want, 1e-5)


SPLASH_CASES = [
    pytest.param(True, True, 40, id="documents-first-key-window", marks=SLOW),  # merge, column
    pytest.param(False, False, None, id="causal", marks=SLOW),
    pytest.param(True, False, None, id="documents", marks=SLOW),
    pytest.param(True, True, None, id="documents-first-key", marks=SLOW),
    pytest.param(False, True, 40, id="first-key-window", marks=SLOW),  # key 0 a mask column
]


@pytest.mark.parametrize("segments, first_key, window", SPLASH_CASES)
def test_splash_lse_gradients_match_xla(segments, first_key, window):
    """T = 128 (the kernel's smallest key block); MQA without documents, grouped heads with."""
    q, k, v = qkv(1, 128, 2, 1, 32) if not segments else qkv(1, 128, 4, 2, 32)
    kw = dict(scale=32**-0.5, segment_ids=documents(128, [37, 90]) if segments else None,
              global_first_key=first_key, window=window)  # fmt: skip

    def splash(q, k, v):
        res = attn.attention(q, k, v, backend="splash", block_size=128, **kw)
        return res.out_BxTxHxD, res.lse_BxHxT

    got = all_gradients(splash, q, k, v)
    want = all_gradients(xla(**kw), q, k, v)
    # float32 flash against explicit attention, sums of <= 128 terms (tests/test_splash.py).
    assert_gradients_match(got, want, 2e-5)


# --- key 0 merged through the LSE, soft-capped ---------------------------------------------


def brute_force(q, k, v, seg, *, scale, softcap, window=None):
    """float64 numpy: causal attention within documents, key 0 visible to every query,
    scores soft-capped. (out [B,T,H,D], lse [B,H,T])."""
    q, k, v, seg = (np.asarray(x, np.float64) for x in (q, k, v, seg))
    B, T, H, _ = q.shape
    G = H // k.shape[2]
    k, v = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)
    s = scale * np.einsum("bthd,bshd->bhts", q, k)
    s = softcap * np.tanh(s / softcap)
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    near = (j <= i) if window is None else (j <= i) & (i - j < window)
    seen = (near[None] & (seg[:, :, None] == seg[:, None, :])) | (j == 0)[None]
    s = np.where(seen[:, None], s, -np.inf)
    top = s.max(-1, keepdims=True)
    lse = top[..., 0] + np.log(np.exp(s - top).sum(-1))
    out = np.einsum("bhts,bshd->bthd", np.exp(s - lse[..., None]), v)
    return out, lse


def assert_capped_merge(attend, q, k, v, seg, *, scale, cap, window=None, tol=2e-5):
    """Output and LSE against float64 brute force; gradients against xla, of a loss of the
    output of the first half of the queries and the LSE of all (LOSSES["half"])."""
    out64, lse64 = brute_force(q, k, v, seg, scale=scale, softcap=cap, window=window)
    # The cap binds: raw scores reach many times the cap, so key 0 uncapped would dominate.
    s0 = scale * np.einsum("bthd,bhd->bht", q, np.repeat(k[:, 0], q.shape[2] // k.shape[2], 1))
    assert np.abs(s0).max() > 5 * cap

    def loss(attend, q, k, v):
        out, lse = attend(q, k, v)[:2]
        return LOSSES["half"](out, lse), (out, lse)

    def run(attend):
        return jax.jit(jax.grad(functools.partial(loss, attend), (0, 1, 2), has_aux=True))(
            q, k, v
        )

    grads, (out, lse) = run(attend)
    kw = dict(scale=scale, segment_ids=seg, global_first_key=True, window=window, softcap=cap)
    grads_ref, _ = run(xla(**kw))
    out_err = float(np.abs(np.asarray(out, np.float64) - out64).max())
    lse_err = float(np.abs(np.asarray(lse, np.float64) - lse64).max())
    size = max(float(jnp.abs(b).max()) for b in grads_ref)
    grad_err = max(float(jnp.abs(a - b).max()) for a, b in zip(grads, grads_ref)) / size
    # float32 against float64: |out| <= 3, |lse| < 10, sums of <= 128 terms.
    assert out_err < tol and lse_err < 10 * tol and grad_err < tol, (out_err, lse_err, grad_err)


def test_first_key_merge_soft_caps_key_0():
    """The merge around a segment-masked kernel (blockwise here) caps key 0's score as the
    kernel caps every other: the LSE of the union is that of the capped scores."""
    B, T, H, K, D = 1, 48, 4, 2, 16
    q, k, v = qkv(B, T, H, K, D, seed=3, size=3.0)
    seg = documents(T, [11, 30])
    cap = 2.0

    def merged(q, k, v):
        inner = functools.partial(blockwise.blockwise_attention, softcap=cap, block_size=16)
        return flash_lse.attend_first_key_globally(inner, q, k, v, seg, scale=D**-0.5, softcap=cap)

    assert_capped_merge(merged, q, k, v, seg, scale=D**-0.5, cap=cap)


@pytest.mark.parametrize("window", [None, pytest.param(40, marks=SLOW)])
def test_splash_soft_caps_key_0_for_other_documents(window):
    """attention='splash' with segments, global_first_key and soft-capping (cap 2, inputs
    scaled up so that the cap binds)."""
    D = 32
    q, k, v = qkv(1, 128, 4, 2, D, seed=1, size=3.0)
    seg = documents(128, [37, 90])
    cap = 2.0

    def splash(q, k, v):
        res = attn.attention(q, k, v, backend="splash", block_size=128, scale=D**-0.5,
                             segment_ids=seg, global_first_key=True, window=window,
                             softcap=cap)  # fmt: skip
        return res.out_BxTxHxD, res.lse_BxHxT

    assert_capped_merge(splash, q, k, v, seg, scale=D**-0.5, cap=cap, window=window)
