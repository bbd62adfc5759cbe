"""GPU-only agreement of the fused backends with the explicit xla path (bf16 tolerances).

Run on a CUDA machine with `JAX_PLATFORMS=cuda pytest -m gpu tests/test_gpu.py`; skipped on CPU.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU"),
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
