"""The report pages (`--html`): the numbers in a page equal the files it is drawn from, maps
survive their encoding, and (second CI stage) the page works in headless Chromium."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from sinks_jax import html
from sinks_jax.html import maps as page_maps
from sinks_jax.html.page import MAX_PAGE_BYTES

L, H, N, T, W = 3, 4, 24, 10, 2
EPS = ("0.3", "0.8")


def causal_maps(rng, *lead):
    """Random row-stochastic causal maps `[*lead, T, T]`."""
    logits = rng.normal(size=(*lead, T, T))
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def fake_analyze_report(directory, seed=0):
    """report.json + attention_maps.npz in analyze's format; numbers from numpy float64."""
    rng = np.random.default_rng(seed)
    head_bias = rng.uniform(0, 1, size=(L, 1, H))
    scores = np.clip(head_bias + rng.normal(0, 0.25, size=(L, N, H)), 0, 1)
    sinks, arrays = {}, {}
    for layout, shift in (("with_bos", 0.0), ("text_only", -0.2)):
        s = np.clip(scores + shift, 0, 1)
        labels = [["<bos>" if layout == "with_bos" and j == 0 else f"t{w}_{j}<&>"
                   for j in range(T)] for w in range(W)]  # fmt: skip
        arrays[f"{layout}_WxLxHxTxT"] = causal_maps(rng, W, L, H).astype(np.float16)
        sinks[layout] = {
            "num_sequences": N,
            "sink_rate_percent": {e: 100 * float((s > float(e)).mean()) for e in EPS},
            "sink_rate_per_layer_percent": {
                e: (100 * (s > float(e)).mean(axis=(1, 2))).tolist() for e in EPS
            },
            "sink_rate_per_head_percent": {
                e: (100 * (s > float(e)).mean(axis=1)).tolist() for e in EPS
            },
            "sink_score_mean_LxH": s.mean(axis=1).tolist(),
            "sink_score_per_sequence_LxNxH": s.tolist(),
            "attention_maps": {
                "file": "attention_maps.npz",
                "key": f"{layout}_WxLxHxTxT",
                "windows": [0, 3],
                "num_tokens": T,
                "seq_len": T,
                "crop": "none",
                "compute": "attention=xla, dtype=float32; stored as float16",
                "token_labels_WxT": labels,
            },
        }
    report = {
        "settings": {"model": "hf:/models/fake/fake-model.gguf", "seq_len": T, "eps": [0.3, 0.8]},
        "sinks": sinks,
    }
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "report.json")
    with open(path, "w") as f:
        json.dump(report, f)
    np.savez_compressed(os.path.join(directory, "attention_maps.npz"), **arrays)
    return path


def fake_workdir(directory, name, seed):
    """A finished training run's workdir: config.json, metrics.jsonl, sink_scores.npz."""
    rng = np.random.default_rng(seed)
    wd = os.path.join(directory, name)
    os.makedirs(wd)
    config = {"seq_len": 16 * (seed + 1), "sweep_key": "seq_len", "eval_sink_len": 8,
              "model": {"num_layers": L, "num_heads": H}}  # fmt: skip
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(config, f)
    records = []
    for step in range(5, 45, 5):
        r = {"step": step, "loss": float(5 - step / 20 + rng.normal(0, 0.05))}
        if step % 10 == 0:
            r["sink_attn"] = rng.uniform(0, 1, size=(L, H)).tolist()
            r["sink_rate_0.3"] = float(rng.uniform())
            r["sink_rate_0.8"] = float(rng.uniform())
        if step % 20 == 0:
            r["val_loss"] = float(4 - step / 40)
            for layout in ("bos", "nobos"):
                r[f"val_sink_rate_0.3_{layout}"] = float(rng.uniform())
                r[f"val_sink_rate_0.8_{layout}"] = float(rng.uniform())
                r[f"val_sink_score_{layout}"] = float(rng.uniform())
                r[f"val_sink_scores_{layout}"] = rng.uniform(0, 1, size=(L, H)).tolist()
        records.append(r)
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n")
    np.savez(
        os.path.join(wd, "sink_scores.npz"),
        scores_bos=rng.uniform(0, 1, size=(L, N, H)).astype(np.float32),
        scores_nobos=rng.uniform(0, 0.5, size=(L, N, H)).astype(np.float32),
    )
    return wd, records


