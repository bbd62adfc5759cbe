"""Model surgery (sinks_jax.model.surgery) against the model's own forward pass for the same
segment ids and positions: the residual stream against the `hidden` statistic, the received
attention against column sums of the xla backend's attention maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.model.surgery import received_attention_model, residual_stream_fn, with_backend

TINY = dict(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)
LOCAL_THEN_GLOBAL = dict(
    sliding_window=5, layer_types=("local", "global"), rope_local_theta=10.0, qk_norm=True
)
# Two packed documents in row 0 (positions restart at the second), one in row 1 shifted by 3.
SEG_BxT = jnp.asarray([[1] * 6 + [2] * 10, [1] * 16], jnp.int32)
POS_BxT = jnp.asarray([list(range(6)) + list(range(10)), list(range(3, 19))], jnp.int32)


def make(attention="xla", **knobs):
    cfg = ModelConfig(**{**TINY, "attention": attention, "block_size": 4, **knobs})
    return Transformer(cfg, rngs=nnx.Rngs(3))


def tokens():
    return jax.random.randint(jax.random.key(4), (2, 16), 0, TINY["vocab_size"])


@pytest.mark.parametrize("knobs", [{}, pytest.param(LOCAL_THEN_GLOBAL, marks=pytest.mark.slow)])
def test_residual_stream_fn_honours_segments_and_positions(knobs):
    model = make(**knobs)
    _, aux = model(tokens(), SEG_BxT, POS_BxT, collect=("hidden",))
    forward_fn, params = residual_stream_fn(model, SEG_BxT, POS_BxT)
    hidden = forward_fn(params, aux["hidden"][0])
    # Same graph, same inputs, fp32: only the scan's rounding can differ.
    np.testing.assert_allclose(np.asarray(hidden), np.asarray(aux["hidden"]), atol=1e-5)
    # Without them the stream differs (the test can fail when they are dropped).
    default_fn, _ = residual_stream_fn(model)
    assert np.abs(np.asarray(default_fn(params, aux["hidden"][0]) - hidden)).max() > 1e-3


@pytest.mark.parametrize(
    "backend,knobs",
    [
        ("xla", {}),
        pytest.param("blockwise", {}, marks=pytest.mark.slow),
        pytest.param("blockwise", LOCAL_THEN_GLOBAL, marks=pytest.mark.slow),
    ],
)
def test_received_attention_model_honours_segments_and_positions(backend, knobs):
    model = make(backend, **knobs)
    tok = tokens()
    _, aux = model(tok, SEG_BxT, POS_BxT, collect=("hidden", "received_attn"))
    _, ref = with_backend(model, "xla")(tok, SEG_BxT, POS_BxT, collect=("attn_probs",))
    probs_LxBxHxTxT = np.asarray(ref["attn_probs"], np.float64)
    # Column sums of maps whose rows sum to 1 over <= 16 queries: fp32 rounding ~1e-6.
    want = probs_LxBxHxTxT.sum(-2)
    got = received_attention_model(model, aux["hidden"], None, SEG_BxT, POS_BxT)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(aux["received_attn"]), want, atol=1e-5)
    # Query weights: only the weighted queries count.
    w_BxT = np.ones((2, 16), np.float32)
    w_BxT[:, 12:] = 0.0
    got_w = received_attention_model(model, aux["hidden"], jnp.asarray(w_BxT), SEG_BxT, POS_BxT)
    want_w = np.einsum("lbhqk,bq->lbhk", probs_LxBxHxTxT, w_BxT)
    np.testing.assert_allclose(np.asarray(got_w), want_w, atol=1e-5)
    # Default positions and no segments give another answer.
    other = received_attention_model(model, aux["hidden"])
    assert np.abs(np.asarray(other) - want).max() > 1e-3
