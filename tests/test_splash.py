"""attention='splash' (the TPU splash kernel) against the explicit xla path, on CPU.

Off TPU the kernel runs in Pallas interpret mode: the kernel's own code, slowly, so the shapes
are the smallest it takes (key blocks of 128, T of 128 - 256). Everything is float32: flash
and explicit attention then differ by rounding of sums over at most 256 terms, a few 1e-7
relative, so 2e-5 bounds every difference with room.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sinks_jax.model import attention as attn
from sinks_jax.model import backends, shard, splash
from sinks_jax.model.received import received_attention

TOL = 2e-5


def qkv(B, T, H, K, D=32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(ks[0], (B, T, H, D)),
        jax.random.normal(ks[1], (B, T, K, D)),
        jax.random.normal(ks[2], (B, T, K, D)),
    )


def documents(B, T, seed=0):
    """[B, T] segment ids: three documents per row, one boundary inside each 128-key block."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((B, T), np.int32)
    for b in range(B):
        cuts = sorted(rng.integers(1, T, 2))
        seg[b] = 1 + (np.arange(T) >= cuts[0]) + (np.arange(T) >= cuts[1])
    return jnp.asarray(seg)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


SLOW = pytest.mark.slow  # each compiles several interpret-mode kernels: 10 - 20 s.


@pytest.mark.parametrize(
    "H, K, T, segments, first_key, window, softcap, received",
    [
        (4, 2, 128, True, True, None, None, False),  # grouped heads; key 0 merged via the LSE
        pytest.param(2, 1, 200, False, True, 40, 3.0, False, marks=SLOW),  # MQA; T padded;
        # window + key 0; soft-cap
        pytest.param(2, 2, 256, False, False, None, None, True, marks=SLOW),  # MHA, causal
        pytest.param(2, 1, 256, True, False, None, None, True, marks=SLOW),  # MQA, documents
        pytest.param(2, 2, 128, True, True, 40, None, False, marks=SLOW),  # window, docs, key 0
    ],
)
def test_splash_matches_xla(H, K, T, segments, first_key, window, softcap, received):
    """Output, LSE, sink attention (key 0 and each document's first key), received attention,
    and the gradients of a loss of the output and the LSE, w.r.t. q, k and v."""
    B, D = 1, 32
    q, k, v = qkv(B, T, H, K, D)
    seg = documents(B, T) if segments else None
    kw = dict(scale=D**-0.5, segment_ids=seg, global_first_key=first_key, window=window,
              softcap=softcap)  # fmt: skip
    ref = attn.attention(q, k, v, backend="xla", return_probs=True, **kw)

    def loss(run, q, k, v):
        out, lse = run(q, k, v)[:2]
        return jnp.sum(jnp.sin(out) * out) + jnp.sum(jnp.cos(lse)), (out, lse)

    def everything(backend):  # one compilation: interpret mode is slow to compile.
        run = functools.partial(attn.attention, backend=backend, block_size=128, **kw)

        def f(q, k, v):
            grad = jax.grad(functools.partial(loss, run), argnums=(0, 1, 2), has_aux=True)
            recv = received_attention(q, k, v, run) if received else None
            return *grad(q, k, v), recv

        return jax.jit(f)(q, k, v)

    grads, (out, lse), recv = everything("splash")
    assert rel(out, ref.out_BxTxHxD) < TOL
    assert float(jnp.abs(lse - ref.lse_BxHxT).max()) < TOL * 10  # |lse| < 10
    sink_kw = {n: kw[n] for n in ("scale", "segment_ids", "global_first_key", "window", "softcap")}
    for per_segment in (False, True):
        idx = attn.sink_index(seg, T, B, per_segment=per_segment)
        s_ref = jnp.take_along_axis(ref.probs_BxHxTxT, idx[:, None, :, None], axis=-1)[..., 0]
        s_got = attn.sink_attention(q, k, lse, idx, **sink_kw)
        assert float(jnp.abs(s_got - s_ref).max()) < TOL
    if received:
        assert rel(recv, ref.probs_BxHxTxT.sum(axis=-2)) < TOL  # column sums of the maps
    grads_ref = everything("xla")[0]
    for name, a, b in zip("qkv", grads, grads_ref):
        assert rel(a, b) < TOL, name