def fake_stream(directory):
    records = []
    for i, (name, kind, sinks) in enumerate((("0+64", "cache", 0), ("4+60", "cache", 4),
                                              ("dense", "dense", 0))):  # fmt: skip
        tokens = [100, 200, 300]
        records.append({
            "name": name, "kind": kind, "sinks": sinks, "window": None if kind == "dense" else 64,
            "cache_size": None if kind == "dense" else 64, "group": "size 64", "mode": "fast",
            "num_tokens": 300, "num_predicted": 299, "mean_nll": 3.0 + i, "ppl": 20.0 + i,
            "ppl_low": 19.0 + i, "ppl_high": 21.0 + i,
            "after_eviction": None if kind == "dense" else {"num_predicted": 236, "mean_nll": 3.1,
                                                           "ppl": 22.2},
            "curve": {"tokens": tokens, "ppl_bin": [30.0 - i, 25.0, 21.0 + i],
                      "ppl_cumulative": [30.0 - i, 27.0, 24.0 + i]},
            "nll_key": name, "seconds": 1.5, "tokens_per_second": 200.0,
        })  # fmt: skip
    stream = {"schema": "sinks_jax.stream/1",
              "settings": {"model_name": "fake", "bin": 100, "num_tokens": 300, "bos": False,
                           "command": "sinks-jax stream --fake"},
              "records": records, "table": {"columns": ["0", "4", "dense"], "rows": []}}  # fmt: skip
    path = os.path.join(directory, "stream.json")
    with open(path, "w") as f:
        json.dump(stream, f)
    return path


