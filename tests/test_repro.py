"""configs/repro.py: the protocol's runs build as described; a tiny run ends with the sink
profile in summary.json, and `sinks-jax report` shows its intervals."""

import importlib.util
import json
import os

import numpy as np
import pytest

from sinks_jax import analysis
from sinks_jax.train import loop, report
from sinks_jax.train.main import load_config
from sinks_jax.train.validate import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "sinks_jax", "configs", "repro.py")


def family():
    spec = importlib.util.spec_from_file_location("repro", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def configs(experiment, size="h200"):
    runs = family().variants(f"experiment={experiment},size={size}")
    return {name: load_config(f"{PATH}:{arg}") for name, arg in runs.items()}


def test_context_runs_share_tokens_per_step_and_tokens_seen():
    runs = configs("context")
    assert list(runs) == ["T128_s0", "T512_s0", "T2048_s0", "T128_s1", "T2048_s1"]
    assert [(c.seq_len, c.seed) for c in runs.values()] == [
        (128, 0), (512, 0), (2048, 0), (128, 1), (2048, 1)]
    assert {(c.tokens_per_step, c.num_steps) for c in runs.values()} == {(2**17, 1200)}
    for c in runs.values():
        assert c.micro_batch_size * c.seq_len == 2**17  # one micro-batch per step.
        m = c.model
        assert (m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.vocab_size) == (
            12, 512, 8, 1, 16384)
        assert (c.optim.lr, c.optim.weight_decay) == (2e-3, 0.1)
        assert (c.data.packing, c.data.intra_doc, c.sweep_key) == ("concat_bos", False, "seq_len")
        assert c.eval_sink_sequences >= 256 and c.eval_sink_windows
        validate_config(c, platform="gpu")  # the H200 runs: cuDNN and Pallas are allowed.


def test_depth_and_packing_runs():
    depth = configs("depth")
    assert {n: (c.model.num_layers, c.seq_len) for n, c in depth.items()} == {
        "L4": (4, 2048), "L12": (12, 2048), "L24": (24, 2048)}
    assert len({c.tokens_per_step * c.num_steps for c in depth.values()}) == 1
    packing = configs("packing")
    cells = {n: (c.data.packing, c.data.intra_doc, c.model.global_first_key, c.model.attention)
             for n, c in packing.items()}
    assert cells == {
        "causal_bos": ("concat_bos", False, False, "cudnn"),
        "causal_fixed_bos": ("fixed_bos", False, False, "cudnn"),
        "intra_eos": ("concat", True, False, "pallas"),
        "intra_bos": ("concat_bos", True, False, "pallas"),
        "intra_fixed_bos": ("fixed_bos", True, True, "pallas"),
    }
    for c in packing.values():
        validate_config(c, platform="gpu")
    with pytest.raises(ValueError, match="use key=value"):
        family().get_config("experiment=context,T=512")
    with pytest.raises(ValueError, match="choose context, depth, packing, strong or"):
        family().get_config("experiment=width")


def test_variants_runs():
    runs = configs("variants")
    assert {n: (c.model.attention_variant, c.model.attention, c.seq_len) for n, c in runs.items()} == {
        "V_softmax": ("softmax", "cudnn", 2048),
        "V_sink_logit": ("sink_logit", "cudnn", 2048),
        "V_softmax_plus_one": ("softmax_plus_one", "cudnn", 2048),
        "V_gated": ("gated", "cudnn", 2048),
        "V_kv_bias": ("kv_bias", "cudnn", 2048),
        "V_sigmoid": ("sigmoid", "pallas", 2048),  # no sigmoid path in cuDNN: its own kernels.
    }
    assert {c.sweep_key for c in runs.values()} == {"model.attention_variant"}
    assert len({c.tokens_per_step * c.num_steps for c in runs.values()}) == 1
    for c in runs.values():
        validate_config(c, platform="gpu")
    with pytest.raises(ValueError, match="variant='nope': choose one of"):
        family().get_config("experiment=variants,variant=nope")


def test_strong_runs_are_the_fixed_bos_cell_at_two_contexts():
    runs = configs("strong")
    assert {n: (c.seq_len, c.seed) for n, c in runs.items()} == {
        "T2048_s0": (2048, 0), "T2048_s1": (2048, 1), "T128_s0": (128, 0), "T128_s1": (128, 1),
        "T2048_s2": (2048, 2), "T128_s2": (128, 2)}
    for c in runs.values():
        assert (c.data.packing, c.data.intra_doc, c.model.attention, c.sweep_key) == (
            "fixed_bos", False, "cudnn", "seq_len")
        assert (c.tokens_per_step, c.num_steps) == (2**17, 1200)
        assert c.micro_batch_size * c.seq_len == 2**17
        validate_config(c, platform="gpu")
    # T2048_s0 is packing's causal_fixed_bos (committed in results/packing): the same run but
    # for the report's sweep key.
    same = configs("packing")["causal_fixed_bos"].to_dict()
    strong = runs["T2048_s0"].to_dict()
    assert {k for k in same if same[k] != strong[k]} == {"sweep_key"}
    tiny = family().get_config("experiment=strong,size=tiny,seq_len=128")
    assert (tiny.data.packing, tiny.seq_len) == ("fixed_bos", 32)
    assert family().parse("experiment=strong,packing=causal_bos")["packing"] == "causal_bos"


@pytest.mark.slow  # end to end: in the second CI stage
def test_tiny_run_writes_sink_profile_and_report(tmp_path):
    workdir = str(tmp_path / "T128_s0")
    config = load_config(f"{PATH}:experiment=context,size=tiny,seq_len=128",
                         ["--config.num_steps=2", "--config.eval_every=2",
                          "--config.sink_stats_every=0"])
    summary = loop.train(config, workdir)
    assert summary["status"] == "finished"
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    prof = on_disk["sink_profile"]["bos"]["0.3"]
    # The profile's rate is the final evaluation's rate (the same held-out sequences).
    assert prof["rate"] == pytest.approx(on_disk["val_sink_rate_0.3_bos"], abs=1e-6)
    assert prof["rate_low"] <= prof["rate"] <= prof["rate_high"]
    assert prof["num_sequences"] == config.eval_sink_sequences
    with np.load(os.path.join(workdir, "sink_scores.npz")) as f:
        scores = f["scores_nobos"]
        doc_ids, loss_nobos = f["doc_ids"], f["loss_nobos"]
    # each window's document and loss are kept; the intervals resample those documents
    assert doc_ids.shape == loss_nobos.shape == (config.eval_sink_sequences,)
    assert prof["num_documents"] == len(np.unique(doc_ids))
    assert on_disk["window_loss"]["nobos"][0] == pytest.approx(on_disk["val_loss_nobos"], rel=1e-5)
    assert on_disk["window_loss"]["documents"] == len(np.unique(doc_ids))
    L, H = config.model.num_layers, config.model.num_heads
    assert scores.shape == (L, config.eval_sink_sequences, H)
    nobos = on_disk["sink_profile"]["nobos"]["0.8"]
    assert nobos["rate"] == pytest.approx(float(analysis.sink_rate(scores, 0.8)), abs=1e-6)
    assert np.array(nobos["head_rate"]).shape == (L, H)
    text, paths = report.write_report(str(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| T128_s0"))
    rate, low, high = (100 * prof[k] for k in ("rate", "rate_low", "rate_high"))
    assert f"{rate:.1f} [{low:.1f}, {high:.1f}]" in row
    assert {os.path.basename(p) for p in paths} >= {"sink_profile.png", "sink_rate_vs_seq_len.png"}
    spread = on_disk["perturbation_spread"]
    assert spread["position"] == config.eval_sink_len // 2
    for name in ("bos", "nobos"):
        assert len(spread[name]["layer"]) == L + 1 and spread[name]["layer"][0] == 0.0
        assert spread[name]["last_low"] <= spread[name]["last"] <= spread[name]["last_high"]


def test_sink_sequences_are_windows_of_held_out_documents(tmp_path):
    from sinks_jax.train.data import DataPipeline

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "sink", "token"]
    docs = {"valid": [" ".join(rng.choice(words, 40)) for _ in range(3)],
            "shard": [" ".join(rng.choice(words, 40)).upper() for _ in range(3)]}
    for name, texts in docs.items():
        with open(tmp_path / f"{name}-000.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    config = load_config(f"{PATH}:{family().TINY_ARG}", [
        f"--config.data.source=text:{tmp_path}/*.jsonl?valid={tmp_path}/valid-*.jsonl"])
    data = DataPipeline(config, micro_batch=4, accumulation=1)
    held_out, train = docs["valid"], docs["shard"]
    sets = data.sink_eval_sequences(24, 16)  # 24 of the ~40 windows of 16 bytes.
    text = lambda row: bytes(row.astype(np.uint8)).decode()  # noqa: E731
    assert sets["nobos"].shape == sets["bos"].shape == (24, 16)
    assert all(any(text(r) in d for d in held_out) for r in sets["nobos"])
    assert not any(any(text(r) in d for d in train) for r in sets["nobos"])
    assert len({text(r) for r in sets["nobos"]}) == 24  # distinct windows
    # each window's document id names the held-out document it lies in
    assert sets["doc_ids"].shape == (24,)
    assert all(text(r) in held_out[d] for r, d in zip(sets["nobos"], sets["doc_ids"]))
    assert set(sets["doc_ids"].tolist()) == {0, 1, 2}
    assert sum(any(d.startswith(text(r)) for d in held_out) for r in sets["nobos"]) < 24
    np.testing.assert_array_equal(sets["bos"][:, 0], 256)
    np.testing.assert_array_equal(sets["bos"][:, 1:], sets["nobos"][:, :-1])
    config.eval_sink_windows = False  # the literature's form: first tokens of each document
    starts = DataPipeline(config, micro_batch=4, accumulation=1).sink_eval_sequences(24, 16)
    assert sorted(text(r) for r in starts["nobos"]) == sorted(d[:16] for d in held_out)
    assert all(held_out[d].startswith(text(r)) for r, d in zip(starts["nobos"], starts["doc_ids"]))
