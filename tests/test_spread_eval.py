"""The final evaluations of a run: the perturbation spread and the sink scores
(train/sink_eval.py, train/step.py)."""

import numpy as np
import pytest

import jax
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


def test_sink_score_eval_is_bos_evals_score_without_the_head():
    """`step.sink_score_eval` gives `bos_eval`'s scores of the same rows, from one pass that
    never builds a `[N, T, V]` array (no output head, no loss)."""
    cfg = ModelConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                      d_ff=64)  # fmt: skip
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    rows = jnp.asarray(sets(N=3, T=12)["bos"])
    got = step_lib.sink_score_eval(graphdef, params, rows)
    want = step_lib.bos_eval(graphdef, params, rows, rows)["scores_bos"]
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    logits_shape = "[3,12,97]"
    assert logits_shape in str(jax.make_jaxpr(step_lib.bos_eval, static_argnums=0)(
        graphdef, params, rows, rows))  # fmt: skip
    assert logits_shape not in str(
        jax.make_jaxpr(step_lib.sink_score_eval, static_argnums=0)(graphdef, params, rows)
    )


def test_final_evaluation_keeps_document_ids_and_window_losses(tmp_path):
    """sink_scores.npz holds each window's document and mean losses; the profile, the loss
    and the spread intervals resample documents: all windows in one document give a zero-width
    interval, one document per window gives the interval over windows."""
    from sinks_jax.records import scores as scores_lib

    s = sets(N=6, T=10)
    L, H = 2, 3
    rng = np.random.default_rng(0)
    fake_scores = {name: rng.uniform(0, 0.6, size=(L, 6, H)).astype(np.float32)
                   for name in ("bos", "nobos")}  # fmt: skip
    score_fn = lambda t: fake_scores["bos" if t[0, 0] == BOS else "nobos"]  # noqa: E731
    loss = {"bos": rng.uniform(3, 4, 6), "nobos": rng.uniform(3, 5, 6)}
    docs = np.array([4, 4, 9, 9, 9, 2])
    prof = sink_eval.final_sink_profiles(score_fn, {**s, "doc_ids": docs}, out_dir=str(tmp_path),
                                         num_resamples=200, window_loss=loss)
    assert scores_lib.load_scores(str(tmp_path)).keys() == {"bos", "nobos"}
    kept = scores_lib.load_windows(str(tmp_path))
    np.testing.assert_array_equal(kept["doc_ids"], docs)
    np.testing.assert_allclose(kept["loss"]["nobos"], loss["nobos"], rtol=1e-6)
    assert prof["bos"]["0.3"]["num_documents"] == 3
    want = analysis.sink_profile(fake_scores["bos"], 0.3, jax.random.key(0), num_resamples=200,
                                 clusters=docs)
    assert prof["bos"]["0.3"]["rate_low"] == pytest.approx(float(want["rate_low"]))
    # Without document ids (older files): intervals over windows, no doc_ids in the file.
    sink_eval.final_sink_profiles(score_fn, s, out_dir=str(tmp_path), num_resamples=50)
    assert scores_lib.load_windows(str(tmp_path)) == {"doc_ids": None, "loss": {}}

    got = sink_eval.final_window_losses(loss, {**s, "doc_ids": docs}, num_resamples=500)
    assert got["documents"] == 3 and got["windows"] == 6
    assert got["nobos_minus_bos"][0] == pytest.approx((loss["nobos"] - loss["bos"]).mean())
    one_doc = sink_eval.final_window_losses(loss, {**s, "doc_ids": np.zeros(6)}, 500)
    for k in ("bos", "nobos", "nobos_minus_bos"):
        assert one_doc[k][1] == pytest.approx(one_doc[k][0]) == pytest.approx(one_doc[k][2])
    per_window = sink_eval.final_window_losses(loss, {**s, "doc_ids": np.arange(6)}, 500)
    mean, low, high = analysis.bootstrap_interval(loss["bos"], jax.random.key(0), 500)
    assert per_window["bos"][1] == pytest.approx(float(low), rel=1e-6)

    def fake(tokens_NxT, swapped_NxT):
        return rng.uniform(size=(L + 1,) + tokens_NxT.shape)

    spread = sink_eval.final_perturbation_spread(fake, {**s, "doc_ids": np.zeros(6)}, 100)
    assert spread["bos"]["last_low"] == pytest.approx(spread["bos"]["last"], rel=1e-6)
    assert spread["last_bos_minus_nobos"][1] == pytest.approx(spread["last_bos_minus_nobos"][2])
