"""Fused-kernel plumbing on CPU: which cuDNN path runs (the kernels are faked: cuDNN has no
CPU build) and the keyword calls into Pallas's private functions (interpret mode)."""

import functools
import importlib
import sys
import warnings

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attn
from sinks_jax.model import fused
from sinks_jax.train import step as step_lib

CUDNN_LAYER = "jax._src.cudnn.fused_attention_stablehlo"


def qkv(dtype=jnp.bfloat16, T=8):
    ks = jax.random.split(jax.random.key(0), 3)
    return (
        jax.random.normal(ks[0], (2, T, 4, 16), dtype),
        jax.random.normal(ks[1], (2, T, 2, 16), dtype),
        jax.random.normal(ks[2], (2, T, 2, 16), dtype),
    )


def reference(q, k, v, scale):
    return attn.attention(q, k, v, backend="xla", scale=scale)


@pytest.fixture
def fresh_record(monkeypatch):
    monkeypatch.setattr(fused, "_cudnn_lse_dtype", None)
    monkeypatch.setattr(fused, "_warned_fallback", False)


@pytest.fixture
def fake_public_cudnn(monkeypatch):
    """jax.nn.dot_product_attention as the public API returns it: LSE [B, T, H] in q's dtype."""

    def public(q, k, v, *, scale, is_causal, implementation, return_residual):
        assert is_causal and implementation == "cudnn" and return_residual
        ref = reference(q, k, v, scale)
        return ref.out_BxTxHxD, ref.lse_BxHxT.transpose(0, 2, 1).astype(q.dtype)

    monkeypatch.setattr(jax.nn, "dot_product_attention", public)


