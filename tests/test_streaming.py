"""Streaming with attention sinks (sinks_jax.streaming): the token-by-token decoder with its
ring-buffer cache, the all-queries-at-once evaluation, the plain forward pass and an
independent float64 numpy decoder must agree, on tiny random models of every family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.model import ModelConfig, Transformer
from sinks_jax.streaming import CachePolicy, decode_nll, fast_nll, recompute_nll
from sinks_jax.streaming import policy as policy_lib
from sinks_jax.streaming.head import nll_from_logits

V = 61

FAMILIES = {
    # Llama/Mistral/Qwen2 shape with grouped-query attention and q/k/v biases.
    "llama_gqa": dict(num_heads=4, num_kv_heads=2, qkv_bias=True),
    # Gemma 2/3 shape: local and global layers (own RoPE base), q/k norms, post-norms, 1 + w
    # norm scale, embedding scale, soft-capping.
    "gemma": dict(
        num_layers=3,
        num_heads=4,
        num_kv_heads=1,
        layer_types=("local", "global", "local"),
        sliding_window=5,
        rope_local_theta=100.0,
        qk_norm=True,
        post_norms=True,
        norm_scale_offset=1.0,
        embedding_scale=8.0,
        attn_logit_softcap=4.0,
        final_logit_softcap=12.0,
        activation="gelu_tanh",
        tie_embeddings=True,
    ),
    # GPT-2 shape: learned absolute positions, LayerNorm, biases, plain GELU MLP.
    "gpt2": dict(
        position_type="learned",
        norm_type="layer",
        gated_mlp=False,
        activation="gelu_tanh",
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        max_position_embeddings=64,
    ),
}


def tiny_model(seed=0, std=0.35, **kw) -> Transformer:
    """A random model whose every parameter (norm scales and variant slots included) is
    perturbed, so that no part of the layer is trivially zero or one."""
    base = dict(vocab_size=V, num_layers=2, d_model=32, num_heads=4, d_ff=48, init_std=std)
    model = Transformer(ModelConfig(**{**base, **kw}), rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    noisy = [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def stream(B=2, T=24, seed=1):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


def plain_nll(model, tokens):
    logits, _ = model(tokens)
    return nll_from_logits(logits[:, :-1], tokens[:, 1:])


ATOL = 3e-5  # float32 rounding of NLLs around 4, through a few layers


# --------------------------------------------------------------------------- policy


def test_policy_positions_follow_streamingllm():
    pol = CachePolicy(4, 6)  # cache 10
    t = 15
    j = np.arange(t + 1)
    vis = np.asarray(policy_lib.visible(j, t, pol))
    assert vis.tolist() == [True] * 4 + [False] * 6 + [True] * 6  # sinks + 10..15
    assert int(policy_lib.query_position(t, pol)) == 9
    assert np.asarray(policy_lib.key_position(j[vis], t, pol)).tolist() == list(range(10))
    # Before the cache is full the positions are the true ones and nothing is evicted.
    for t in range(10):
        assert np.asarray(policy_lib.visible(np.arange(t + 1), t, pol)).all()
        assert int(policy_lib.query_position(t, pol)) == t
    assert pol.first_eviction == 10 and pol.name == "4+6"
    assert CachePolicy.parse("1+1023") == CachePolicy(1, 1023)
    assert CachePolicy.parse("dense").dense


@pytest.mark.parametrize(
    "bad", [dict(sinks=-1, window=4), dict(sinks=2, window=0), dict(sinks=1.5)]
)
def test_policy_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="CachePolicy"):
        CachePolicy(**bad)


def test_policy_parse_error_names_the_format():
    with pytest.raises(ValueError, match="SINKS\\+WINDOW"):
        CachePolicy.parse("4-1020")


# --------------------------------------------------------------------------- agreement


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "family,sinks,window",
    [
        pytest.param("llama_gqa", 0, 7, marks=SLOW),
        ("llama_gqa", 1, 6),
        ("llama_gqa", 4, 4),
        ("gemma", 1, 6),
        pytest.param("gemma", 0, 7, marks=SLOW),
        pytest.param("gemma", 4, 4, marks=SLOW),
        pytest.param("gpt2", 2, 6, marks=SLOW),
    ],
)
def test_decode_equals_fast_before_and_after_the_cache_fills(family, sinks, window):
    """Token by token with a ring buffer == all queries at once (window kernel + sink term),
    in chunks that carry the window's keys; dense up to the first eviction, not after."""
    model = tiny_model(**FAMILIES[family])
    tokens = stream(T=26)
    pol = CachePolicy(sinks, window)
    dec = decode_nll(model, tokens, pol, segment=25)
    fast = fast_nll(model, tokens, pol, backend="xla", chunk=13)
    np.testing.assert_allclose(dec, fast, atol=ATOL)
    ref = plain_nll(model, tokens)
    n = pol.first_eviction
    np.testing.assert_allclose(dec[:, :n], ref[:, :n], atol=ATOL)
    assert float(jnp.abs(dec[:, n:] - ref[:, n:]).max()) > 1e-3  # eviction is seen


