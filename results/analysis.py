"""Every derived number of REPRODUCTION.md and docs/real_models.md, from the files under
results/ only.

    python results/analysis.py    # prints the numbers (results/analysis.txt) and draws
                                  # results/{context,depth}/sink_rate_vs_tokens.png,
                                  # results/depth/sink_rate_vs_layers.png,
                                  # results/variants_gutenberg/perturbation_spread.png and,
                                  # when its runs exist, results/strong/sink_rate_vs_context.png

Per-window sink rate: for each of the 256 held-out windows, the fraction of (layer, head)
pairs with alpha_0 > eps (sink_scores.npz, scores_{bos,nobos} [L, windows, H]); a run's
rate is their mean.

Intervals (95 %, `sinks_jax.analysis.bootstrap`):
- **over documents** for one run, or for a paired difference between runs scored on the same
  windows: the cluster bootstrap, resampling the held-out documents the windows were cut
  from. The documents of the committed windows are in `window_documents.json` (rebuilt by
  `window_documents.py`; runs made since keep them in their sink_scores.npz);
- **over seeds, then documents** for a comparison between configurations (the claims): each
  configuration's runs are resampled (seed deviations scaled by sqrt(S / (S - 1))), then the
  documents, one draw shared by every run; a configuration with one run takes the pooled
  seed standard deviation of its family (normal shift).

The rule, for every claim (a quantity Q that the paper predicts to be positive): reproduced
if Q's interval lies above 0, not reproduced if it lies below 0, unresolved if it contains 0
or if no seed spread has been measured for Q's kind (no configuration of it has two runs).
"""

from __future__ import annotations

import json
import os
import sys
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from sinks_jax.analysis import bootstrap as bs  # noqa: E402

TOKENS_PER_STEP = 2**17
RESAMPLES = 10_000
CONTEXT = ("T128_s0", "T128_s1", "T512_s0", "T2048_s0", "T2048_s1")
DEPTH = ("L4", "L12", "L24")
SEQ_LEN = {"T128_s0": 128, "T128_s1": 128, "T512_s0": 512, "T2048_s0": 2048, "T2048_s1": 2048}
LAYERS = {"L4": 4, "L12": 12, "L24": 24}  # L12 is a copy of context/T2048_s0.
VARIANTS = ("V_sink_logit", "V_softmax_plus_one", "V_gated", "V_kv_bias")
GUTENBERG = ("V_softmax", "V_sink_logit", "V_sigmoid")  # variants_gutenberg: Gutenberg only.
PACKING = ("causal_bos", "causal_fixed_bos", "intra_eos", "intra_bos", "intra_fixed_bos")
STRONG = tuple(f"T{t}_s{s}" for t in (128, 512, 2048) for s in range(3))  # those that exist.
MANIFEST = {"main": "context/prepared_manifest.json",
            "gutenberg": "variants_gutenberg/prepared_manifest.json"}  # fmt: skip


def run_dir(exp, name):
    if exp == "strong" and name == "T2048_s0" and not os.path.isdir(os.path.join(HERE, exp, name)):
        return os.path.join(HERE, "packing", "causal_fixed_bos")  # the same configuration
    return os.path.join(HERE, exp, name)


def exists(exp, name):
    return os.path.isfile(os.path.join(run_dir(exp, name), "summary.json"))


def strong_runs():
    return [n for n in STRONG if exists("strong", n)]


def corpus(exp):
    return "gutenberg" if exp == "variants_gutenberg" else "main"


WINDOW_DOCS = json.load(open(os.path.join(HERE, "window_documents.json")))


def docs(exp):
    """The held-out document of each window of the experiment's runs."""
    return np.asarray(WINDOW_DOCS[corpus(exp)]["doc_ids"])


def npz(exp, name):
    return np.load(os.path.join(run_dir(exp, name), "sink_scores.npz"))


def per_window(exp, name, eps=0.3, form="bos"):
    """[windows] fraction of (layer, head) pairs with alpha_0 > eps on each window."""
    if form == "bos-nobos":
        return per_window(exp, name, eps, "bos") - per_window(exp, name, eps, "nobos")
    s_LxWxH = npz(exp, name)[f"scores_{form}"]
    return (s_LxWxH > eps).mean(axis=(0, 2))


def rng_for(label):
    """A generator seeded by the label: each number is the same whatever else is computed."""
    return np.random.default_rng(zlib.crc32(label.encode()))


def doc_ci(x_N, exp, label):
    """(mean, low, high) of a per-window statistic, 95 % bootstrap over documents."""
    m, lo, hi = bs.cluster_interval(x_N, docs(exp), rng_for(label), RESAMPLES)
    return float(m), float(lo), float(hi)


def win_ci(x_N, label):
    """The same over windows (what the first record reported)."""
    m, lo, hi = bs.cluster_interval(x_N, None, rng_for(label), RESAMPLES)
    return float(m), float(lo), float(hi)


def pct(t, sign=True):
    f = "+.2f" if sign else ".2f"
    return f"{100 * t[0]:{f}} [{100 * t[1]:{f}}, {100 * t[2]:{f}}]"


def metrics(exp, name):
    path = os.path.join(run_dir(exp, name), "metrics.jsonl")
    return [json.loads(x) for x in open(path) if x.strip()]


def summary(exp, name):
    return json.load(open(os.path.join(run_dir(exp, name), "summary.json")))


def config(exp, name):
    return json.load(open(os.path.join(run_dir(exp, name), "config.json")))


def where_sinks(exp, name):
    """(layers with rate >= 1 %, heads with rate >= 10 %, as text; the per-head rates), eps 0.3
    with <bos>, from the run's summary.json."""
    q = summary(exp, name)["sink_profile"]["bos"]["0.3"]
    lr, hr = np.array(q["layer_rate"]), np.array(q["head_rate"])
    layers = ", ".join(f"L{i + 1} {100 * r:.1f}" for i, r in enumerate(lr) if r >= 0.01)
    heads = ", ".join(
        f"L{i + 1}H{j + 1} {100 * hr[i, j]:.0f}" for i, j in zip(*np.nonzero(hr >= 0.10))
    )
    return layers, heads, hr


# ------------------------------------------------------------------ seeds and claims