def flash_backward_rule(*, scale, mask_type, sliding_window_length, res, grad_output, **_):
    """The cuDNN layer's backward contract, written out (FlashAttention-2's backward): the row
    weights from the LSE it is handed, delta_i = dout_i . out_i from the `out` it is handed."""
    q, k, v, lse_BxHxT, out = *res[:3], res[10], res[11]
    H, G = q.shape[2], q.shape[2] // k.shape[2]
    kf, vf = jnp.repeat(k, G, axis=2), jnp.repeat(v, G, axis=2)
    s = scale * jnp.einsum("bthd,bshd->bhts", q, kf)
    i, j = jnp.arange(q.shape[1])[:, None], jnp.arange(q.shape[1])[None, :]
    seen = (j <= i) if sliding_window_length is None else (j <= i) & (i - j < sliding_window_length)
    p = jnp.where(seen, jnp.exp(s - lse_BxHxT[..., None]), 0.0)
    dv = jnp.einsum("bhts,bthd->bshd", p, grad_output)
    delta_BxHxT = jnp.sum(grad_output * out, -1).transpose(0, 2, 1)
    ds = p * (jnp.einsum("bthd,bshd->bhts", grad_output, vf) - delta_BxHxT[..., None])
    dq = scale * jnp.einsum("bhts,bshd->bthd", ds, kf)
    dk = scale * jnp.einsum("bhts,bthd->bshd", ds, q)
    fold = lambda x: x.reshape(*x.shape[:2], H // G, G, x.shape[-1]).sum(3)
    return (dq, fold(dk), fold(dv)) + (None,) * 7


@pytest.fixture
def fake_cudnn_layer(monkeypatch):
    """The private cuDNN layer, faked: forward = the xla backend, backward = the rule above.
    Returns the counts of their calls (traces) and of the backward's runs (executions: a
    backward traced into a branch that is not taken does not run)."""
    layer = importlib.import_module(CUDNN_LAYER)
    calls = {"forward": 0, "backward": 0, "backward_runs": 0}

    def count_run():
        calls["backward_runs"] += 1

    def private(q, k, v, *, scale, mask_type, return_residual, sliding_window_length=None):
        assert mask_type == layer.MaskType.CAUSAL and return_residual
        calls["forward"] += 1
        ref = attn.attention(q, k, v, backend="xla", scale=scale, window=sliding_window_length)
        return ref.out_BxTxHxD, ref.lse_BxHxT

    def backward(scale, seed, dropout_rate, variadic_args, mask_type, layout,
                 sliding_window_length, is_training, return_residual, res, grad_output):  # fmt: skip
        assert mask_type == layer.MaskType.CAUSAL and not return_residual and dropout_rate == 0
        calls["backward"] += 1
        jax.debug.callback(count_run)
        return flash_backward_rule(scale=scale, mask_type=mask_type, res=res,
                                   sliding_window_length=sliding_window_length,
                                   grad_output=grad_output)  # fmt: skip

    monkeypatch.setattr(layer, "dot_product_attention", private)
    monkeypatch.setattr(layer, "_dot_product_attention_bwd_rule", backward)
    return calls


def test_cudnn_layer_path_keeps_the_float32_lse(fresh_record, fake_public_cudnn, fake_cudnn_layer):
    q, k, v = qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        _, lse = fused.cudnn_attention(q, k, v, scale=0.25)
    np.testing.assert_array_equal(lse, reference(q, k, v, 0.25).lse_BxHxT)
    assert fused.cudnn_lse_dtype() == "float32"
    assert step_lib.kernel_record() == {"cudnn_lse_dtype": "float32"}


@pytest.mark.parametrize("window", [None, 5])
def test_cudnn_vjp_takes_the_lse_cotangent(fake_cudnn_layer, window):
    """d/d(q, k, v) of a loss of the output and the LSE through the layer's one backward
    (with the LSE's cotangent folded into `out`) = autodiff of the explicit attention. float32
    (the fake layer computes in float32; the real one needs bf16, tested on the GPU). The
    second backward, for queries whose output has no cotangent, is traced but does not run
    (every query's output enters this loss); tests/test_lse_gradients.py runs it."""
    q, k, v = qkv(jnp.float32, T=12)

    def loss(attend, q, k, v):
        out, lse = attend(q, k, v)
        return jnp.sum(jnp.sin(out)) + jnp.sum(jnp.cos(lse))

    def explicit(q, k, v):
        res = attn.attention(q, k, v, backend="xla", scale=0.25, window=window)
        return res.out_BxTxHxD, res.lse_BxHxT

    def cudnn(q, k, v):
        return fused._cudnn_mha(q, k, v, 0.25, window)

    g = jax.grad(functools.partial(loss, cudnn), (0, 1, 2))(q, k, v)
    g_ref = jax.grad(functools.partial(loss, explicit), (0, 1, 2))(q, k, v)
    for a, b in zip(g, g_ref):  # float32 sums of <= 12 O(1) terms, twice: 1e-4.
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert fake_cudnn_layer == {"forward": 1, "backward": 2, "backward_runs": 1}


# loss terms -> (traces of the layer's backward, runs): the LSE's or the mass's cotangent adds
# the traced (never run) second backward for queries without an output cotangent.
SLOT_LOSSES = {
    "out": (1, 1),
    "out+lse": (2, 1),
    "out+lse+noop": (2, 1),
    "lse": (1, 1),
    "noop": (1, 1),
}


@pytest.mark.parametrize("terms", list(SLOT_LOSSES))
@pytest.mark.parametrize("variant", ["sink_logit", "softmax_plus_one", "kv_bias"])
def test_cudnn_slot_variants_take_one_backward(monkeypatch, fake_cudnn_layer, variant, terms):
    """The slot variants on the cudnn route run the kernel's one backward over the merged row
    (model/cudnn_slot.py: no merge to differentiate), and their gradients (q, k, v and the
    slot's parameters) are the explicit path's for every mix of the output's, the LSE's and
    the slot mass's cotangents. float32 through the dispatcher (the bf16 check bypassed)."""
    from sinks_jax.model import variants

    monkeypatch.setattr(fused, "check_cudnn_inputs", lambda *args: None)
    q, k, v = qkv(jnp.float32, T=12)
    ks = jax.random.split(jax.random.key(3), 3)
    slot = variants.Slot(
        logit_H=jax.random.normal(ks[0], (4,)) if variant == "sink_logit" else None,
        key_KxD=jax.random.normal(ks[1], (2, 16)) if variant == "kv_bias" else None,
        value_KxD=jax.random.normal(ks[2], (2, 16)) if variant == "kv_bias" else None,
    )

    def loss(backend, q, k, v, slot):
        res = attn.attention(q, k, v, backend=backend, scale=0.25, variant=variant, slot=slot,
                             window=5)  # fmt: skip
        parts = {
            "out": jnp.sum(jnp.sin(res.out_BxTxHxD)),
            "lse": jnp.sum(jnp.cos(res.lse_BxHxT)),
            "noop": 3.0 * jnp.sum(res.noop_BxHxT**2),
        }
        return sum(parts[t] for t in terms.split("+"))

    g = jax.grad(functools.partial(loss, "cudnn"), (0, 1, 2, 3))(q, k, v, slot)
    g_ref = jax.grad(functools.partial(loss, "xla"), (0, 1, 2, 3))(q, k, v, slot)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        # float32 sums of <= 12 O(1) terms through two formulations: 1e-4.
        np.testing.assert_allclose(a, b, atol=1e-4)
    traces, runs = SLOT_LOSSES[terms]
    assert fake_cudnn_layer == {"forward": 1, "backward": traces, "backward_runs": runs}


def test_cudnn_slot_variant_runs_per_device_under_a_mesh(monkeypatch, fake_cudnn_layer):
    """kv_bias on the cudnn route under a (2, 4) mesh of the 8 fake CPU devices: each device
    runs the merged row on its own rows (the slot's value split with them), and the gradients
    (the shared k_b, v_b summed over devices included) equal the unsharded xla path's."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from sinks_jax.model import shard, variants
    from sinks_jax.train import sharding

    monkeypatch.setattr(fused, "check_cudnn_inputs", lambda *args: None)
    ks = jax.random.split(jax.random.key(5), 5)
    q = jax.random.normal(ks[0], (8, 12, 4, 16))
    k, v = (jax.random.normal(key, (8, 12, 2, 16)) for key in ks[1:3])
    slot = variants.Slot(key_KxD=jax.random.normal(ks[3], (2, 16)),
                         value_KxD=jax.random.normal(ks[4], (2, 16)))  # fmt: skip

    def loss(backend, q, k, v, slot):
        res = attn.attention(q, k, v, backend=backend, scale=0.25, variant="kv_bias", slot=slot)
        return jnp.sum(jnp.sin(res.out_BxTxHxD)) + jnp.sum(res.noop_BxHxT)

    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    rows = NamedSharding(mesh, P(shard.BATCH_AXES))

    def sharded(q, k, v, slot):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return jax.grad(functools.partial(loss, "cudnn"), (0, 1, 2, 3))(q, k, v, slot)

    g = jax.jit(sharded)(*(jax.device_put(x, rows) for x in (q, k, v)), slot)
    g_ref = jax.grad(functools.partial(loss, "xla"), (0, 1, 2, 3))(q, k, v, slot)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert fake_cudnn_layer["forward"] == 1  # traced once, for one device's rows


@pytest.mark.parametrize("break_layer", ["import", "attribute", "signature"])
def test_cudnn_fallback_warns_once_and_is_recorded(
    monkeypatch, fresh_record, fake_public_cudnn, break_layer
):
    layer = importlib.import_module(CUDNN_LAYER)
    if break_layer == "import":  # `from jax._src.cudnn import ...` raises ImportError.
        monkeypatch.setitem(sys.modules, CUDNN_LAYER, None)
        monkeypatch.delattr(importlib.import_module("jax._src.cudnn"), CUDNN_LAYER.split(".")[-1])
    else:
        if break_layer == "attribute":
            monkeypatch.delattr(layer, "dot_product_attention")
        else:
            monkeypatch.setattr(layer, "dot_product_attention", lambda q, k, v: (q, None))
    q, k, v = qkv()
    assert step_lib.kernel_record() == {}
    with pytest.warns(RuntimeWarning, match="LSE is bfloat16") as caught:
        _, lse = fused.cudnn_attention(q, k, v, scale=0.25)
        fused.cudnn_attention(q, k, v, scale=0.25)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    # Transposed back to [B, H, T] and float32, within bfloat16 rounding (8 bits: 2^-8 rel).
    want = reference(q, k, v, 0.25).lse_BxHxT
    assert lse.dtype == jnp.float32 and lse.shape == want.shape
    np.testing.assert_allclose(lse, want, rtol=2**-8)
    assert fused.cudnn_lse_dtype() == "bfloat16"
    assert step_lib.kernel_record() == {"cudnn_lse_dtype": "bfloat16"}


def test_pallas_private_calls_bind_on_this_jax():
    """Forward and backward through the kernel's private functions (interpret mode, CPU)."""
    q, k, v = qkv(jnp.float32, T=16)
    out, lse = fused.pallas_gpu_attention(q, k, v, scale=0.25, block_size=16, interpret=True)
    ref = reference(q, k, v, 0.25)
    # float32 both ways; differences are summation order only.
    np.testing.assert_allclose(out, ref.out_BxTxHxD, atol=1e-5)
    np.testing.assert_allclose(lse, ref.lse_BxHxT, atol=1e-5)

    def loss(backend_fn, v):
        return jnp.sum(backend_fn(v) ** 2)

    pallas = lambda v: fused.pallas_gpu_attention(
        q, k, v, scale=0.25, block_size=16, interpret=True
    )[0]
    xla = lambda v: reference(q, k, v, 0.25).out_BxTxHxD
    np.testing.assert_allclose(
        jax.grad(lambda v: loss(pallas, v))(v), jax.grad(lambda v: loss(xla, v))(v), atol=1e-4
    )


def test_pallas_changed_signature_fails_with_the_checked_versions(monkeypatch):
    mod = fused._pallas_module()
    monkeypatch.setattr(mod, "_mha_forward", lambda q, k, v, segment_ids, sm_scale: None)
    q, k, v = qkv(jnp.float32, T=16)
    with pytest.raises(RuntimeError, match=r"checked on jax 0\.10\.2 - 0\.11\.2.*blockwise"):
        fused.pallas_gpu_attention(q, k, v, scale=0.25, block_size=16, interpret=True)


@pytest.mark.parametrize("change", ["signature", "unused"])
def test_pallas_backward_without_its_row_term_fails_with_the_checked_versions(monkeypatch, change):
    """The backward hands the kernel its row term (with the LSE's cotangent) through the
    kernel's `_preprocess_backward`; on a jax whose backward no longer takes it from there
    ("unused") or where it changed ("signature"), the backward fails naming the checked
    versions instead of dropping the LSE's gradient. Traced only (make_jaxpr)."""
    mod = fused._pallas_module()
    if change == "signature":
        monkeypatch.setattr(mod, "_preprocess_backward", lambda out, do: None)
    else:

        def backward_with_its_own_row_term(*, res, do, **kw):
            return res[0], res[1], res[2], None

        monkeypatch.setattr(mod, "_mha_backward", backward_with_its_own_row_term)
    q, k, v = qkv(jnp.float32, T=16)

    def lse_sum(q):
        _, lse = fused.pallas_gpu_attention(q, k, v, scale=0.25, block_size=16, interpret=True)
        return jnp.sum(lse)

    with pytest.raises(RuntimeError, match=r"checked on jax 0\.10\.2 - 0\.11\.2.*blockwise"):
        jax.make_jaxpr(jax.grad(lse_sum))(q)


def test_gpu_marker_expression_unpins_the_cpu():
    from conftest import selects_gpu

    assert selects_gpu("gpu") and selects_gpu("gpu and not slow") and selects_gpu("(gpu)")
    assert not any(selects_gpu(e) for e in ("", "slow", "not gpu", "not gpu and slow"))