def test_fast_blockwise_chunks_equal_xla_single_pass():
    """Chunks carrying the window's keys, through the blockwise kernel, equal one pass."""
    model = tiny_model(**FAMILIES["llama_gqa"])
    tokens = stream(T=40)
    pol = CachePolicy(2, 6)
    one = fast_nll(model, tokens, pol, backend="xla", chunk=40)
    chunked = fast_nll(model, tokens, pol, backend="blockwise", chunk=8, block_size=4)
    np.testing.assert_allclose(chunked, one, atol=ATOL)


@pytest.mark.parametrize(
    "family", [f if f == "llama_gqa" else pytest.param(f, marks=SLOW) for f in FAMILIES]
)
def test_window_covering_the_text_reproduces_the_forward_pass(family):
    """W >= T (with or without sinks) and dense attention are the plain forward pass."""
    model = tiny_model(**FAMILIES[family])
    tokens = stream(T=20)
    ref = plain_nll(model, tokens)
    np.testing.assert_allclose(
        fast_nll(model, tokens, CachePolicy(0, 20), backend="xla"), ref, atol=ATOL
    )
    np.testing.assert_allclose(decode_nll(model, tokens, CachePolicy(3, 40)), ref, atol=ATOL)


@pytest.mark.slow
def test_dense_fast_and_decode_reproduce_the_forward_pass():
    model = tiny_model(**FAMILIES["gemma"])
    tokens = stream(T=20)
    ref = plain_nll(model, tokens)
    np.testing.assert_allclose(
        fast_nll(model, tokens, CachePolicy(), backend="blockwise"), ref, atol=ATOL
    )
    np.testing.assert_allclose(decode_nll(model, tokens, CachePolicy(0, 20)), ref, atol=ATOL)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param("sink_logit", marks=SLOW),
        "kv_bias",
        pytest.param("softmax_plus_one", marks=SLOW),
        pytest.param("gated", marks=SLOW),
        pytest.param("sigmoid", marks=SLOW),
    ],
)
def test_attention_variants_stream_like_the_forward_pass(variant):
    model = tiny_model(attention_variant=variant, num_kv_heads=2)
    tokens = stream(T=18)
    ref = plain_nll(model, tokens)
    pol = CachePolicy(1, 5)
    dec = decode_nll(model, tokens, pol, segment=17)
    np.testing.assert_allclose(dec[:, :6], ref[:, :6], atol=ATOL)
    np.testing.assert_allclose(
        fast_nll(model, tokens, pol, backend="blockwise", chunk=8, block_size=4), dec, atol=ATOL
    )


def test_learned_positions_are_bounded_by_the_table():
    model = tiny_model(**FAMILIES["gpt2"])
    with pytest.raises(ValueError, match="learned position table"):
        fast_nll(model, stream(T=70), CachePolicy())
    with pytest.raises(ValueError, match="learned position table"):
        decode_nll(model, stream(T=70), CachePolicy(4, 70))


# --------------------------------------------------------------------------- numpy reference


def _np_params(model):
    f64 = lambda x: np.asarray(x[...], np.float64)
    L = model.layers
    return dict(
        emb=f64(model.embedding),
        head=f64(model.lm_head),
        final=f64(model.final_norm.scale),
        attn_norm=f64(L.attn_norm.scale),
        mlp_norm=f64(L.mlp_norm.scale),
        wq=f64(L.wq),
        wk=f64(L.wk),
        wv=f64(L.wv),
        wo=f64(L.wo),
        w_gate=f64(L.w_gate),
        w_up=f64(L.w_up),
        w_down=f64(L.w_down),
    )