# Configurations with more than one run (the same configuration trained again): the seed
# spread. packing/causal_bos is context/T2048_s0's configuration and seed, trained twice
# (GPU non-determinism); it counts as a third run of that configuration.
REPLICATES = {
    "weak": {"T2048 concat_bos": [("context", "T2048_s0"), ("packing", "causal_bos"),
                                  ("context", "T2048_s1")],
             "T128 concat_bos": [("context", "T128_s0"), ("context", "T128_s1")]},
}  # fmt: skip


def strong_groups():
    """The strong experiment's configurations (causal, fixed <bos>) and their runs."""
    out = {}
    for t in (128, 512, 2048):
        runs = [("strong", f"T{t}_s{s}") for s in range(3) if exists("strong", f"T{t}_s{s}")]
        if runs:
            out[f"T{t} fixed_bos"] = runs
    return out


def replicate_groups():
    return {"weak": REPLICATES["weak"], "strong": strong_groups()}


def seed_sd(family, kind, eps=0.3):
    """(pooled seed sd of the run-level statistic, degrees of freedom) in a family; `kind` is
    a per-window form ("bos", "nobos", "bos-nobos") or "loss_gap" (text-only minus <bos>
    loss, from summary.json)."""
    groups = []
    for runs in replicate_groups()[family].values():
        vals = [run_value(e, n, kind, eps) for e, n in runs]
        vals = [v for v in vals if v is not None]
        groups.append(vals)
    return bs.pooled_seed_sd(groups)


def run_value(exp, name, kind, eps=0.3):
    if kind == "loss_gap":
        s = summary(exp, name)
        if "val_loss_nobos" not in s:
            return None
        return s["val_loss_nobos"] - s["val_loss_bos"]
    return float(per_window(exp, name, eps, kind).mean())


def family_sd(family, kind, eps=0.3):
    """The seed sd a one-run configuration of `family` takes: its family's, else the largest
    measured in any family (None if none is)."""
    sd, _ = seed_sd(family, kind, eps)
    if sd is not None:
        return sd, family
    others = [(seed_sd(f, kind, eps)[0], f) for f in replicate_groups() if f != family]
    others = [o for o in others if o[0] is not None]
    return max(others) if others else (None, None)


def claim(label, a_runs, b_runs, kind, fam_a, fam_b=None, eps=0.3):
    """Q = mean over A's runs - mean over B's runs (B may be empty: Q = A's value), in the
    per-window statistic `kind`; the seed-aware interval, the verdict and the smallest
    difference the design could detect (80 % power, 5 % two-sided)."""
    fam_b = fam_b or fam_a
    exp0 = a_runs[0][0]
    groups, sds, fams = [], [], []
    for runs, fam in ((a_runs, fam_a), (b_runs, fam_b)):
        if not runs:
            continue
        if kind == "loss_gap":
            groups.append(np.array([[run_value(e, n, kind)] for e, n in runs]))
        else:
            groups.append(np.stack([per_window(e, n, eps, kind) for e, n in runs]))
        sd, used = family_sd(fam, kind, eps)
        sds.append(sd if len(runs) == 1 else None)
        fams.append((fam, used, sd))
    clusters = None if kind == "loss_gap" else docs(exp0)
    out = bs.hierarchical_resamples(groups, clusters, rng_for(label), RESAMPLES,
                                    single_seed_sd=sds)  # fmt: skip
    q = out[0] - (out[1] if len(out) > 1 else 0.0)
    point = groups[0].mean() - (groups[1].mean() if len(groups) > 1 else 0.0)
    low, high = np.percentile(q, [2.5, 97.5])
    no_sd = any(sd is None for _, _, sd in fams)
    verdict = "unresolved" if no_sd else bs.verdict(low, high)
    # document-only standard error of the paired difference of seed means
    if clusters is None:
        doc_se = 0.0
    else:
        diff_N = groups[0].mean(0) - (groups[1].mean(0) if len(groups) > 1 else 0.0)
        w = bs.np_resample_weights(rng_for(label + "/doc"), 4000, clusters)
        doc_se = float(bs.np_weighted_means(diff_N, w).std())
    n_a, n_b = len(a_runs), len(b_runs)
    if no_sd:
        mdd = mdd3 = None
    else:
        sd_a, sd_b = fams[0][2], fams[-1][2] if len(fams) > 1 else 0.0
        mdd = bs.detectable_difference(sd_a, n_a, n_b, doc_se, seed_sd_b=sd_b)
        mdd3 = bs.detectable_difference(sd_a, 3, 3 if n_b else 0, doc_se, seed_sd_b=sd_b)
    return {"label": label, "point": point, "low": low, "high": high, "verdict": verdict,
            "runs": (n_a, n_b), "mdd": mdd, "mdd3": mdd3, "doc_se": doc_se,
            "sds": [(f, u, sd) for f, u, sd in fams], "kind": kind}  # fmt: skip


def claim_line(c, scale=100, unit="pts"):
    mdd = "-" if c["mdd"] is None else f"{scale * c['mdd']:.2f}"
    mdd3 = "-" if c["mdd3"] is None else f"{scale * c['mdd3']:.2f}"
    sds = "; ".join(
        f"{f}: {'none' if sd is None else f'{scale * sd:.2f}'}" + (f" (from {u})" if u and u != f else "")
        for f, u, sd in c["sds"]
    )
    return (f"{c['label']}: {scale * c['point']:+.2f} [{scale * c['low']:+.2f}, "
            f"{scale * c['high']:+.2f}] {unit} | runs {c['runs'][0]} vs {c['runs'][1]} | "
            f"seed sd {sds} | doc se {scale * c['doc_se']:.2f} | detectable {mdd} "
            f"(3 vs 3 seeds: {mdd3}) | {c['verdict'].upper()}")  # fmt: skip


# ------------------------------------------------------------------------------ main


