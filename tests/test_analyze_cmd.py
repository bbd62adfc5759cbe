"""`sinks-jax analyze` end to end on a tiny random model, and its model-level helpers."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax import analyze
from sinks_jax.analysis import prompts
from sinks_jax.model import ModelConfig, Transformer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_model(attention="xla", seed=0, **knobs):
    cfg = ModelConfig(
        vocab_size=259,
        num_layers=2,
        d_model=32,
        num_heads=4,
        num_kv_heads=2,
        d_ff=64,
        attention=attention,
        **knobs,
    )
    return Transformer(cfg, rngs=nnx.Rngs(seed))


def test_analyze_end_to_end(tmp_path, capsys):
    prompt_file = tmp_path / "p.jsonl"
    lines = [{"text": prompts.DEFAULT_PROMPTS[i]} for i in range(3)] + [{"text": "short"}]
    prompt_file.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    out = tmp_path / "report"
    rc = analyze.main(
        [
            "--init-tiny",
            "--prompts",
            str(prompt_file),
            "--seq-len",
            "24",
            "--batch-size",
            "2",
            "--spread-len",
            "100",
            "--out",
            str(out),
            "--jacobian-layers",
            "all",
            "--jacobian-chunk",
            "16",
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    L, H, T = 2, 4, 24
    assert report["settings"]["seq_len"] == T and report["settings"]["short"] == "skip"
    for layout in ("with_bos", "text_only"):
        s = report["sinks"][layout]
        assert s["num_sequences"] == 3 and s["kept_prompt_indices"] == [0, 1, 2]
        assert set(s["sink_rate_percent"]) == {"0.3", "0.8"}
        assert np.asarray(s["sink_score_mean_LxH"]).shape == (L, H)
        assert np.asarray(s["sink_score_per_sequence_LxNxH"]).shape == (L, 3, H)
        assert np.asarray(s["received_alpha_mean_LxHxT"]).shape == (L, H, T)
        assert np.asarray(s["rank_collapse_Lp1"]).shape == (L + 1,)
        assert np.asarray(s["attention_entropy_nats_LxH"]).shape == (L, H)
        assert s["received_vs_column_max_abs_diff"] < 1e-5
    spread = report["spread"]
    pos, n = spread["swap_position"], spread["num_text_tokens"]
    assert n == 100
    for key in ("divergence_with_bos_Lp1xT", "divergence_without_bos_Lp1xT"):
        div = np.asarray(spread[key])
        assert div.shape == (L + 1, n)
        assert (div[:, :pos] == 0).all() and (div[:, pos] > 0).all()
    jac = spread["jacobian"]
    sens = np.asarray(jac["sensitivity_NxT"])
    assert sens.shape == (L + 1, n + 1) and jac["target"] == n
    assert np.asarray(jac["path_bound_T"]).shape == (n + 1,)
    assert sens[0, -1] == pytest.approx(np.sqrt(32), rel=1e-5)  # identity at layer 0
    assert jac["exact"] and jac["directions"] == 32  # d_model 32 <= the default 64: exact
    # Every stage says when it is done, with its time (stderr is not a terminal here).
    stages = [line.rsplit(": ", 1)[0] for line in capsys.readouterr().err.splitlines()
              if line.endswith(" s")]  # fmt: skip
    assert stages == [
        "model", "prompts", "sinks, with_bos (3 sequences of 24 tokens)",
        "sinks, text_only (3 sequences of 24 tokens)",
        f"perturbation spread (100 tokens, token {pos} swapped)",
        "representational collapse against length",
        "jacobian (every layer, 32 directions, exact: 96 backward passes)", "path bound",
        "figures",
    ], stages  # fmt: skip
    assert len(report["figures"]) == 6
    import matplotlib.image

    for name in report["figures"]:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_analyze_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert analyze.main(["--init-tiny", "--prompts", str(empty), "--out", str(tmp_path)]) == 2
    assert "holds no prompts" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("tiny\nalso tiny\n")
    assert analyze.main(["--init-tiny", "--prompts", str(short), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "shorter than --seq-len 64" in err and "--short pad" in err
    assert (
        analyze.main(
            ["--init-tiny", "--prompts", str(tmp_path / "nope.txt"), "--out", str(tmp_path)]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert analyze.main(["--init-tiny", "--swap", "greatest", "--out", str(tmp_path)]) == 2
    assert "OLD=NEW" in capsys.readouterr().err


def test_padding_is_excluded_from_sink_scores():
    model = tiny_model()
    rng = np.random.default_rng(0)
    lists = [list(rng.integers(3, 259, size=n)) for n in (12, 7)]
    tokens, valid, kept = analyze.make_sequences(lists, 12, bos_id=1, pad_id=0, short="pad")
    assert kept == [0, 1] and valid[1].sum() == 8 and tokens[1, 0] == 1 and tokens[1, 8] == 0
    stats = analyze.batch_statistics(model, jnp.asarray(tokens), jnp.asarray(valid))
    for b, n in ((0, 12), (1, 8)):
        # Reference: the unpadded sequence alone, Gu's alpha_0 over its n queries (numpy).
        _, aux = model(jnp.asarray(tokens[b : b + 1, :n]), collect=("attn_probs",))
        probs = np.asarray(aux["attn_probs"], np.float64)[:, 0]  # [L, H, n, n]
        want = probs[..., :, 0].mean(-1)
        np.testing.assert_allclose(np.asarray(stats["scores_LxBxH"])[:, b], want, rtol=1e-5)
        want_alpha = probs.sum(-2) / (n - np.arange(n))
        np.testing.assert_allclose(
            np.asarray(stats["alpha_LxBxHxT"])[:, b, :, :n], want_alpha, rtol=1e-4, atol=1e-6
        )
    _, _, kept = analyze.make_sequences(lists, 12, bos_id=1, pad_id=0, short="skip")
    assert kept == [0]


LOCAL_THEN_GLOBAL = dict(
    sliding_window=5, layer_types=("local", "global"), rope_local_theta=10.0, qk_norm=True
)


@pytest.mark.parametrize(
    "backend,knobs", [("xla", {}), ("blockwise", {}), ("blockwise", LOCAL_THEN_GLOBAL)]
)
def test_received_attention_model_matches_column_sums(backend, knobs):
    model = tiny_model(attention=backend, seed=1, **knobs)
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 259, size=(2, 16)), jnp.int32)
    valid = jnp.ones((2, 16), jnp.float32)
    _, aux = model(tokens, collect=("hidden",))
    got = analyze.received_attention_model(model, aux["hidden"], valid)
    _, aux_x = analyze.with_backend(model, "xla")(tokens, collect=("attn_probs",))
    want = np.asarray(aux_x["attn_probs"], np.float64).sum(-2)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_residual_stream_fn_is_differentiable_and_matches_model():
    model = tiny_model(seed=2)
    tokens = jnp.asarray([[5, 9, 200, 31, 77, 4]], jnp.int32)
    _, aux = model(tokens, collect=("hidden",))
    forward_fn, params = analyze.residual_stream_fn(model)
    hidden = forward_fn(params, aux["hidden"][0])
    np.testing.assert_allclose(np.asarray(hidden), np.asarray(aux["hidden"]), rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda e: forward_fn(params, e)[-1, 0, 3].sum())(aux["hidden"][0])
    g = np.abs(np.asarray(grad[0])).sum(-1)
    assert (g[:4] > 0).all() and (g[4:] == 0).all()


def test_analyze_reads_a_training_workdir(tmp_path, capsys):
    checkpoint = pytest.importorskip("sinks_jax.train.checkpoint")
    model = tiny_model(seed=3)
    workdir = str(tmp_path / "run")
    source = "synthetic:bigram_backcopy"
    checkpoint.write_run_config(
        workdir, {"model": model.config.to_dict(), "data": {"tokenizer": "byte", "source": source}}
    )
    ckpt = checkpoint.Checkpointer(workdir, async_save=False)
    ckpt.save(
        5,
        nnx.to_pure_dict(nnx.state(model)),
        {"count": jnp.zeros((), jnp.int32)},
        {"step": 5},
        force=True,
    )
    ckpt.close()
    out = tmp_path / "report"
    assert (
        analyze.main(
            [
                "--workdir",
                workdir,
                "--seq-len",
                "16",
                "--batch-size",
                "4",
                "--spread-len",
                "100",
                "--skip-jacobian",
                "--tokenizer",  # ignored: the run's own tokenizer is used and recorded.
                "hf:/nonexistent/tokenizer.json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["model"].startswith("workdir:")
    assert report["settings"]["tokenizer"] == "byte"
    # By default a run is analysed on its own held-out documents, and the report says so.
    used = f"source:{source} (the run's held-out documents, valid split)"
    assert report["settings"]["prompts"] == used
    assert f"prompts: {used}" in capsys.readouterr().out
    assert "jacobian" not in report["spread"] and len(report["figures"]) == 5
    # The restored weights are the saved ones: sink scores equal a direct numpy computation.
    toks = analyze.load_tokenizer("byte")
    first = analyze.prompts_from_source(source, 1, 16, toks)[0]  # token ids
    row = [toks.bos_id] + list(first)[:15]
    _, aux = model(jnp.asarray([row], jnp.int32), collect=("attn_probs",))
    want = np.asarray(aux["attn_probs"], np.float64)[:, 0, :, :, 0].mean(-1)
    got = np.asarray(report["sinks"]["with_bos"]["sink_score_per_sequence_LxNxH"])[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_analyze_prompts_from_a_source_with_token_swap(tmp_path):
    out = tmp_path / "r"
    assert (
        analyze.main(
            [
                "--init-tiny",
                "--prompts-source",
                "synthetic:bigram_backcopy",
                "--num-prompts",
                "5",
                "--seq-len",
                "16",
                "--spread-len",
                "32",
                "--skip-jacobian",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["prompts"] == "source:synthetic:bigram_backcopy (valid split)"
    assert report["sinks"]["text_only"]["num_sequences"] == 5
    spread = report["spread"]
    assert spread["changed_positions"] == [16] and spread["old"].endswith("@16")
    div = np.asarray(spread["divergence_without_bos_Lp1xT"])
    assert (div[:, :16] == 0).all() and (div[:, 16] > 0).all()


def test_collapse_vs_length_matches_separate_runs():
    model = tiny_model(seed=4)
    seq = list(np.random.default_rng(5).integers(0, 256, size=20))
    hidden_fn = nnx.jit(lambda m, t: m(t, collect=("hidden",))[1]["hidden"])
    res = analyze.collapse_vs_length(model, hidden_fn, seq)
    assert res["lengths"][0] == 2 and res["lengths"][-1] == 19
    picks = [0, len(res["lengths"]) // 2, len(res["lengths"]) - 1]  # few shapes, few compiles
    for r, n in [(r, res["lengths"][r]) for r in picks]:
        h_a = np.asarray(model(jnp.asarray([seq[:n]]), collect=("hidden",))[1]["hidden"])
        h_b = np.asarray(
            model(jnp.asarray([seq[:n] + [seq[n - 1]]]), collect=("hidden",))[1]["hidden"]
        )
        want_rep = np.linalg.norm(h_a[:, 0, -1] - h_b[:, 0, -1], axis=-1)
        want_two = np.linalg.norm(h_a[:, 0, -1] - h_a[:, 0, -2], axis=-1)
        np.testing.assert_allclose(
            np.asarray(res["repeat_last_token_Lp1xR"])[:, r], want_rep, rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            np.asarray(res["last_two_tokens_Lp1xR"])[:, r], want_two, rtol=1e-4, atol=1e-6
        )


def test_bos_loss_compares_the_same_targets():
    model = tiny_model()
    rng = np.random.default_rng(0)
    texts = [list(rng.integers(0, 256, 12)) for _ in range(3)]
    for t in texts:  # greedy tokens at even positions, so that top-1 accuracy is not zero
        for p in range(2, 10, 2):
            t[p] = int(np.argmax(np.asarray(model(jnp.asarray([[256] + t[:p]]))[0])[0, -1]))
    res = analyze.bos_loss_report(model, texts, bos_id=256, seq_len=10, batch=2)
    # independent: per-sequence log-softmax in numpy on the two layouts
    x = np.asarray([t[:10] for t in texts])
    with_bos = np.concatenate([np.full((3, 1), 256), x[:, :-1]], axis=1)

    def nll(tokens, positions):
        logits = np.asarray(model(jnp.asarray(tokens))[0], np.float64)
        logp = (
            logits
            - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - logits.max(-1, keepdims=True)
        )
        return -sum(logp[b, p, x[b, t]] for b in range(3) for p, t in positions)

    def hits(tokens, positions):
        pred = np.asarray(model(jnp.asarray(tokens))[0]).argmax(-1)
        return sum(int(pred[b, p] == x[b, t]) for b in range(3) for p, t in positions)

    want_w = nll(with_bos, [(p, p) for p in range(1, 10)]) / 27
    want_t = nll(x, [(p, p + 1) for p in range(0, 9)]) / 27
    assert res["targets"] == 27
    np.testing.assert_allclose(res["loss_with_bos"], want_w, rtol=1e-5)
    np.testing.assert_allclose(res["loss_text_only"], want_t, rtol=1e-5)
    acc_w = hits(with_bos, [(p, p) for p in range(1, 10)])
    assert acc_w >= 12  # the greedy positions
    assert res["top1_accuracy_with_bos"] == acc_w / 27
    assert res["top1_accuracy_text_only"] == hits(x, [(p, p + 1) for p in range(9)]) / 27


@pytest.mark.slow  # ~15 s: the second CI stage
def test_analyze_loss_file_and_long_context(tmp_path):
    loss_file = tmp_path / "loss.txt"
    loss_file.write_text("\n".join(prompts.DEFAULT_PROMPTS[:3]) + "\n")
    out = tmp_path / "report"
    rc = analyze.main(
        [
            "--init-tiny",
            "--skip-jacobian",
            "--loss-file",
            str(loss_file),
            "--long-context",
            "300",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bos_loss"]["num_sequences"] == 3
    (lc,) = report["long_context"]
    assert lc["seq_len"] == 300 and lc["backend"] == "blockwise"
    assert lc["sink_score_mean"] == pytest.approx(np.mean(lc["sink_scores_LxH"]), rel=1e-6)
    assert np.asarray(lc["sink_scores_LxH"]).shape == (2, 4)
    assert len(lc["top_received_keys"]) == len(lc["top_received_attention_sum"]) == 8
    assert lc["cudnn_lse_dtype"] is None  # blockwise, not cuDNN


@pytest.mark.slow  # ~15 s: the second CI stage
def test_analyze_random_model_of_a_hf_shape(tmp_path):
    config = {
        "model_type": "llama",
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "report"
    assert analyze.main(["--init-hf-config", str(path), "--skip-jacobian", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert np.asarray(report["sinks"]["with_bos"]["sink_score_mean_LxH"]).shape == (3, 4)


def test_long_context_scores_local_layers_over_the_queries_that_see_key_0():
    model = tiny_model(attention="blockwise", seed=4, **LOCAL_THEN_GLOBAL)  # window 5, T 16
    texts = [list(np.random.default_rng(4).integers(3, 256, 40))]
    res = analyze.long_context_report(model, texts, 1, 16, "blockwise", [0.3])
    tokens = jnp.asarray([[1] + texts[0][:15]], jnp.int32)
    _, aux = analyze.with_backend(model, "xla")(tokens, collect=("attn_probs",))
    col_LxHxT = np.asarray(aux["attn_probs"], np.float64)[:, 0, :, :, 0]  # [L, H, T queries]
    want = np.stack([col_LxHxT[0, :, :5].mean(-1), col_LxHxT[1].mean(-1)])  # local, global
    np.testing.assert_allclose(np.asarray(res["sink_scores_LxH"]), want, rtol=1e-5, atol=1e-6)
    assert res["queries_scored_per_layer"] == [5, 16]


def test_analyze_long_context_only_measures_each_length(tmp_path):
    out = tmp_path / "report"
    argv = ["--init-tiny", "--long-context", "40", "24", "--long-context-only", "--out", str(out)]
    assert analyze.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [lc["seq_len"] for lc in report["long_context"]] == [24, 40]
    assert report["sinks"] == {} and "spread" not in report and "figures" not in report
    assert sorted(os.listdir(out)) == ["report.json"]
    assert analyze.main(argv[:1] + ["--long-context-only", "--out", str(out)]) == 2


def test_num_prompts_limits_every_prompt_source(tmp_path):
    import argparse

    from sinks_jax.analyze.inputs import choose_prompts
    from sinks_jax.data.tokenizers import get_tokenizer

    tok = get_tokenizer("byte")
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("\n".join(prompts.DEFAULT_PROMPTS[:5]) + "\n")

    def chosen(num, **where):
        base = dict(prompts=None, prompts_source=None, num_prompts=num, seq_len=16, short="skip",
                    spread_prompt=None, spread_len=32, swap=None, workdir=None)  # fmt: skip
        args = argparse.Namespace(**{**base, **where})
        lists, desc = choose_prompts(args, tok, None)
        return len(lists), desc

    assert chosen(None, prompts=str(prompt_file)) == (5, f"file:{prompt_file}")
    assert chosen(2, prompts=str(prompt_file)) == (2, f"first 2 of file:{prompt_file}")
    assert chosen(None) == (len(prompts.DEFAULT_PROMPTS), "built-in paragraphs")
    assert chosen(3) == (3, "first 3 of built-in paragraphs")
    assert chosen(4, prompts_source="synthetic:bigram_backcopy")[0] == 4


def test_jacobian_from_random_directions_is_close_to_the_exact_one():
    import argparse

    from sinks_jax.analyze.measurements import jacobian_report

    model = tiny_model()
    hidden_fn = nnx.jit(lambda m, t: m(t, collect=("hidden",))[1]["hidden"])
    base = list(np.random.default_rng(0).integers(3, 259, size=20))

    def report(directions):
        args = argparse.Namespace(jacobian_layers="last", jacobian_chunk=16,
                                  jacobian_directions=directions)  # fmt: skip
        return jacobian_report(model, hidden_fn, 1, base, args)

    exact, estimate = report(None), report(8)
    assert exact["exact"] and exact["directions"] == 32
    assert not estimate["exact"] and estimate["directions"] == 8
    assert "--jacobian-directions all" in estimate["method"]
    want, got = np.asarray(exact["sensitivity_NxT"]), np.asarray(estimate["sensitivity_NxT"])
    assert got.shape == want.shape == (1, 21) and (got > 0).all()
    assert 0.7 < np.median(got / want) < 1.4 and not np.allclose(got, want)
    assert estimate["path_bound_T"] == exact["path_bound_T"]