def read_page(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_analyze_page_numbers_equal_the_json(tmp_path):
    src = fake_analyze_report(str(tmp_path / "a"))
    page = html.write_analyze_page([src], command="sinks-jax analyze --fake --html")
    assert page == str(tmp_path / "a" / "report.html")
    data = html.read_page_data(read_page(page))
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert data["kind"] == "analyze" and data["command"] == "sinks-jax analyze --fake --html"
    assert data["sources"] == [src, str(tmp_path / "a" / "attention_maps.npz")]
    (prof,) = data["profiles"]
    assert prof["name"] == "fake-model.gguf"
    saved = np.load(tmp_path / "a" / "attention_maps.npz")
    for layout, res in report["sinks"].items():
        lay = prof["layouts"][layout]
        np.testing.assert_array_equal(lay["head_score"], res["sink_score_mean_LxH"])
        assert lay["num_sequences"] == N
        for e in EPS:
            got = lay["eps"][e]
            assert got["rate"] * 100 == pytest.approx(res["sink_rate_percent"][e], abs=1e-12)
            np.testing.assert_allclose(
                np.asarray(got["layer_rate"]) * 100, res["sink_rate_per_layer_percent"][e],
                rtol=0, atol=1e-12)  # fmt: skip
            np.testing.assert_allclose(
                np.asarray(got["head_rate"]) * 100, res["sink_rate_per_head_percent"][e],
                rtol=0, atol=1e-12)  # fmt: skip
            # the bootstrap interval (recomputed from the per-sequence scores) brackets the rate
            for k in ("head", "layer"):
                rate = np.asarray(got[f"{k}_rate"])
                assert (np.asarray(got[f"{k}_low"]) <= rate + 1e-6).all()
                assert (np.asarray(got[f"{k}_high"]) >= rate - 1e-6).all()
            assert got["rate_low"] <= got["rate"] + 1e-6 <= got["rate_high"] + 2e-6
        # maps: lower triangles in float16, exactly the saved values
        m = prof["maps"][layout]
        rec = res["attention_maps"]
        assert (m["t"], m["L"], m["H"], m["windows"]) == (T, L, H, rec["windows"])
        assert m["labels"] == rec["token_labels_WxT"]
        for w in range(W):
            got = page_maps.decode_window(m["data"][w], L, H, T)
            np.testing.assert_array_equal(got, saved[rec["key"]][w].astype(np.float32))
    text = read_page(page)
    assert "<script src" not in text and "<link" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "</script>" not in text.split('id="sinks-data">', 1)[1].split("</script>", 1)[0]


def test_maps_are_cropped_to_fit_the_budget(tmp_path):
    rng = np.random.default_rng(1)
    maps = causal_maps(rng, 3, L, H).astype(np.float16)
    record = {"windows": [0, 1, 2], "token_labels_WxT": [[str(j) for j in range(T)]] * 3}
    one_window = page_maps.encoded_chars(L * H, T)
    page, notes = page_maps.embed_maps({"with_bos": (maps, record)}, 2 * one_window)
    assert page["with_bos"]["t"] == T and len(page["with_bos"]["data"]) == 2
    assert any("1 of 3 saved windows" in n for n in notes)
    page, notes = page_maps.embed_maps({"with_bos": (maps, record)}, one_window // 2)
    t = page["with_bos"]["t"]
    assert t < T and len(page["with_bos"]["data"]) == 1
    assert len(page["with_bos"]["labels"][0]) == t and any("cropped" in n for n in notes)
    got = page_maps.decode_window(page["with_bos"]["data"][0], L, H, t)
    np.testing.assert_array_equal(got, maps[0, :, :, :t, :t].astype(np.float32))


def test_analyze_saves_cropped_maps_equal_to_the_full_maps():
    """analyze's maps: the first t tokens of the windows without padding, equal to the same
    block of the full-length maps (causal attention makes the crop exact)."""
    from flax import nnx

    from sinks_jax.analyze.maps import attention_maps
    from sinks_jax.model import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                      d_ff=64, attention="xla")  # fmt: skip
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 64, size=(4, 12)).astype(np.int32)
    valid = np.ones((4, 12), np.float32)
    valid[0, 5:] = 0  # row 0 is padded inside the crop: skipped

    class Tok:
        def decode(self, ids):
            return f"[{ids[0]}]"

    maps, record = attention_maps(model, Tok(), tokens, valid, 2, 8, "with_bos", bos=True)
    assert record["windows"] == [1, 2] and record["num_tokens"] == 8 and maps.dtype == np.float16
    assert record["token_labels_WxT"][0] == ["<bos>"] + [f"[{t}]" for t in tokens[1, 1:8]]
    full = np.asarray(model(tokens[[1, 2]], collect=("attn_probs",))[1]["attn_probs"])
    want = np.moveaxis(full, 1, 0)[..., :8, :8].astype(np.float16)  # [W, L, H, 8, 8]
    np.testing.assert_allclose(maps.astype(np.float32), want.astype(np.float32), atol=2e-3)


def test_report_page_numbers_equal_the_json(tmp_path):
    from sinks_jax.records.runs import find_runs

    runs_dir = tmp_path / "runs"
    made = {name: fake_workdir(str(runs_dir), name, seed) for seed, name in enumerate(("A", "B"))}
    runs = find_runs(str(runs_dir))
    page = html.write_report_page(runs, str(runs_dir), command="sinks-jax report runs --html")
    data = html.read_page_data(read_page(page))
    assert data["kind"] == "report" and [r["name"] for r in data["runs"]] == ["A", "B"]
    for run, prof in zip(data["runs"], data["profiles"]):
        wd, records = made[run["name"]]
        assert run["train"]["steps"] == [r["step"] for r in records]
        assert run["train"]["loss"] == [r["loss"] for r in records]
        evals = [r for r in records if "val_loss" in r]
        assert run["evals"]["steps"] == [r["step"] for r in evals]
        for key in ("val_loss", "val_sink_rate_0.3_bos", "val_sink_rate_0.8_nobos"):
            assert run["evals"][key] == [r[key] for r in evals]
        stats = [r for r in records if "sink_attn" in r]
        assert run["step_stats"]["sink_attn"]["values"] == [r["sink_attn"] for r in stats]
        assert run["step_stats"]["val_sink_scores_nobos"]["values"] == [
            r["val_sink_scores_nobos"] for r in evals
        ]
        assert run["train_rates"]["sink_rate_0.3"]["values"] == [r["sink_rate_0.3"] for r in stats]
        # the final profile: rates of sink_scores.npz (numpy reference), as the report's table
        scores = np.load(os.path.join(wd, "sink_scores.npz"))
        for layout, key in (("with_bos", "scores_bos"), ("text_only", "scores_nobos")):
            s = scores[key].astype(np.float64)
            for e in EPS:
                got = prof["layouts"][layout]["eps"][e]
                np.testing.assert_allclose(got["head_rate"], (s > float(e)).mean(1), atol=1e-6)
                np.testing.assert_allclose(
                    got["layer_rate"], (s > float(e)).mean((1, 2)), atol=1e-6)  # fmt: skip
            np.testing.assert_allclose(prof["layouts"][layout]["head_score"], s.mean(1), atol=1e-6)
        assert os.path.join(wd, "metrics.jsonl") in data["sources"]