def main():
    out = []
    p = out.append
    runs = [("context", n) for n in CONTEXT] + [("depth", n) for n in ("L4", "L24")]

    p("## held-out windows and their documents (window_documents.json)")
    for name, e in WINDOW_DOCS.items():
        per_doc = np.array(e["windows_per_document"])
        p(f"{name}: {len(e['doc_ids'])} windows from {e['documents_with_windows']} of "
          f"{e['documents']} held-out documents (windows per document: max {per_doc.max()}, "
          f"{(per_doc > 0).sum()} documents with any); held-out tokens {e['heldout_tokens']} = "
          f"manifest {e['manifest_tokens']}; perturbation rows {e['perturbation_rows']}")  # fmt: skip
    for exp, names in (("strong", strong_runs()),):
        for n in names:
            f = npz(exp, n)
            if "doc_ids" in f.files:
                same = np.array_equal(f["doc_ids"], docs(exp))
                p(f"{exp}/{n}: sink_scores.npz keeps doc_ids; equal to the rebuilt ones: {same}")

    p("\n## passes over the training tokens (tokens seen / training tokens of the manifest)")
    for exp in ("context", "depth", "packing", "variants", "variants_gutenberg", "strong"):
        man = os.path.join(HERE, MANIFEST[corpus(exp)])
        train_tokens = json.load(open(man))["splits"]["train"]["tokens"]
        names = sorted(n for n in os.listdir(os.path.join(HERE, exp))
                       if os.path.isfile(os.path.join(HERE, exp, n, "config.json"))) \
            if os.path.isdir(os.path.join(HERE, exp)) else []  # fmt: skip
        for n in names:
            c = config(exp, n)
            seen = c["tokens_per_step"] * c["num_steps"]
            p(f"{exp}/{n}: {seen / 1e6:.1f}M tokens seen / {train_tokens / 1e6:.1f}M training "
              f"tokens = {seen / train_tokens:.2f} passes")

    p("\n## final evaluation: rates (%, eps 0.3 and 0.8) with 95 % intervals over windows "
      "(summary.json) and over documents (recomputed)")
    p("depth/L12: a copy of context/T2048_s0 (the same run)")
    for exp, name in runs:
        s = summary(exp, name)
        sp = s["sink_profile"]
        line = f"{exp}/{name}: val {s['val_loss']:.3f}"
        for form in ("bos", "nobos"):
            for eps in ("0.3", "0.8"):
                q = sp[form][eps]
                d = doc_ci(per_window(exp, name, float(eps), form), exp, f"{exp}/{name}/{form}/{eps}")
                line += (f" | {form} eps{eps} {100 * q['rate']:.2f} windows [{100 * q['rate_low']:.2f},"
                         f" {100 * q['rate_high']:.2f}] documents {pct(d, False)}")  # fmt: skip
            alpha_N = npz(exp, name)[f"scores_{form}"].mean(axis=(0, 2))
            a = doc_ci(alpha_N, exp, f"{exp}/{name}/{form}/alpha")
            line += (f" | {form} alpha0 {q['score']:.4f} documents [{a[1]:.4f}, {a[2]:.4f}] "
                     f"max-head {q['max_head_score']:.3f}")
        p(line)

    p("\n## where the sinks are (eps 0.3, <bos>): layers with rate >= 1 %, heads with rate >= 10 %")
    for exp, name in runs:
        layers, heads, hr = where_sinks(exp, name)
        p(f"{name}: layers [{layers}]; heads [{heads}]; heads ever >= 1 %: {(hr >= 0.01).sum()}"
          f" of {hr.size}")

    p(f"\n## paired differences of single runs, eps 0.3, points, 95 % bootstrap over documents "
      f"({RESAMPLES}); no seed term (see the claims below for that)")
    c = lambda n, f="bos": per_window("context", n, 0.3, f)  # noqa: E731
    d = lambda n, f="bos": per_window("depth", n, 0.3, f)  # noqa: E731
    pairs = {
        "seed spread T128 (s0 - s1)": lambda f: c("T128_s0", f) - c("T128_s1", f),
        "seed spread T2048 (s0 - s1)": lambda f: c("T2048_s0", f) - c("T2048_s1", f),
        "T2048_s0 - T128_s0": lambda f: c("T2048_s0", f) - c("T128_s0", f),
        "T2048_s1 - T128_s1": lambda f: c("T2048_s1", f) - c("T128_s1", f),
        "T2048 - T128, seed means": lambda f: (c("T2048_s0", f) + c("T2048_s1", f)
                                               - c("T128_s0", f) - c("T128_s1", f)) / 2,
        "T512_s0 - T128, seed mean": lambda f: c("T512_s0", f) - (c("T128_s0", f) + c("T128_s1", f)) / 2,
        "T512_s0 - T2048, seed mean": lambda f: c("T512_s0", f) - (c("T2048_s0", f) + c("T2048_s1", f)) / 2,
        "L24 - L4": lambda f: d("L24", f) - d("L4", f),
        "L24 - L12 seed mean": lambda f: d("L24", f) - (c("T2048_s0", f) + c("T2048_s1", f)) / 2,
        "L4 - L12 seed mean": lambda f: d("L4", f) - (c("T2048_s0", f) + c("T2048_s1", f)) / 2,
        "L12 s1 (T2048_s1) - L4": lambda f: c("T2048_s1", f) - d("L4", f),
    }  # fmt: skip
    for label, fn in pairs.items():
        for form in ("bos", "nobos"):
            x = fn(form)
            p(f"{'<bos>  ' if form == 'bos' else 'no<bos>'} {label}: documents "
              f"{pct(doc_ci(x, 'context', label + form))} | windows {pct(win_ci(x, label + form))}")

    packing(p)
    variants(p)
    variants_gutenberg(p)
    strong(p)
    claims(p)
    text_claims(p)
    real_models(p)

    p("\n## during training: held-out rate eps 0.3 <bos> / text-only (%), and the in-step"
      " statistic at the training context (rate eps 0.3 %, largest head's mean attention to key 0)")
    for exp, name in runs + [("strong", n) for n in strong_runs()]:
        ms = metrics(exp, name)
        name = f"strong/{name}" if exp == "strong" else name
        ev = [(m["step"], 100 * m["val_sink_rate_0.3_bos"], 100 * m["val_sink_rate_0.3_nobos"],
               m["val_sink_score_bos"], m["val_loss"]) for m in ms if "val_loss" in m]  # fmt: skip
        st = [(m["step"], 100 * m["sink_rate_0.3"], float(np.max(m["sink_attn"])))
              for m in ms if "sink_rate_0.3" in m]  # fmt: skip
        p(f"{name}: eval " + "; ".join(
            f"{s}: {a:.2f}/{b:.2f} alpha {al:.3f} loss {lo:.3f}" for s, a, b, al, lo in ev))
        p(f"{name}: in-step " + "; ".join(f"{s}: {r:.4f} {mx:.4f}" for s, r, mx in st))
    out_txt = "\n".join(out)
    print(out_txt)
    with open(os.path.join(HERE, "analysis.txt"), "w") as f:
        f.write(out_txt + "\n")
    figures()


