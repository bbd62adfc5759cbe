"""Train step, optimizer and sharding: CPU, tiny models, 8 fake devices (conftest)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.train import optim, sharding
from sinks_jax.train import step as step_lib

OPT = {
    "lr": 3e-3,
    "min_lr": 3e-4,
    "warmup_steps": 2,
    "b1": 0.9,
    "b2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "clip_norm": 1.0,
}
CFG = ModelConfig(
    vocab_size=32,
    num_layers=2,
    d_model=32,
    num_heads=4,
    num_kv_heads=2,
    d_ff=64,
    attention="blockwise",
    block_size=8,
)


def init(cfg=CFG, seed=0):
    graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(seed)))
    return graphdef, nnx.to_pure_dict(state)


def random_batch(rng, shape, vocab=32, segments=False):
    *lead, T = shape
    ids = rng.integers(1, vocab, (*lead, T + 1)).astype(np.int32)
    seg = np.ones(shape, np.int32)
    if segments:
        seg[..., T // 2 :] = 2
    pos = np.broadcast_to(np.arange(T, dtype=np.int32), shape).copy()
    mask = (rng.random(shape) > 0.2).astype(np.int32)
    return {
        "tokens": ids[..., :-1],
        "targets": ids[..., 1:],
        "segment_ids": seg,
        "positions": pos,
        "loss_mask": mask,
    }


def test_masked_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 5)).astype(np.int32)
    mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], np.int32)
    total, count = step_lib.masked_ce_sum(
        jnp.asarray(logits), {"targets": targets, "loss_mask": mask}
    )
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(total), (nll * mask).sum(), rtol=1e-5)
    assert float(count) == mask.sum()


def test_schedule_warmup_then_cosine_to_floor():
    sched = optim.make_schedule(dict(OPT, warmup_steps=10), 110)
    peak, floor = OPT["lr"], OPT["min_lr"]
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(5)), peak * 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(sched(10)), peak, rtol=1e-6)
    want = floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * 50 / 100))
    np.testing.assert_allclose(float(sched(60)), want, rtol=1e-5)
    np.testing.assert_allclose(float(sched(110)), floor, rtol=1e-5)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.make_schedule(dict(OPT, warmup_steps=10), 10)


def test_weight_decay_only_on_matrices():
    _, params = init(CFG.replace(qkv_bias=True))
    mask = optim.decay_mask(params)
    flat = {
        "/".join(str(k.key) for k in path): v
        for path, v in jax.tree_util.tree_leaves_with_path(mask)
    }
    assert flat["layers/wq"] and flat["layers/w_up"] and flat["lm_head"]
    assert not flat["layers/attn_norm/scale"] and not flat["final_norm/scale"]
    assert not flat["layers/bq"] and not flat["layers/bv"]  # [L, H, hd] biases: no decay.


def test_accumulation_steps_and_errors():
    assert optim.accumulation_steps(4096, 128, 8) == 4
    assert optim.accumulation_steps(4096, 2048, 8) == 1  # micro-batch capped at the batch.
    with pytest.raises(ValueError, match="not divisible by seq_len"):
        optim.accumulation_steps(1000, 128, 8)
    with pytest.raises(ValueError, match="micro_batch_size=3"):
        optim.accumulation_steps(4096, 128, 3)


def test_fsdp_rule_shards_largest_divisible_axis_never_layers():
    P = jax.sharding.PartitionSpec
    layer_path = (jax.tree_util.DictKey("layers"), jax.tree_util.DictKey("wq"))
    top_path = (jax.tree_util.DictKey("lm_head"),)
    assert sharding.fsdp_spec(layer_path, (8, 32, 4, 8), 4) == P(None, "fsdp", None, None)
    assert sharding.fsdp_spec(layer_path, (8, 3, 5, 7), 4) == P()  # nothing divisible; L=8 skipped.
    assert sharding.fsdp_spec(top_path, (32, 259), 4) == P("fsdp", None)
    assert sharding.fsdp_spec(top_path, (32, 259), 1) == P()


def _train_once(mesh, params, batch, tx, graphdef, steps=2):
    p_shard = sharding.tree_shardings(mesh, params)
    abs_opt = jax.eval_shape(tx.init, params)
    o_shard = sharding.tree_shardings(mesh, abs_opt)
    p = jax.device_put(jax.tree.map(np.array, params), p_shard)  # a copy: the step donates it.
    o = jax.jit(tx.init, out_shardings=o_shard)(p)
    b_shard = sharding.batch_sharding(mesh, accumulate=True)
    fn = step_lib.make_train_step(
        graphdef,
        tx,
        param_shardings=p_shard,
        opt_shardings=o_shard,
        batch_sharding=b_shard,
        replicated=sharding.replicated(mesh),
        use_segments=True,
        sink_stats=True,
    )
    for _ in range(steps):  # two steps by default: the first has lr = 0 during warm-up.
        p, o, metrics = fn(p, o, sharding.global_batch(batch, b_shard))
    return jax.device_get(p), jax.device_get(metrics)


# Two runs that sum the same float32 terms in another order (other devices, other micro-batches)
# agree on the gradient only up to rounding: relative to a leaf's largest entry, a few hundred
# float32 epsilons after the layers' matmuls and reductions. GRAD_RTOL allows ~850 epsilons; a
# wrong mask, normalisation or shard (the bugs these tests guard against) moves gradients by O(1).
F32_EPS = float(np.finfo(np.float32).eps)
GRAD_RTOL = 1e-4


def _sgd_gradients(p0, p1):
    """With optax.sgd(1.0) one step is p1 = p0 - g: the gradient, before any optimizer state."""
    return jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), p0, p1)


def _assert_same_gradients(p0, pa, pb):
    """pa, pb: parameters after one optax.sgd(1.0) step from p0 in two layouts."""
    ga, gb = _sgd_gradients(p0, pa), _sgd_gradients(p0, pb)
    for g, h, p in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), jax.tree.leaves(p0)):
        # + the rounding of p0 - g when the step is stored in float32.
        tol = GRAD_RTOL * np.abs(g).max() + 4 * F32_EPS * np.abs(p).max()
        np.testing.assert_allclose(g, h, rtol=0, atol=tol)
    return ga


def _assert_same_adam_update(p0, pa, pb, grads, lr):
    """Parameters after AdamW steps whose bias-corrected update is lr * g / (|g| + eps) + decay.

    That map has slope <= 1/|g|, so a gradient error d (at most GRAD_RTOL * max|g| of the leaf,
    as `_assert_same_gradients` checked) moves a parameter by at most lr * 2d / |g|, and never
    by more than 2 lr. Large gradients must therefore agree tightly; only entries whose
    gradient is at the rounding floor may differ by up to 2 lr.
    """
    for a, b, g, p in zip(*(jax.tree.leaves(t) for t in (pa, pb, grads, p0))):
        d = GRAD_RTOL * np.abs(g).max()
        tol = lr * np.minimum(2.0, 4 * d / np.maximum(np.abs(g), 1e-30)) + 4 * F32_EPS * np.abs(p)
        assert np.all(np.abs(np.asarray(a) - np.asarray(b)) <= tol), np.max(
            np.abs(np.asarray(a) - np.asarray(b)) - tol
        )


@pytest.mark.slow  # ~50 s of compilation: the second CI stage
def test_one_device_equals_eight_devices_fsdp_and_data():
    assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
    graphdef, params = init()
    batch = random_batch(np.random.default_rng(1), (1, 8, 16), segments=True)
    one = jax.make_mesh(
        (1, 1),
        ("data", "fsdp"),
        devices=jax.devices()[:1],
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
    )
    eight = sharding.make_mesh({"data": 2, "fsdp": 4})
    sgd = optax.sgd(1.0)
    g1 = _train_once(one, params, batch, sgd, graphdef, steps=1)[0]
    g8 = _train_once(eight, params, batch, sgd, graphdef, steps=1)[0]
    grads = _assert_same_gradients(params, g1, g8)

    tx = optim.make_optimizer(OPT, 10)
    p1, m1 = _train_once(one, params, batch, tx, graphdef)
    p8, m8 = _train_once(eight, params, batch, tx, graphdef)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["sink_attn"], m8["sink_attn"], atol=1e-5)
    _assert_same_adam_update(params, p1, p8, grads, float(optim.make_schedule(OPT, 10)(1)))
    assert m1["sink_attn"].shape == (CFG.num_layers, CFG.num_heads)


@pytest.mark.slow  # ~55 s of compilation: the second CI stage
def test_grad_accumulation_equals_one_big_step():
    graphdef, params = init()
    opt = dict(OPT, warmup_steps=1)
    big = random_batch(np.random.default_rng(2), (1, 8, 16))
    micro = {k: v.reshape(4, 2, 16) for k, v in big.items()}

    def run(tx, batch, steps):
        fn = jax.jit(
            lambda p, o, b: step_lib.train_step(
                p, o, b, graphdef=graphdef, tx=tx, use_segments=False, sink_stats=False
            )
        )
        p, o = params, tx.init(params)
        for _ in range(steps):
            p, o, m = fn(p, o, batch)
        return jax.device_get(p), jax.device_get(m)

    sgd = optax.sgd(1.0)
    grads = _assert_same_gradients(params, run(sgd, big, 1)[0], run(sgd, micro, 1)[0])

    tx = optim.make_optimizer(opt, 10)
    (pa, ma), (pb, mb) = run(tx, big, 2), run(tx, micro, 2)
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)
    np.testing.assert_allclose(ma["grad_norm"], mb["grad_norm"], rtol=1e-4)
    _assert_same_adam_update(params, pa, pb, grads, float(optim.make_schedule(opt, 10)(1)))


@pytest.mark.slow  # end to end: in the second CI stage
def test_jitted_micro_step_loop_equals_one_big_step_on_8_devices():
    """make_train_step's per-micro-batch calls (k > 1) give the update of one big step."""
    graphdef, params = init()
    opt = dict(OPT, warmup_steps=1)
    big = random_batch(np.random.default_rng(4), (1, 32, 16), segments=True)
    micro = {k: v.reshape(4, 8, 16) for k, v in big.items()}
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    sgd = optax.sgd(1.0)
    grads = _assert_same_gradients(
        params,
        _train_once(mesh, params, big, sgd, graphdef, steps=1)[0],
        _train_once(mesh, params, micro, sgd, graphdef, steps=1)[0],
    )
    tx = optim.make_optimizer(opt, 10)
    pa, ma = _train_once(mesh, params, big, tx, graphdef)
    pb, mb = _train_once(mesh, params, micro, tx, graphdef)
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)
    np.testing.assert_allclose(ma["grad_norm"], mb["grad_norm"], rtol=1e-4)
    np.testing.assert_allclose(ma["sink_rate_0.3"], mb["sink_rate_0.3"], atol=1e-6)
    # sink statistics are per-micro-batch means, averaged over the micro-batches
    np.testing.assert_allclose(ma["sink_attn"], mb["sink_attn"], atol=1e-5)
    _assert_same_adam_update(params, pa, pb, grads, float(optim.make_schedule(opt, 10)(1)))