def test_stream_page_numbers_equal_the_json(tmp_path):
    src = fake_stream(str(tmp_path))
    data = html.read_page_data(read_page(html.write_stream_page(src)))
    stream = json.loads(read_page(src))
    assert data["command"] == "sinks-jax stream --fake" and data["sources"] == [src]
    for got, want in zip(data["stream"]["records"], stream["records"], strict=True):
        for k in ("name", "ppl", "ppl_low", "ppl_high", "curve", "after_eviction", "sinks"):
            assert got[k] == want[k]


def test_page_over_the_size_limit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="over the"):
        html.write_page({"title": "x", "profiles": []}, str(tmp_path / "p.html"), max_bytes=1000)
    assert MAX_PAGE_BYTES == 10_000_000


# ---------------------------------------------------------------- headless Chromium (stage 2)

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser_context():
    """A fresh Chromium profile driven by playwright (Debian's chromium, no download)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the `parity` extra")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 900},
        )  # fmt: skip
        yield ctx
        ctx.close()


def open_page(ctx, path):
    """(page, console errors, requests): the page opened from file:// and ready."""
    page = ctx.new_page()
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = "file://" + os.path.abspath(path)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.wait_for_timeout(300)
    return page, errors, requests, url


def screenshot_dir(tmp_path):
    out = os.environ.get("SINKS_JAX_SCREENSHOTS") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    return out


def assert_stays_in_the_file(requests, url):
    left = [r for r in requests if r != url and not r.startswith(("data:", "blob:"))]
    assert not left, f"the page requested {left}"


@pytest.mark.slow
def test_analyze_page_in_chromium(browser_context, tmp_path):
    src = fake_analyze_report(str(tmp_path / "a"))
    path = html.write_analyze_page([src])
    report = json.loads(read_page(src))
    page, errors, requests, url = open_page(browser_context, path)
    # hover cell (layer 2, head 1): the hover label shows its rate and mean alpha_0
    layer, head = 2, 1
    box = page.locator("#grid .nsewdrag").first.bounding_box()
    x = box["x"] + (head + 0.5) / H * box["width"]
    y = box["y"] + box["height"] - (layer + 0.5) / L * box["height"]
    page.mouse.move(x, y)
    page.wait_for_selector("#grid .hoverlayer .hovertext", timeout=5000)
    label = page.locator("#grid .hoverlayer .hovertext").first.text_content()
    res = report["sinks"]["with_bos"]
    rate = res["sink_rate_per_head_percent"]["0.3"][layer][head]
    assert f"layer {layer}, head {head}" in label
    assert f"sink rate {rate:.1f} %" in label
    assert f"mean α0 {res['sink_score_mean_LxH'][layer][head]:.3f}" in label
    assert "95 % interval" in label
    # click it: the map of that head, one label per token on the key axis and in the strip
    page.mouse.click(x, y)
    page.wait_for_function(
        f"document.getElementById('map-title').textContent.includes('layer {layer}, head {head}')"
    )
    labels = res["attention_maps"]["token_labels_WxT"][0]
    assert page.locator("#token-strip .tok").count() == T
    assert page.locator("#token-strip .tok").all_text_contents() == labels
    assert page.locator("#map .xaxislayer-above .xtick text").all_text_contents() == labels
    assert page.locator("#map .yaxislayer-above .ytick text").count() == T
    # the other layout and eps redraw without errors
    page.locator("#layout-group input[value=text_only]").check()
    page.locator("#eps-group input[value='0.8']").check()
    page.wait_for_timeout(200)
    assert page.locator(".modebar-btn[data-title^='Share']").count() == 0  # no cloud upload
    shot = os.path.join(screenshot_dir(tmp_path), "report_analyze.png")
    page.screenshot(path=shot, full_page=True)
    assert os.path.getsize(shot) > 10_000
    assert not errors, errors
    assert_stays_in_the_file(requests, url)