def packing(p):
    """Table 2: the five packing cells; paired differences over the same held-out windows."""
    p("\n## packing (Table 2): final evaluation (rates %, 95 % intervals over documents)")
    for name in PACKING:
        s = summary("packing", name)
        rb = doc_ci(per_window("packing", name, 0.3, "bos"), "packing", f"packing/{name}/bos")
        rn = doc_ci(per_window("packing", name, 0.3, "nobos"), "packing", f"packing/{name}/nobos")
        p(f"{name}: val {s['val_loss']:.3f} | loss <bos>+text {s['val_loss_bos']:.3f}, text only"
          f" {s['val_loss_nobos']:.3f}, text only - <bos> {s['val_loss_nobos'] - s['val_loss_bos']:+.3f}"
          f" nats | sink eps 0.3 <bos> {pct(rb, False)}, text only {pct(rn, False)}")
    rate = {n: summary("packing", n)["val_sink_rate_0.3_bos"] for n in PACKING}
    fixed = ("causal_fixed_bos", "intra_fixed_bos")
    ratios = [f"{f} / {o} = {rate[f] / rate[o]:.1f}" for f in fixed for o in PACKING if o not in fixed]
    p("fixed-<bos> rate over the other cells' (<bos>, eps 0.3): " + "; ".join(ratios))
    for name in PACKING:
        hr = np.array(summary("packing", name)["sink_profile"]["bos"]["0.3"]["head_rate"])
        p(f"{name}: heads that are sinks on >= 10 % of windows: {(hr >= 0.10).sum()}, on all"
          f" {npz('packing', name)['scores_bos'].shape[1]} windows: {(hr >= 1.0).sum()}")
    w = {n: {f: per_window("packing", n, 0.3, f) for f in ("bos", "nobos")} for n in PACKING}
    rerun = {f: per_window("context", "T2048_s0", 0.3, f) for f in ("bos", "nobos")}
    pairs = {
        "causal_fixed_bos - causal_bos, <bos>": w["causal_fixed_bos"]["bos"] - w["causal_bos"]["bos"],
        "intra_fixed_bos - intra_bos, <bos>": w["intra_fixed_bos"]["bos"] - w["intra_bos"]["bos"],
        "intra_bos - intra_eos, <bos>": w["intra_bos"]["bos"] - w["intra_eos"]["bos"],
        "intra_bos - intra_eos, text only": w["intra_bos"]["nobos"] - w["intra_eos"]["nobos"],
        "causal_bos (packing) - T2048_s0 (context), same config, <bos>": w["causal_bos"]["bos"]
        - rerun["bos"],
        "causal_bos (packing) - T2048_s0 (context), same config, text only": w["causal_bos"]["nobos"]
        - rerun["nobos"],
    }  # fmt: skip
    pairs.update({f"{n}: <bos> - text only": w[n]["bos"] - w[n]["nobos"] for n in PACKING})
    p(f"\n## packing: paired differences, eps 0.3, points, 95 % bootstrap over documents ({RESAMPLES})")
    for label, x in pairs.items():
        p(f"{label}: {pct(doc_ci(x, 'packing', label))} (windows {pct(win_ci(x, label))})")
    p("\n## packing: the same configuration trained twice (context/T2048_s0, packing/causal_bos):"
      " training loss")
    a = {m["step"]: m["loss"] for m in metrics("context", "T2048_s0") if "loss" in m}
    b = {m["step"]: m["loss"] for m in metrics("packing", "causal_bos") if "loss" in m}
    steps = sorted(set(a) & set(b))
    diff = {s: abs(a[s] - b[s]) for s in steps}
    first = steps[0]
    p(f"step {first}: {a[first]:.5f} vs {b[first]:.5f}, |difference| {diff[first]:.1e}; largest "
      f"|difference| over the {len(steps)} logged steps {max(diff.values()):.1e} (step "
      f"{max(diff, key=diff.get)}); last step {steps[-1]}: {a[steps[-1]]:.4f} vs "
      f"{b[steps[-1]]:.4f}")
    p("\n## packing: where the sinks are (eps 0.3, <bos>): layers >= 1 %, heads >= 10 %")
    for name in PACKING:
        layers, heads, _ = where_sinks("packing", name)
        p(f"{name}: layers [{layers}]; heads [{heads}]")
    p("\n## packing: held-out eval during training, step: sink eps 0.3 <bos>/text only (%), loss")
    for name in PACKING:
        ev = [m for m in metrics("packing", name) if "val_loss" in m]
        p(f"{name}: " + "; ".join(
            f"{m['step']}: {100 * m['val_sink_rate_0.3_bos']:.1f}/"
            f"{100 * m['val_sink_rate_0.3_nobos']:.1f} loss {m['val_loss']:.3f}" for m in ev))


def variants(p):
    """Beyond the paper: attention variants against the three runs of the softmax baseline."""
    base = {"T2048_s0": ("context", "T2048_s0"), "causal_bos": ("packing", "causal_bos"),
            "T2048_s1": ("context", "T2048_s1")}  # fmt: skip
    p("\n## variants: final evaluation (rates %, intervals over documents), and the in-step noop"
      " mass at T = 2048 (last record)")
    for name in VARIANTS:
        s = summary("variants", name)
        noop = np.array([m for m in metrics("variants", name) if "noop_mass" in m][-1]["noop_mass"])
        rb = doc_ci(per_window("variants", name, 0.3, "bos"), "variants", f"variants/{name}/bos")
        rn = doc_ci(per_window("variants", name, 0.3, "nobos"), "variants", f"variants/{name}/nobos")
        layer = noop.mean(axis=1)
        p(f"{name}: val {s['val_loss']:.3f} | loss <bos> {s['val_loss_bos']:.3f} text only"
          f" {s['val_loss_nobos']:.3f} | sink eps 0.3 <bos> {pct(rb, False)} text only"
          f" {pct(rn, False)} | eps 0.8 <bos> {100 * s['val_sink_rate_0.8_bos']:.2f} text only"
          f" {100 * s['val_sink_rate_0.8_nobos']:.2f} | noop mass mean {noop.mean():.3f}, max head"
          f" {noop.max():.3f}, per layer {np.round(layer, 2).tolist()} (range {layer.min():.2f}-"
          f"{layer.max():.2f})")
    p("\n## variants - each softmax baseline run, eps 0.3, points, 95 % bootstrap over documents")
    for name in VARIANTS:
        for form in ("bos", "nobos"):
            v = per_window("variants", name, 0.3, form)
            diffs = [f"- {b}: {pct(doc_ci(v - per_window(*base[b], 0.3, form), 'variants', name + form + b))}"
                     for b in base]  # fmt: skip
            p(f"{name} {form}: " + "; ".join(diffs))


