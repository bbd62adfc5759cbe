"""Fused-kernel plumbing on CPU: which cuDNN path runs (the kernels are faked: cuDNN has no
CPU build) and the keyword calls into Pallas's private functions (interpret mode)."""

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


def test_cudnn_layer_path_keeps_the_float32_lse(monkeypatch, fresh_record, fake_public_cudnn):
    layer = importlib.import_module(CUDNN_LAYER)

    def private(q, k, v, *, scale, mask_type, return_residual):
        assert mask_type == layer.MaskType.CAUSAL and return_residual
        ref = reference(q, k, v, scale)
        return ref.out_BxTxHxD, ref.lse_BxHxT

    monkeypatch.setattr(layer, "dot_product_attention", private)
    q, k, v = qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        _, lse = fused.cudnn_attention(q, k, v, scale=0.25)
    np.testing.assert_array_equal(lse, reference(q, k, v, 0.25).lse_BxHxT)
    assert fused.cudnn_lse_dtype() == "float32"
    assert step_lib.kernel_record() == {"cudnn_lse_dtype": "float32"}


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


def test_gpu_marker_expression_unpins_the_cpu():
    from conftest import selects_gpu

    assert selects_gpu("gpu") and selects_gpu("gpu and not slow") and selects_gpu("(gpu)")
    assert not any(selects_gpu(e) for e in ("", "slow", "not gpu", "not gpu and slow"))
