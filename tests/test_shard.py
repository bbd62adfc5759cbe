"""Fused attention per device under shard_map (model/shard.py): 8 fake CPU devices (conftest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sinks_jax.model import attention, blockwise, shard
from sinks_jax.train import sharding

B, T, H, K, D = 8, 16, 4, 2, 8


def qkv(seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (B, T, H, D)),
        jax.random.normal(kk, (B, T, K, D)),
        jax.random.normal(kv, (B, T, K, D)),
    )


def segments():
    seg = np.ones((B, T), np.int32)
    seg[:, T // 3 :] = 2
    seg[::2, 2 * T // 3 :] = 3  # three documents in even rows, two in odd rows.
    return jnp.asarray(seg)


def recording_kernel(seen):
    """blockwise attention that records the batch size each call of it traces with."""

    def kernel(q, k, v, seg, **kw):
        seen.append(q.shape[0])
        return blockwise.blockwise_attention(q, k, v, seg, block_size=8, **kw)

    return kernel


def loss_of(kernel, q, k, v, seg):
    out, lse = kernel(
        q, k, v, seg, scale=D**-0.5, global_first_key=False, window=None, softcap=None
    )
    return jnp.sum(out.astype(jnp.float32) ** 2) + jnp.sum(jnp.sin(lse))


@pytest.mark.parametrize(
    "mesh_shape, with_segments",
    [pytest.param((8, 1), False, marks=pytest.mark.slow), ((2, 4), True)],
)
def test_per_device_kernel_equals_whole_batch_kernel(mesh_shape, with_segments):
    """Outputs, LSE and gradients on 8 devices equal the unsharded kernel's; the kernel sees
    only its device's rows (B / 8)."""
    q, k, v = qkv()
    seg = segments() if with_segments else None
    mesh = sharding.make_mesh({"data": mesh_shape[0], "fsdp": mesh_shape[1]})
    rows = NamedSharding(mesh, P(shard.BATCH_AXES))
    seen = []
    sharded = shard.per_device(recording_kernel(seen))

    def f(q, k, v, seg):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return jax.value_and_grad(loss_of, argnums=(1, 2, 3))(sharded, q, k, v, seg)

    args = [jax.device_put(x, rows) for x in (q, k, v)] + [seg]
    val8, g8 = jax.jit(f)(*args)
    assert seen == [B // 8], seen  # traced once, on one device's rows.

    whole = []
    val1, g1 = jax.jit(
        lambda q, k, v, seg: jax.value_and_grad(loss_of, argnums=(1, 2, 3))(
            recording_kernel(whole), q, k, v, seg
        )
    )(q, k, v, seg)
    assert whole == [B]
    np.testing.assert_allclose(val8, val1, rtol=1e-6)
    for a, b in zip(g8, g1):  # the same float32 arithmetic on each row: rounding only.
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max()))


def test_without_a_mesh_or_an_even_split_the_kernel_runs_whole():
    q, k, v = qkv()
    seen = []

    def kernel(q, k, v, seg, **kw):  # records the rows it is called with.
        seen.append(q.shape[0])
        return q, jnp.zeros(q.shape[:1] + q.shape[2:3] + q.shape[1:2])

    shard.per_device(kernel)(
        q, k, v, None, scale=1.0, global_first_key=False, window=None, softcap=None
    )
    mesh = sharding.make_mesh({"data": 8, "fsdp": 1})
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # 6 rows do not split 8 ways.
        shard.per_device(kernel)(
            q[:6], k[:6], v[:6], None, scale=1.0, global_first_key=False, window=None, softcap=None
        )
    assert seen == [B, 6]


@pytest.mark.slow  # compiles blockwise on 8 devices: the second CI stage.
def test_attention_entry_point_shards_fused_backends_only():
    """`attention()` runs blockwise per device under a mesh and matches the xla reference."""
    q, k, v = qkv(1)
    seg = segments()
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
    rows = NamedSharding(mesh, P(shard.BATCH_AXES))

    def f(q, k, v, seg):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return attention.attention(
                q, k, v, backend="blockwise", segment_ids=seg, block_size=8, global_first_key=True
            )

    got = jax.jit(f)(*(jax.device_put(x, rows) for x in (q, k, v, seg)))
    ref = attention.attention(q, k, v, backend="xla", segment_ids=seg, global_first_key=True)
    np.testing.assert_allclose(got.out_BxTxHxD, ref.out_BxTxHxD, atol=1e-5)
    np.testing.assert_allclose(got.lse_BxHxT, ref.lse_BxHxT, atol=1e-5)


def numpy_kernel(q, k, v, seg, *, scale, **_):
    """An opaque causal attention kernel (a host callback, like a custom call: XLA cannot
    split it), in numpy float64. Forward only."""

    def host(q, k, v):
        q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
        k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
        v = np.repeat(v, q.shape[2] // v.shape[2], axis=2)
        s = np.einsum("bthd,bshd->bhts", q, k) * scale
        n = q.shape[1]
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        lse = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
        out = np.einsum("bhts,bshd->bthd", np.exp(s - lse[..., None]), v)
        return out.astype(np.float32), lse.astype(np.float32)

    shapes = (
        jax.ShapeDtypeStruct(q.shape, jnp.float32),
        jax.ShapeDtypeStruct((q.shape[0], q.shape[2], q.shape[1]), jnp.float32),
    )
    return jax.pure_callback(host, shapes, q, k, v)


@pytest.mark.parametrize("per_device", [True, False])
def test_opaque_kernel_runs_per_device_without_gathering_activations(per_device):
    """A kernel XLA cannot split: per device, the compiled program gathers nothing; placed by
    XLA instead, it gathers the activations onto every device (why `per_device` exists)."""
    q, k, v = qkv(2)
    mesh = sharding.make_mesh({"data": 8, "fsdp": 1})
    rows = NamedSharding(mesh, P(shard.BATCH_AXES))
    kernel = shard.per_device(numpy_kernel) if per_device else numpy_kernel

    def f(q, k, v):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return kernel(q, k, v, None, scale=D**-0.5)

    fn = jax.jit(f, in_shardings=(rows,) * 3, out_shardings=(rows, rows))
    args = [jax.device_put(x, rows) for x in (q, k, v)]
    hlo = fn.lower(*args).compile().as_text()
    assert ("all-gather" in hlo) is not per_device
    out, lse = fn(*args)
    ref = attention.attention(q, k, v, backend="xla")
    np.testing.assert_allclose(out, ref.out_BxTxHxD, atol=1e-5)
    np.testing.assert_allclose(lse, ref.lse_BxHxT, atol=1e-5)