def variants_gutenberg(p):
    """softmax, sink_logit and sigmoid on the Gutenberg part of the corpus (its own tokenizer
    and held-out windows): sink rates against softmax, and the perturbation spread."""
    p("\n## variants_gutenberg: final evaluation (rates %, intervals over the 10 held-out books) "
      "and perturbation spread (last layer; intervals over windows: per-window spreads were not "
      "kept)")
    for name in GUTENBERG:
        s = summary("variants_gutenberg", name)
        ps = s["perturbation_spread"]
        spread = " ".join(f"{f} {ps[f]['last']:.4f} [{ps[f]['last_low']:.4f}, {ps[f]['last_high']:.4f}]"
                          for f in ("bos", "nobos"))  # fmt: skip
        dd = ps["last_bos_minus_nobos"]
        rb = doc_ci(per_window("variants_gutenberg", name, 0.3, "bos"), "variants_gutenberg", name + "b")
        rn = doc_ci(per_window("variants_gutenberg", name, 0.3, "nobos"), "variants_gutenberg", name + "n")
        p(f"{name}: val {s['val_loss']:.3f} | loss <bos> {s['val_loss_bos']:.3f} text only"
          f" {s['val_loss_nobos']:.3f} | sink eps 0.3 <bos> {pct(rb, False)} text only"
          f" {pct(rn, False)} | spread {spread} | <bos> - text only {dd[0]:+.4f} [{dd[1]:+.4f},"
          f" {dd[2]:+.4f}] ({ps['rows']} rows, {100 * dd[0] / ps['nobos']['last']:+.1f} % of the"
          f" text-only spread)")
    for name in GUTENBERG[1:]:
        for form in ("bos", "nobos"):
            x = per_window("variants_gutenberg", name, 0.3, form) - per_window(
                "variants_gutenberg", "V_softmax", 0.3, form)
            p(f"{name} - V_softmax {form}, eps 0.3, points: documents "
              f"{pct(doc_ci(x, 'variants_gutenberg', name + form + 'd'))}")


def strong(p):
    """Causal, fixed <bos>: the context-length claim where sinks are strong."""
    names = strong_runs()
    p("\n## strong (causal, fixed <bos> at position 0): runs present: " + ", ".join(
        f"{n}{' (= packing/causal_fixed_bos)' if n == 'T2048_s0' and run_dir('strong', n).endswith('causal_fixed_bos') else ''}"
        for n in names))  # fmt: skip
    for n in names:
        s = summary("strong", n)
        lab = os.path.relpath(run_dir("strong", n), HERE)  # T2048_s0: packing's labels, numbers
        rb = doc_ci(per_window("strong", n, 0.3, "bos"), "strong", f"{lab}/bos")
        rn = doc_ci(per_window("strong", n, 0.3, "nobos"), "strong", f"{lab}/nobos")
        r8 = doc_ci(per_window("strong", n, 0.8, "bos"), "strong", f"{lab}/bos8")
        loss = ""
        wl = s.get("window_loss")
        if wl:
            loss = (f" | loss <bos> {wl['bos'][0]:.3f} text only {wl['nobos'][0]:.3f}, text only -"
                    f" <bos> {wl['nobos_minus_bos'][0]:+.3f} [{wl['nobos_minus_bos'][1]:+.3f},"
                    f" {wl['nobos_minus_bos'][2]:+.3f}] nats (documents)")
        elif "val_loss_bos" in s:
            loss = (f" | loss <bos> {s['val_loss_bos']:.3f} text only {s['val_loss_nobos']:.3f}, "
                    f"text only - <bos> {s['val_loss_nobos'] - s['val_loss_bos']:+.3f} nats")
        p(f"{n}: T {config('strong', n)['seq_len']}, seed {config('strong', n)['seed']} | val "
          f"{s['val_loss']:.3f} (at its T) | sink eps 0.3 <bos> {pct(rb, False)} text only "
          f"{pct(rn, False)} | eps 0.8 <bos> {pct(r8, False)}{loss}")
    for label, runs in strong_groups().items():
        vals = [100 * run_value(e, n, "bos") for e, n in runs]
        p(f"{label}: <bos> rates {', '.join(f'{v:.2f}' for v in vals)} %"
          + (f"; seed sd {np.std(vals, ddof=1):.2f} points" if len(vals) > 1 else ""))