def numpy_stream_nll(model, tokens, sinks, window):
    """An independent float64 decoder of a Llama-shaped model: a cache *list* of pre-RoPE
    keys and values (sinks first, then the window, oldest first), rotated every step by their
    index in the list, the query by the last index."""
    cfg = model.config
    p = _np_params(model)
    H, K, hd, eps = cfg.num_heads, cfg.kv_heads, cfg.head_size, cfg.norm_eps
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2) / hd)

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w

    def rope(x, pos):  # x [..., hd], half-split pairs
        a = pos * inv
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return np.concatenate(
            [x1 * np.cos(a) - x2 * np.sin(a), x2 * np.cos(a) + x1 * np.sin(a)], -1
        )

    out = []
    for row in np.asarray(tokens):
        caches = [[] for _ in range(cfg.num_layers)]  # per layer: list of (token, k, v)
        nll = []
        for t, tok in enumerate(row[:-1]):
            x = p["emb"][tok]
            for li in range(cfg.num_layers):
                h = rms(x, p["attn_norm"][li])
                q = np.einsum("d,dhk->hk", h, p["wq"][li])
                k = np.einsum("d,dhk->hk", h, p["wk"][li])
                v = np.einsum("d,dhk->hk", h, p["wv"][li])
                cache = caches[li]
                cache.append((t, k, v))
                if window is not None:  # evict: keep the first `sinks` and the last `window`
                    cache[:] = [e for e in cache if e[0] < sinks or e[0] > t - window]
                n = len(cache)
                keys = np.stack([rope(e[1], i) for i, e in enumerate(cache)])  # [n, K, hd]
                vals = np.stack([e[2] for e in cache])
                qr = rope(q, n - 1)  # [H, hd]
                g = H // K
                s = np.einsum("hd,nhd->hn", qr, np.repeat(keys, g, axis=1)) / np.sqrt(hd)
                a = np.exp(s - s.max(-1, keepdims=True))
                a /= a.sum(-1, keepdims=True)
                o = np.einsum("hn,nhd->hd", a, np.repeat(vals, g, axis=1))
                x = x + np.einsum("hd,hde->e", o, p["wo"][li])
                h = rms(x, p["mlp_norm"][li])
                gate = h @ p["w_gate"][li]
                x = x + ((gate / (1 + np.exp(-gate))) * (h @ p["w_up"][li])) @ p["w_down"][li]
            logits = rms(x, p["final"]) @ p["head"]
            m = logits.max()
            nll.append(m + np.log(np.exp(logits - m).sum()) - logits[row[t + 1]])
        out.append(nll)
    return np.asarray(out)


@pytest.mark.parametrize(
    "sinks,window",
    [
        (1, 4),
        pytest.param(0, 5, marks=SLOW),
        pytest.param(4, 3, marks=SLOW),
        pytest.param(2, None, marks=SLOW),
    ],
)
def test_decode_equals_an_independent_float64_decoder(sinks, window):
    model = tiny_model(num_heads=4, num_kv_heads=2, rope_theta=500.0)
    tokens = stream(B=1, T=16)
    ref = numpy_stream_nll(model, tokens, sinks, window)
    got = decode_nll(model, tokens, CachePolicy(sinks, window), segment=15)
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, atol=5e-5, rtol=1e-5)


# --------------------------------------------------------------------------- recompute, generate


def test_recompute_runs_each_window_from_scratch():
    model = tiny_model()
    tokens = stream(B=1, T=12)
    W = 4
    got = np.asarray(recompute_nll(model, tokens, W, batch=3))
    for t in (1, 3, 6, 10):  # target t + 1 from tokens max(0, t-W+1) .. t at positions 0..
        window = tokens[:, max(0, t - W + 1) : t + 1]
        logits, _ = model(window)
        want = nll_from_logits(logits[:, -1:], tokens[:, t + 1 : t + 2])[0, 0]
        np.testing.assert_allclose(got[0, t], want, atol=ATOL)


def test_generate_with_a_cache_matches_full_recomputation():
    from sinks_jax.pretrained.generate import generate, greedy_generate

    model = tiny_model(std=0.5)
    prompt = [3, 17, 5, 40]
    want = greedy_generate(model, prompt, 10)
    assert generate(model, prompt, 10) == want  # dense cache
    bounded = generate(model, prompt, 30, sinks=1, window=4)
    assert len(bounded) == 34 and all(0 <= t < V for t in bounded)
    sampled = generate(model, prompt, 10, temperature=1.0, seed=3)
    assert sampled == generate(model, prompt, 10, temperature=1.0, seed=3)
