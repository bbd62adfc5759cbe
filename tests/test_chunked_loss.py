"""Head + cross-entropy fused over token chunks (train/chunked_loss.py) against optax."""

import functools

import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.train import step as step_lib
from sinks_jax.train.chunked_loss import chunked_ce_sum


def reference(h, head, y, w):
    logits = jnp.dot(h, head, preferred_element_type=jnp.float32)
    return jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(logits, y))


@pytest.mark.parametrize("chunk", [7, 16, 64])  # 7: padding; 64: one chunk larger than N.
def test_loss_and_gradients_equal_optax(chunk):
    ks = jax.random.split(jax.random.key(0), 4)
    N, D, V = 37, 16, 29
    h = jax.random.normal(ks[0], (N, D))
    head = jax.random.normal(ks[1], (D, V)) * 0.5
    y = jax.random.randint(ks[2], (N,), 0, V)
    w = (jax.random.uniform(ks[3], (N,)) > 0.3).astype(jnp.float32)  # some tokens masked
    loss = lambda f: lambda h, head: 3.0 * f(h, head)  # a cotangent other than 1
    got = jax.value_and_grad(loss(lambda h, hd: chunked_ce_sum(h, hd, y, w, chunk)), (0, 1))(h, head)
    want = jax.value_and_grad(loss(lambda h, hd: reference(h, hd, y, w)), (0, 1))(h, head)
    # float32 sums over <= 37 tokens of O(1) terms: 1e-5 relative.
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_train_step_gradients_are_those_of_the_full_logits():
    """micro_grads with model.head_chunk = the unfused step's (float32 model, padding rows)."""
    base = dict(vocab_size=41, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 41, (2, 17)).astype(np.int32)
    mask = np.ones((2, 16), np.int32)
    mask[1, 11:] = 0
    batch = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "segment_ids": mask,
             "positions": np.broadcast_to(np.arange(16, dtype=np.int32), (2, 16)).copy(),
             "loss_mask": mask}  # fmt: skip
    out = {}
    for chunk in (0, 5):
        model = Transformer(ModelConfig(**base, head_chunk=chunk), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        fn = functools.partial(step_lib.micro_grads, graphdef=graphdef, use_segments=False,
                               sink_stats=True)  # fmt: skip
        out[chunk] = jax.jit(fn)(params, batch)
    for a, b in zip(jax.tree.leaves(out[5]), jax.tree.leaves(out[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_head_chunk_rejections():
    base = dict(vocab_size=41, num_layers=2, d_model=32, num_heads=4, d_ff=64)
    with pytest.raises(ValueError, match="head_chunk=-1 must be an int >= 0"):
        ModelConfig(**base, head_chunk=-1)
    with pytest.raises(ValueError, match="set head_chunk=0 with final_logit_softcap"):
        ModelConfig(**base, head_chunk=512, final_logit_softcap=30.0)