def claims(p):
    """Every claim, with the seed-aware interval and the rule's verdict."""
    ctx = lambda *n: [("context", x) for x in n]  # noqa: E731
    t2048 = REPLICATES["weak"]["T2048 concat_bos"]
    t128 = REPLICATES["weak"]["T128 concat_bos"]
    p("\n## seed spread: pooled standard deviation between runs of one configuration "
      "(points, eps 0.3; loss gap in nats)")
    for fam, groups in replicate_groups().items():
        for kind in ("bos", "nobos", "bos-nobos", "loss_gap"):
            sd, df = seed_sd(fam, kind)
            vals = "; ".join(
                f"{g}: " + ", ".join(
                    "-" if (v := run_value(e, n, kind)) is None
                    else (f"{v:+.3f}" if kind == "loss_gap" else f"{100 * v:.2f}")
                    for e, n in runs)
                for g, runs in groups.items())  # fmt: skip
            scale = 1 if kind == "loss_gap" else 100
            p(f"{fam} {kind}: sd {'none' if sd is None else f'{scale * sd:.3f}'} ({df} df) | {vals}")

    p("\n## claims: Q > 0 is the paper's prediction; 95 % interval over seeds then documents "
      f"({RESAMPLES}); rule: reproduced if above 0, not reproduced if below 0, else unresolved")
    sg = strong_groups()
    fixed2048 = sg.get("T2048 fixed_bos", [("packing", "causal_fixed_bos")])
    lines = [
        claim("C1 context <bos>: T2048 - T128", t2048, t128, "bos", "weak"),
        claim("C2 context text only: T2048 - T128", t2048, t128, "nobos", "weak"),
        claim("C3 context <bos>: T512 - T128", ctx("T512_s0"), t128, "bos", "weak"),
        claim("C4 context text only: T512 - T128", ctx("T512_s0"), t128, "nobos", "weak"),
        claim("D1 depth <bos>: L24 - L4", [("depth", "L24")], [("depth", "L4")], "bos", "weak"),
        claim("D2 depth text only: L24 - L4", [("depth", "L24")], [("depth", "L4")], "nobos", "weak"),
        claim("D3 depth <bos>: L24 - L12", [("depth", "L24")], t2048, "bos", "weak"),
        claim("D4 depth text only: L24 - L12", [("depth", "L24")], t2048, "nobos", "weak"),
        claim("D5 depth <bos>: L12 - L4", t2048, [("depth", "L4")], "bos", "weak"),
        claim("D6 depth text only: L12 - L4", t2048, [("depth", "L4")], "nobos", "weak"),
        claim("P1 packing <bos>: causal fixed - causal at doc starts", fixed2048, t2048, "bos",
              "strong", "weak"),
        claim("P2 packing <bos>: intra fixed - intra at doc starts", [("packing", "intra_fixed_bos")],
              [("packing", "intra_bos")], "bos", "strong", "weak"),
        claim("P3 packing: causal fixed, <bos> - text only", fixed2048, [], "bos-nobos", "strong"),
        claim("P4 packing: intra fixed, <bos> - text only", [("packing", "intra_fixed_bos")], [],
              "bos-nobos", "strong"),
        claim("P5 packing text only: causal at doc starts - causal fixed", t2048, fixed2048,
              "nobos", "weak", "strong"),
        claim("P6 packing text only: intra <eos> - intra fixed", [("packing", "intra_eos")],
              [("packing", "intra_fixed_bos")], "nobos", "weak", "strong"),
        claim("P7 packing text only: intra at doc starts - intra fixed", [("packing", "intra_bos")],
              [("packing", "intra_fixed_bos")], "nobos", "weak", "strong"),
    ]  # fmt: skip
    for c in lines:
        p(claim_line(c))
    p("loss (nats; run level: only the runs made since keep per-window losses, so no document "
      "term)")
    loss_fixed = [r for r in fixed2048 if run_value(*r, "loss_gap") is not None]
    for c in (
        claim("P8 loss gap (text only - <bos>): causal fixed - causal at doc starts", loss_fixed,
              [("packing", "causal_bos")], "loss_gap", "strong", "weak"),
        claim("P9 loss gap: intra fixed - intra at doc starts", [("packing", "intra_fixed_bos")],
              [("packing", "intra_bos")], "loss_gap", "strong", "weak"),
    ):
        p(claim_line(c, scale=1, unit="nats"))
    p("beyond the paper: a no-op variant removes the first-token sink (Q = softmax - variant; "
      "softmax: the 3 runs of its configuration)")
    for name in VARIANTS:
        for form, what in (("nobos", "text only"), ("bos", "<bos>")):
            p(claim_line(claim(f"V {name} {what}: softmax - variant", t2048,
                               [("variants", name)], form, "weak")))  # fmt: skip
    for name in GUTENBERG[1:]:
        for form, what in (("nobos", "text only"), ("bos", "<bos>")):
            c = claim(f"G {name} {what}: softmax - variant (Gutenberg data, one run each)",
                      [("variants_gutenberg", "V_softmax")], [("variants_gutenberg", name)],
                      form, "weak")
            p(claim_line(c))
    p("strong: the context-length claim where sinks are strong (causal, fixed <bos>)")
    t128f = sg.get("T128 fixed_bos", [])
    if t128f:
        for eps, form in ((0.3, "bos"), (0.8, "bos")):
            c = claim(f"S1 strong <bos> eps {eps}: T2048 - T128", fixed2048, t128f, form, "strong",
                      eps=eps)
            p(claim_line(c))
        if "T512 fixed_bos" in sg:
            p(claim_line(claim("S2 strong <bos>: T512 - T128", sg["T512 fixed_bos"], t128f, "bos",
                               "strong")))
    else:
        p("S1 strong <bos>: T2048 - T128: no T = 128 run yet (results/strong/): UNRESOLVED")
    sd, df = seed_sd("strong", "bos")
    if sd is not None:
        for n in (2, 3, 5):
            p(f"strong: with {n} vs {n} seeds at the measured seed sd {100 * sd:.2f} points, the "
              f"detectable difference is {100 * bs.detectable_difference(sd, n, n):.1f} points")


def text_claims(p):
    """Single numbers the documents quote."""
    p("\n## numbers quoted in the text")
    s0, s1 = (run_value("context", n, "nobos") for n in ("T2048_s0", "T2048_s1"))
    sb = run_value("packing", "causal_bos", "nobos")
    vs = {n: run_value("variants", n, "nobos") for n in VARIANTS}
    p(f"text-only rates: softmax runs T2048_s0 {100 * s0:.2f}, causal_bos {100 * sb:.2f}, "
      f"T2048_s1 {100 * s1:.2f}; variants " + ", ".join(f"{n} {100 * v:.2f}" for n, v in vs.items()))
    p("variant - T2048_s1, text only, points, documents: " + "; ".join(
        f"{n} {pct(doc_ci(per_window('variants', n, 0.3, 'nobos') - per_window('context', 'T2048_s1', 0.3, 'nobos'), 'variants', n + 'vs_s1'))}"
        for n in VARIANTS))  # fmt: skip