@pytest.mark.slow
def test_report_and_stream_pages_in_chromium(browser_context, tmp_path):
    from sinks_jax.records.runs import find_runs

    runs_dir = tmp_path / "runs"
    for seed, name in enumerate(("A", "B")):
        fake_workdir(str(runs_dir), name, seed)
    run_page = html.write_report_page(find_runs(str(runs_dir)), str(runs_dir))
    page, errors, requests, url = open_page(browser_context, run_page)
    assert page.locator("#view-training").is_visible()
    page.locator("#stat-step").fill("0")
    page.wait_for_function(
        "document.getElementById('stat-step-label').textContent.startsWith('step 10 ')"
    )
    page.locator("#run-checks input").first.uncheck()
    page.screenshot(path=os.path.join(screenshot_dir(tmp_path), "report_runs.png"), full_page=True)
    assert not errors, errors
    assert_stays_in_the_file(requests, url)

    stream_page = html.write_stream_page(fake_stream(str(tmp_path)))
    page, errors, requests, url = open_page(browser_context, stream_page)
    assert page.locator("#stream .scatterlayer .trace").count() == 3
    assert page.locator("#stream-table tr").count() == 4
    page.screenshot(path=os.path.join(screenshot_dir(tmp_path), "report_stream.png"))
    assert not errors, errors
    assert_stays_in_the_file(requests, url)


@pytest.mark.slow
def test_analyze_html_flag_end_to_end_in_chromium(browser_context, tmp_path):
    """`sinks-jax analyze --init-tiny --html` writes a page that opens cleanly."""
    out = tmp_path / "tiny"
    cmd = [sys.executable, "-m", "sinks_jax.cli", "analyze", "--init-tiny", "--seq-len", "12",
           "--num-prompts", "3", "--batch-size", "3", "--spread-len", "16", "--swap", "@4",
           "--skip-jacobian",
           "--maps", "1", "--out", str(out), "--html"]  # fmt: skip
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    data = html.read_page_data(read_page(out / "report.html"))
    assert data["command"].startswith("sinks-jax analyze --init-tiny")
    page, errors, requests, url = open_page(browser_context, out / "report.html")
    assert page.locator("#token-strip .tok").count() == 12
    assert not errors, errors
    assert_stays_in_the_file(requests, url)


@pytest.mark.slow
def test_stream_html_flag_end_to_end_in_chromium(browser_context, tmp_path):
    """`sinks-jax stream --init-tiny --html`: a page with one curve per cache configuration."""
    out = tmp_path / "stream"
    cmd = [sys.executable, "-m", "sinks_jax.cli", "stream", "--init-tiny", "--max-tokens", "160",
           "--window", "32", "--sinks", "0", "4", "--dense", "--bin", "40", "--out", str(out),
           "--html"]  # fmt: skip
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    data = html.read_page_data(read_page(out / "report.html"))
    stream = json.loads(read_page(out / "stream.json"))
    assert [r["ppl"] for r in data["stream"]["records"]] == [r["ppl"] for r in stream["records"]]
    page, errors, requests, url = open_page(browser_context, out / "report.html")
    assert page.locator("#stream .scatterlayer .trace").count() == len(stream["records"]) == 3
    assert not errors, errors
    assert_stays_in_the_file(requests, url)