def test_non_finite_loss_keeps_the_last_good_state():
    graphdef, params = init()
    tx = optim.make_optimizer(dict(OPT, warmup_steps=1), 10)
    batch = random_batch(np.random.default_rng(3), (1, 2, 8))
    bad = jax.tree.map(lambda x: x, params)
    bad["lm_head"] = params["lm_head"].at[0, 0].set(jnp.nan)
    new_p, _, m = step_lib.train_step(
        bad, tx.init(bad), batch, graphdef=graphdef, tx=tx, use_segments=False, sink_stats=False
    )
    assert not bool(m["finite"])
    for a, b in zip(jax.tree.leaves(new_p), jax.tree.leaves(bad)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loss_decreases_on_synthetic_data():
    from sinks_jax.data.loader import make_loader

    cfg = CFG.replace(vocab_size=259)
    graphdef, params = init(cfg)
    steps = 150
    tx = optim.make_optimizer(dict(OPT, lr=1e-2, min_lr=1e-3, warmup_steps=10), steps)
    loader = make_loader(
        "synthetic:bigram_backcopy", "byte", 32, 16, "concat_bos", False, False, 0, progress=False
    )
    fn = jax.jit(
        lambda p, o, b: step_lib.train_step(
            p, o, b, graphdef=graphdef, tx=tx, use_segments=False, sink_stats=False
        )
    )
    opt_state, losses = tx.init(params), []
    for _ in range(steps):
        batch = {k: v[None] for k, v in next(loader).items()}
        params, opt_state, m = fn(params, opt_state, batch)
        losses.append(float(m["loss"]))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert first > math.log(259) - 0.3  # starts near uniform over the vocabulary.
    assert last < first - 1.5, (first, last)  # learns the symbol bigrams.


def test_sink_summary_matches_brute_force():
    rng = np.random.default_rng(4)
    col = rng.random((2, 3, 4, 6)).astype(np.float32)  # [L, B, H, T]
    seg = np.ones((3, 6), np.int32)
    seg[1, 4:] = 0  # padding at the end of row 1.
    queries = step_lib.sink_queries(jnp.asarray(seg), CFG, use_segments=False)
    out = step_lib.sink_summary(jnp.asarray(col), queries)
    scores = np.stack(
        [[[col[l, b, h][seg[b] > 0].mean() for h in range(4)] for b in range(3)] for l in range(2)]
    )
    np.testing.assert_allclose(out["sink_attn"], scores.mean(1), rtol=1e-5)
    want = np.mean([(scores[:, b] > 0.3).mean() for b in range(3)])
    np.testing.assert_allclose(float(out["sink_rate_0.3"]), want, rtol=1e-6)


def two_document_row():
    """One row of T = 8: document 1 at positions 0-2, document 2 at 3-6, padding at 7."""
    return np.array([[1, 1, 1, 2, 2, 2, 2, 0]], np.int32)


@pytest.mark.parametrize(
    "sink_key,global_first_key,want",
    [
        # key 0 is seen by the 3 queries of document 1 only: their mean is a perfect 1.
        ("window", False, 1.0),
        # key 0 seen by all 7 real queries: (3 * 1 + 4 * 0.25) / 7.
        ("window", True, 4.0 / 7.0),
        # each document's first key: (3 * 1 + 4 * 0.5) / 7.
        ("segment", False, 5.0 / 7.0),
    ],
)
def test_sink_summary_counts_only_queries_that_see_the_sink(sink_key, global_first_key, want):
    seg = two_document_row()
    # A hand-made sink_attn [L=1, B=1, H=1, T]: attention of each query to *its* sink key.
    # Document 1 puts all its attention on key 0. Document 2's queries put 0.25 on key 0
    # when it is visible to them (global_first_key) and 0.5 on their own first key (3).
    doc2 = {"window": 0.25 if global_first_key else 0.0, "segment": 0.5}[sink_key]
    col = np.array([1, 1, 1, doc2, doc2, doc2, doc2, 0.9], np.float32)[None, None, None]
    cfg = CFG.replace(sink_key=sink_key, global_first_key=global_first_key)
    queries = step_lib.sink_queries(jnp.asarray(seg), cfg, use_segments=True)
    out = step_lib.sink_summary(jnp.asarray(col), queries)
    np.testing.assert_allclose(float(out["sink_attn"][0, 0]), want, rtol=1e-6)
    assert float(out["sink_rate_0.8"]) == float(want > 0.8)


@pytest.mark.parametrize("sink_key", ["window", "segment"])
def test_in_step_sink_statistic_matches_attention_maps(sink_key):
    """The in-step statistic from the model's LSE-based `sink_attn` equals the mean of the
    explicit attention maps' sink column over the queries that see the sink (numpy)."""
    cfg = CFG.replace(attention="xla", sink_key=sink_key)
    graphdef, params = init(cfg)
    batch = random_batch(np.random.default_rng(5), (1, 8))
    batch["segment_ids"] = two_document_row()
    batch["positions"] = np.array([[0, 1, 2, 0, 1, 2, 3, 0]], np.int32)
    _, aux = step_lib.apply_model(
        graphdef, params, batch, use_segments=True, collect=("attn_probs", "sink_attn")
    )
    queries = step_lib.sink_queries(jnp.asarray(batch["segment_ids"]), cfg, use_segments=True)
    stats = step_lib.sink_summary(aux["sink_attn"], queries)
    probs = np.asarray(aux["attn_probs"], np.float64)[:, 0]  # [L, H, T, T]
    sink = [0, 0, 0, 3, 3, 3, 3] if sink_key == "segment" else [0, 0, 0]  # real queries' sinks
    want = np.mean([probs[:, :, i, k] for i, k in enumerate(sink)], axis=0)  # [L, H]
    np.testing.assert_allclose(np.asarray(stats["sink_attn"]), want, rtol=1e-4, atol=1e-6)