def real_models(p):
    """docs/real_models.md: intervals over documents, the loss's targets, long context."""
    root = os.path.join(HERE, "real_models")
    wins = [json.loads(x) for x in open(os.path.join(root, "windows.jsonl")) if x.strip()]
    doc_N = np.array([w["doc"] for w in wins]) if "doc" in wins[0] else None
    p("\n## real models (T = 64; intervals over the held-out documents of the 220 windows)")
    if doc_N is None:
        p("windows.jsonl has no document ids: run docs/real_models_windows.py")
        return
    p(f"windows: {len(wins)} from {len(np.unique(doc_N))} documents")
    for name in ("smollm2", "gemma3"):
        rep = json.load(open(os.path.join(root, name, "report.json")))
        for layout, res in rep["sinks"].items():
            kept = np.asarray(res["kept_prompt_indices"])
            s_LxNxH = np.asarray(res["sink_score_per_sequence_LxNxH"], np.float64)
            for eps in (0.3, 0.8):
                x_N = (s_LxNxH > eps).mean(axis=(0, 2))
                m, lo, hi = bs.cluster_interval(x_N, doc_N[kept], rng_for(f"{name}{layout}{eps}"), RESAMPLES)
                w = bs.cluster_interval(x_N, None, rng_for(f"{name}{layout}{eps}w"), RESAMPLES)
                layer = 100 * (s_LxNxH > eps).mean(axis=(1, 2))
                p(f"{name} {layout} eps {eps}: {100 * m:.2f} [{100 * lo:.2f}, {100 * hi:.2f}] "
                  f"(windows [{100 * w[1]:.2f}, {100 * w[2]:.2f}]) | per layer (0-based) % of "
                  f"(window, head) pairs: {' '.join(f'{i}:{v:.1f}' for i, v in enumerate(layer))}")
            if name == "smollm2":
                lay = 100 * (s_LxNxH > 0.3).mean(axis=(1, 2))
                p(f"smollm2 {layout} eps 0.3, mean over layers 3-9: {lay[3:10].mean():.1f} %")
            a_N = s_LxNxH.mean(axis=(0, 2))
            m, lo, hi = bs.cluster_interval(a_N, doc_N[kept], rng_for(f"{name}{layout}a"), RESAMPLES)
            p(f"{name} {layout} mean alpha_0: {m:.3f} [{lo:.3f}, {hi:.3f}]")
        loss_path = os.path.join(root, name, "window_losses.json")
        if os.path.exists(loss_path):
            wl = json.load(open(loss_path))
            for layout in ("with_bos", "text_only"):
                t_NxT = np.asarray(wl[layout]["nll_per_target_NxT"], np.float64)
                docs_w = np.asarray(wl["doc"])
                for lab, sl in (("targets 1..63", slice(None)), ("last 32 targets", slice(-32, None)),
                                ("first 8 targets", slice(0, 8))):  # fmt: skip
                    m, lo, hi = bs.cluster_interval(t_NxT[:, sl].mean(1), docs_w,
                                                    rng_for(name + layout + lab), RESAMPLES)
                    p(f"{name} loss {layout}, {lab}: {m:.3f} [{lo:.3f}, {hi:.3f}] nats")
                first = t_NxT.mean(0)[:8]
                p(f"{name} loss {layout}, mean over windows of targets 1-8: "
                  + ", ".join(f"{v:.1f}" for v in first))
            for lab, sl in (("targets 1..63", slice(None)), ("last 32 targets", slice(-32, None))):
                gap = (np.asarray(wl["text_only"]["nll_per_target_NxT"])[:, sl].mean(1)
                       - np.asarray(wl["with_bos"]["nll_per_target_NxT"])[:, sl].mean(1))
                m, lo, hi = bs.cluster_interval(gap, np.asarray(wl["doc"]),
                                                rng_for(name + "gap" + lab), RESAMPLES)
                p(f"{name} loss text only - with <bos>, {lab}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    long_context(p, root)


def long_context(p, root):
    p("\n## long context (results/real_models/long_context; one sequence per length)")
    for name in ("smollm2", "gemma3"):
        r = json.load(open(os.path.join(root, "long_context", f"{name}_long.json")))
        for n, entry in sorted(r.items(), key=lambda kv: int(kv[0])):
            lc = entry["long_context"]
            lc = lc[0] if isinstance(lc, list) else lc
            s = np.asarray(lc["sink_scores_LxH"])
            local = np.asarray(lc.get("local_layers", [False] * s.shape[0]), bool)
            top = np.asarray(lc["top_received_attention_sum"])
            parts = []
            for lab, m in (("all", np.ones_like(local)), ("global", ~local), ("local", local)):
                if m.any():
                    parts.append(f"{lab}: {(s[m] > 0.3).sum()} of {s[m].size} heads > 0.3, "
                                 f"{(s[m] > 0.8).sum()} > 0.8, mean alpha {s[m].mean():.3f}")
            q = np.asarray(lc.get("queries_scored_per_layer", [int(n)] * s.shape[0]))
            p(f"{name} T {n}: " + " | ".join(parts) + f" | key 0 received {top[0]:.0f}, next key "
              f"{top[1]:.0f}, ratio {top[0] / top[1]:.2f} | queries scored per layer "
              f"{sorted(set(q.tolist()))}")
    path = os.path.join(root, "long_context", "gemma3_global_windows.json")
    if os.path.exists(path):
        g = json.load(open(path))
        p(f"gemma3 global layers, {len(g['documents'])} held-out books, one window each (the "
          f"book's first T tokens after <bos>; {g['backend']}); intervals over books:")
        for n, e in sorted(g["lengths"].items(), key=lambda kv: int(kv[0])):
            for lab in ("global", "local"):
                s_NxLxH = np.asarray(e[f"{lab}_scores_NxLxH"], np.float64)
                docs_n = np.arange(s_NxLxH.shape[0])
                r3 = bs.cluster_interval((s_NxLxH > 0.3).mean(axis=(1, 2)), docs_n,
                                         rng_for(f"g{n}{lab}r"), RESAMPLES)
                a = bs.cluster_interval(s_NxLxH.mean(axis=(1, 2)), docs_n, rng_for(f"g{n}{lab}a"),
                                        RESAMPLES)
                p(f"gemma3 T {n} {lab} layers: rate eps 0.3 {pct(r3, False)} % | mean alpha "
                  f"{a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}]")
        lengths = sorted(g["lengths"], key=int)
        if len(lengths) > 1 and all(g["lengths"][n]["documents"] == g["lengths"][lengths[0]]["documents"]
                                    for n in lengths):  # fmt: skip
            lo_n, hi_n = lengths[0], lengths[-1]
            per = {n: np.asarray(g["lengths"][n]["global_scores_NxLxH"], np.float64) for n in (lo_n, hi_n)}
            d_a = per[hi_n].mean(axis=(1, 2)) - per[lo_n].mean(axis=(1, 2))
            d_r = (per[hi_n] > 0.3).mean(axis=(1, 2)) - (per[lo_n] > 0.3).mean(axis=(1, 2))
            books = np.arange(len(d_a))
            a = bs.cluster_interval(d_a, books, rng_for("gdiff_a"), RESAMPLES)
            r = bs.cluster_interval(d_r, books, rng_for("gdiff_r"), RESAMPLES)
            p(f"gemma3 global layers, T {hi_n} - T {lo_n}, paired over books: mean alpha "
              f"{a[0]:+.3f} [{a[1]:+.3f}, {a[2]:+.3f}] (lower in {(d_a < 0).sum()} of {len(d_a)} "
              f"books) | rate eps 0.3 {pct(r)} points")


# ------------------------------------------------------------------------------ figures


def spread_figure(path):
    """Relative divergence after a one-token swap, per layer, with and without <bos>."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, color in zip(GUTENBERG, ("C0", "C1", "C2")):
        ps = summary("variants_gutenberg", name)["perturbation_spread"]
        for form, style in (("bos", "-"), ("nobos", "--")):
            label = f"{name.removeprefix('V_')}, {'<bos> + text' if form == 'bos' else 'text only'}"
            ax.plot(ps[form]["layer"], style, color=color, label=label, marker=".")
    ax.set_xlabel("layer (0: embeddings)")
    ax.set_ylabel("||h - h'|| / ||h||, tokens after the swap")
    ax.set_title("perturbation spread, T = 2048 runs, 157M tokens (Gutenberg)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curves(exp, name):
    ms = metrics(exp, name)
    ev = [m for m in ms if "val_loss" in m]
    st = [m for m in ms if "sink_rate_0.3" in m]
    tok = lambda rows: np.array([m["step"] * TOKENS_PER_STEP / 1e6 for m in rows])  # noqa: E731
    return (tok(ev), np.array([100 * m["val_sink_rate_0.3_bos"] for m in ev]),
            np.array([100 * m["val_sink_rate_0.3_nobos"] for m in ev]), tok(st),
            np.array([float(np.max(m["sink_attn"])) for m in st]))  # fmt: skip


def tokens_figure(exp, names, path, title):
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for name in names:
        e = "context" if name in SEQ_LEN else exp
        te, rb, rn, ts, mx = curves(e, name)
        label = "L12 seed 1 (T2048_s1)" if exp == "depth" and name == "T2048_s1" else name
        (line,) = ax[0].plot(te, rb, "o-", label=label)
        col = line.get_color()
        for a, form, r in ((ax[0], "bos", rb), (ax[1], "nobos", rn)):
            m, lo, hi = doc_ci(per_window(e, name, 0.3, form), e, f"fig/{e}/{name}/{form}")
            a.errorbar(te[-1:], r[-1:], yerr=[[r[-1] - 100 * lo], [100 * hi - r[-1]]], color=col,
                       capsize=3)  # fmt: skip
        ax[1].plot(te, rn, "o-", color=col, label=name)
        ax[2].plot(ts, mx, ".-", color=col, label=name)
    ax[0].set_title("held-out, <bos> + 63 tokens (eps 0.3)")
    ax[1].set_title("held-out, 64 tokens, text only (eps 0.3)")
    ax[2].set_title("in training, at the training T:\nlargest head's mean attention to key 0")
    for a in ax[:2]:
        a.set_ylabel("sink rate %")
        a.set_ylim(0, 7)
    ax[2].set_ylabel("alpha_0 of the top head")
    for a in ax:
        a.set_xlabel("tokens seen (M)")
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    fig.suptitle(title + " (final point: 95 % bootstrap interval over documents)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def layers_figure(path):
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for form, mk, lab in (("bos", "o-", "<bos> + text"), ("nobos", "s--", "text only")):
        xs, ys, lo, hi = [], [], [], []
        for name in DEPTH:
            m, l_, h_ = doc_ci(per_window("depth", name, 0.3, form), "depth", f"figL/{name}/{form}")
            xs.append(LAYERS[name])
            ys.append(100 * m)
            lo.append(100 * (m - l_))
            hi.append(100 * (h_ - m))
        line = ax.errorbar(xs, ys, yerr=[lo, hi], fmt=mk, capsize=3, label=f"{lab}, seed 0")
        m, l_, h_ = doc_ci(per_window("context", "T2048_s1", 0.3, form), "context", f"figL/s1/{form}")
        ax.errorbar([12.6], [100 * m], yerr=[[100 * (m - l_)], [100 * (h_ - m)]], fmt=mk[0],
                    mfc="none", capsize=3, color=line[0].get_color(),
                    label=f"{lab}, 12 layers seed 1 (T2048_s1)")  # fmt: skip
    ax.set_xticks([4, 12, 24])
    ax.set_xlabel("layers (d_model 512, T 2048, 157M tokens)")
    ax.set_ylabel("final sink rate % (eps 0.3)")
    ax.set_ylim(0, 3.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("95 % intervals over documents", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def strong_figure(path):
    """Final <bos> rate against the training context, each run with its document interval."""
    names = strong_runs()
    if not names:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for n in names:
        t, s = config("strong", n)["seq_len"], config("strong", n)["seed"]
        m, lo, hi = doc_ci(per_window("strong", n, 0.3, "bos"), "strong", f"figS/{n}")
        ax.errorbar([t * (1 + 0.06 * (s - 1))], [100 * m], yerr=[[100 * (m - lo)], [100 * (hi - m)]],
                    fmt="o", color=f"C{s}", capsize=3, label=f"seed {s}")  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([128, 512, 2048])
    ax.set_xticklabels(["128", "512", "2048"])
    ax.set_xlabel("training context T (causal, fixed <bos>, 157M tokens)")
    ax.set_ylabel("final sink rate % (eps 0.3, <bos>)")
    ax.set_ylim(0, 60)
    ax.grid(alpha=0.3)
    ax.set_title("95 % intervals over documents, one point per run", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figures():
    tokens_figure("context", CONTEXT, os.path.join(HERE, "context", "sink_rate_vs_tokens.png"),
                  "context length")
    tokens_figure("depth", ("L4", "L12", "L24", "T2048_s1"),
                  os.path.join(HERE, "depth", "sink_rate_vs_tokens.png"), "depth")
    layers_figure(os.path.join(HERE, "depth", "sink_rate_vs_layers.png"))
    spread_figure(os.path.join(HERE, "variants_gutenberg", "perturbation_spread.png"))
    if os.path.isdir(os.path.join(HERE, "strong")):
        strong_figure(os.path.join(HERE, "strong", "sink_rate_vs_context.png"))


if __name__ == "__main__":
    main()
