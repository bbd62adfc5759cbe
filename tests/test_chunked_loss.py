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


@pytest.mark.parametrize("chunk", [7, 13, 64])  # 7: padding; 64: one chunk larger than N.
def test_loss_and_gradients_equal_optax(chunk):
    ks = jax.random.split(jax.random.key(0), 4)
    B, T, D, V = 3, 13, 16, 29
    h = jax.random.normal(ks[0], (B, T, D))
    head = jax.random.normal(ks[1], (D, V)) * 0.5
    y = jax.random.randint(ks[2], (B, T), 0, V)
    w = (jax.random.uniform(ks[3], (B, T)) > 0.3).astype(jnp.float32)  # some tokens masked
    loss = lambda f: lambda h, head: 3.0 * f(h, head)  # a cotangent other than 1
    got = jax.value_and_grad(loss(lambda h, hd: chunked_ce_sum(h, hd, y, w, chunk)), (0, 1))(
        h, head
    )
    want = jax.value_and_grad(loss(lambda h, hd: reference(h, hd, y, w)), (0, 1))(h, head)
    # float32 sums over <= 39 tokens of O(1) terms: 1e-5 relative.
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # two model compiles: the second CI stage
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


def test_per_device_under_a_batch_sharded_mesh():
    """With the mesh in context (the train step's), every device runs the chunks of its own
    rows: the loss and gradients equal the unsharded ones, and the compiled program gathers
    no rows (XLA alone would gather h to scan over its chunks)."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from sinks_jax.model import shard
    from sinks_jax.train import sharding

    ks = jax.random.split(jax.random.key(1), 4)
    B, T, D, V = 8, 12, 16, 29
    h = jax.random.normal(ks[0], (B, T, D))
    head = jax.random.normal(ks[1], (D, V)) * 0.5
    y = jax.random.randint(ks[2], (B, T), 0, V)
    w = (jax.random.uniform(ks[3], (B, T)) > 0.3).astype(jnp.float32)
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
    rows = NamedSharding(mesh, P(shard.BATCH_AXES))
    grad = jax.value_and_grad(lambda h, head: chunked_ce_sum(h, head, y, w, 8), (0, 1))

    def on_mesh(h, head):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return grad(h, head)

    fn = jax.jit(on_mesh)
    args = (jax.device_put(h, rows), jax.device_put(head, NamedSharding(mesh, P())))
    got, want = fn(*args), jax.jit(grad)(h, head)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):  # float32 rounding only
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert "all-gather" not in fn.lower(*args).compile().as_text()