def mesh_2x4():
    return jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def test_splash_shards_the_batch_under_a_mesh():
    """With a mesh set, the kernel runs per device under shard_map (a Mosaic kernel cannot be
    partitioned automatically) over the leading mesh axes that divide the batch."""
    q, k, v = qkv(4, 128, 2, 1)
    kw = dict(scale=32**-0.5, segment_ids=documents(4, 128))
    ref = attn.attention(q, k, v, backend="xla", **kw)
    with jax.set_mesh(mesh_2x4()):
        f = jax.jit(functools.partial(attn.attention, backend="splash", **kw))
        assert "manual_computation" in f.lower(q, k, v).as_text()
        got = f(q, k, v)
        assert shard.batch_axes(4) == ("data",) and shard.batch_axes(8) == ("data", "fsdp")
    assert shard.batch_axes(4) == ()  # no mesh set: one call over the whole batch.
    assert rel(got.out_BxTxHxD, ref.out_BxTxHxD) < TOL
    assert float(jnp.abs(got.lse_BxHxT - ref.lse_BxHxT).max()) < TOL * 10


@SLOW
def test_splash_gradients_under_a_mesh():
    """The training path on several devices: gradients through shard_map and the kernel."""
    q, k, v = qkv(8, 128, 2, 1)
    kw = dict(scale=32**-0.5, segment_ids=documents(8, 128), global_first_key=True)

    def loss(backend, q, k, v):
        out, lse = attn.attention(q, k, v, backend=backend, **kw)[:2]
        return jnp.sum(out * out) + jnp.sum(lse)

    grad = jax.grad(loss, argnums=(1, 2, 3))
    with jax.set_mesh(mesh_2x4()):
        got = jax.jit(functools.partial(grad, "splash"))(q, k, v)
    for name, a, b in zip("qkv", got, grad("xla", q, k, v)):
        assert rel(a, b) < TOL, name


@pytest.mark.parametrize(
    "T, block_size, expected",
    [(64, 512, (128, 128)), (200, 512, (256, 256)), (640, 512, (640, 128)),
     (1536, 512, (1536, 512)), (1024, 32, (1024, 128)), (2048, 1024, (2048, 1024))],
)  # fmt: skip
def test_splash_block_pads_to_lanes_and_divides(T, block_size, expected):
    assert splash.splash_block(T, block_size) == expected


def test_splash_in_the_table_and_the_model_config():
    from sinks_jax.model import ModelConfig

    assert backends.problems("splash", platform="cpu") == [
        "runs only on tpu, and JAX's platform here is 'cpu'"
    ]
    needs = dict(segment_ids=True, global_first_key=True, window=True, softcap=True)
    assert backends.problems("splash", platform="tpu", seq_len=200, **needs) == []
    cfg = ModelConfig(attention="splash", sliding_window=64, attn_logit_softcap=50.0,
                      global_first_key=True)  # fmt: skip
    assert cfg.attention == "splash"


@SLOW
def test_splash_model_matches_xla():
    """A model with local and global layers, packed documents and the fixed first key: logits
    and every statistic the fused backends return, splash against xla."""
    from flax import nnx

    from sinks_jax.model import ModelConfig, Transformer

    base = dict(vocab_size=64, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, d_ff=128,
                block_size=128, sliding_window=48, layer_types=("local", "global"),
                global_first_key=True, sink_key="segment", attn_logit_softcap=20.0)  # fmt: skip
    tok = jax.random.randint(jax.random.key(0), (2, 128), 0, 64)
    seg = documents(2, 128)
    collect = ("sink_attn", "lse", "received_attn")
    got = {}
    for backend in ("xla", "splash"):
        model = Transformer(ModelConfig(**base, attention=backend), rngs=nnx.Rngs(0))
        got[backend] = jax.jit(lambda t, s, m=model: m(t, s, collect=collect))(tok, seg)
    (a, aux_a), (b, aux_b) = got["xla"], got["splash"]
    assert rel(b, a) < TOL
    for key in collect:
        assert rel(aux_b[key], aux_a[key]) < TOL, key
