"""The final perturbation-spread evaluation of a run (train/sink_eval.py, train/step.py)."""

import numpy as np
import pytest

import jax.numpy as jnp
from flax import nnx

from sinks_jax import analysis
from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.train import sink_eval
from sinks_jax.train import step as step_lib

BOS = 1


def sets(N=6, T=10, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.integers(2, 50, (N, T)).astype(np.int32)
    if N > 3:  # row 3 gets row 2's token: no change, left out.
        text[3, T // 2] = text[2, T // 2]
    with_bos, _ = analysis.bos_layouts(text, BOS)
    return {"bos": np.asarray(with_bos), "nobos": text}


def test_swap_alignment_and_averages_against_a_fake_divergence():
    """The swap hits text position p in both reads (column p + 1 after <bos>) with the next
    row's token, and the averages cover text positions p+1 .. T-2 of the changed rows only."""
    s = sets()
    text = s["nobos"]
    N, T = text.shape
    p = T // 2
    seen = {}

    def fake(tokens_NxT, swapped_NxT):
        name = "bos" if tokens_NxT[0, 0] == BOS else "nobos"
        shift = 1 if name == "bos" else 0
        changed = tokens_NxT != swapped_NxT
        assert not changed[:, : p + shift].any() and not changed[:, p + shift + 1 :].any()
        np.testing.assert_array_equal(swapped_NxT[:, p + shift], np.roll(text[:, p], 1))
        seen[name] = True
        # value (l + 1) * (n + 1) * (text position) + 1000 on the columns that must be ignored.
        L1 = 3
        text_pos = np.arange(T) - shift
        val = (np.arange(L1)[:, None, None] + 1.0) * (np.arange(N)[None, :, None] + 1.0)
        out = val * text_pos[None, None, :]
        out[..., : p + shift + 1] = 1000.0  # up to the swap: not counted
        out[..., T - 1 + shift :] = 1000.0  # the last text token (only one read has it)
        return out

    got = sink_eval.final_perturbation_spread(fake, s, num_resamples=50)
    assert seen == {"bos": True, "nobos": True}
    keep = np.arange(N) != 3
    positions = np.arange(p + 1, T - 1)
    for name in ("bos", "nobos"):
        want = [(layer + 1) * (np.arange(N)[keep] + 1.0).mean() * positions.mean() for layer in range(3)]
        np.testing.assert_allclose(got[name]["layer"], want, rtol=1e-6)
        assert got[name]["last_low"] <= got[name]["last"] <= got[name]["last_high"]
    assert got["position"] == p and got["rows"] == N - 1
    assert got["last_bos_minus_nobos"][0] == pytest.approx(0.0, abs=1e-6)


def test_spread_eval_matches_two_separate_forward_passes():
    """`step.spread_eval` (one batch of both reads) = numpy norms of the residual streams of two
    separate passes; exactly zero before the swapped position (causality)."""
    cfg = ModelConfig(vocab_size=61, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                      d_ff=64)  # fmt: skip
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    text = sets(N=3, T=12)["nobos"]
    swapped = text.copy()
    swapped[:, 6] = (text[:, 6] + 7) % 61
    got = step_lib.spread_eval(graphdef, params, jnp.asarray(text), jnp.asarray(swapped))
    got = np.asarray(got)

    def hidden(tokens):
        return np.asarray(model(jnp.asarray(tokens), collect=("hidden",))[1]["hidden"], np.float64)

    a, b = hidden(text), hidden(swapped)
    want = np.linalg.norm(a - b, axis=-1) / np.linalg.norm(a, axis=-1)
    # float32 forward passes batched differently: differences of O(1e-6) relative.
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.shape == (3, 3, 12) and np.all(got[:, :, :6] == 0.0)
    assert np.all(got[-1, :, 7:] > 0)  # the change reaches later tokens through attention
