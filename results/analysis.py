"""Numbers and figures of REPRODUCTION.md's results, from the files under results/ only.

    python results/analysis.py            # prints the numbers (results/analysis.txt), writes
                                          # results/{context,depth}/sink_rate_vs_tokens.png and
                                          # results/depth/sink_rate_vs_layers.png

Per-window sink rate: for each of the 256 held-out windows, the fraction of (layer, head)
pairs with alpha_0 > eps (sink_scores.npz, scores_{bos,nobos} [L, windows, H]); the run's
rate is their mean. Every run is scored on the same windows, so differences between runs are
paired: their 95 % interval is a percentile bootstrap over windows of the paired difference.
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENS_PER_STEP = 2**17
RESAMPLES = 10_000
CONTEXT = ("T128_s0", "T128_s1", "T512_s0", "T2048_s0", "T2048_s1")
DEPTH = ("L4", "L12", "L24")
SEQ_LEN = {"T128_s0": 128, "T128_s1": 128, "T512_s0": 512, "T2048_s0": 2048, "T2048_s1": 2048}
LAYERS = {"L4": 4, "L12": 12, "L24": 24}  # L12 is a copy of context/T2048_s0.
VARIANTS = ("V_sink_logit", "V_softmax_plus_one", "V_gated", "V_kv_bias")
GUTENBERG = ("V_softmax", "V_sink_logit", "V_sigmoid")  # variants_gutenberg: Gutenberg only.
PACKING = ("causal_bos", "causal_fixed_bos", "intra_eos", "intra_bos", "intra_fixed_bos")


def run_dir(exp, name):
    return os.path.join(HERE, exp, name)


def per_window(exp, name, eps=0.3, form="bos"):
    """[windows] fraction of (layer, head) pairs with alpha_0 > eps on each window."""
    s_LxWxH = np.load(os.path.join(run_dir(exp, name), "sink_scores.npz"))[f"scores_{form}"]
    return (s_LxWxH > eps).mean(axis=(0, 2))


def boot(x_W, rng):
    idx = rng.integers(0, len(x_W), size=(RESAMPLES, len(x_W)))
    m = x_W[idx].mean(axis=1)
    return x_W.mean(), np.percentile(m, 2.5), np.percentile(m, 97.5)


def pct(t):
    return f"{100 * t[0]:+.2f} [{100 * t[1]:+.2f}, {100 * t[2]:+.2f}]"


def metrics(exp, name):
    return [
        json.loads(x) for x in open(os.path.join(run_dir(exp, name), "metrics.jsonl")) if x.strip()
    ]


def summary(exp, name):
    return json.load(open(os.path.join(run_dir(exp, name), "summary.json")))


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


def main():
    rng = np.random.default_rng(0)
    out = []
    p = out.append
    runs = [("context", n) for n in CONTEXT] + [("depth", n) for n in ("L4", "L24")]

    p("## final evaluation (summary.json; recomputed rate from sink_scores.npz in brackets)")
    for exp, name in runs + [("depth", "L12")]:
        s = summary(exp, name)
        sp = s["sink_profile"]
        line = f"{exp}/{name}: val {s['val_loss']:.3f}"
        for form in ("bos", "nobos"):
            for eps in ("0.3", "0.8"):
                q = sp[form][eps]
                re = per_window(exp, name, float(eps), form).mean()
                line += (
                    f" | {form} eps{eps} {100 * q['rate']:.2f} [{100 * q['rate_low']:.2f},"
                    f" {100 * q['rate_high']:.2f}] (npz {100 * re:.2f})"
                )
            line += f" | {form} alpha0 {q['score']:.4f} max-head {q['max_head_score']:.3f}"
        p(line)

    p("\n## where the sinks are (eps 0.3, <bos>): layers with rate >= 1 %, heads with rate >= 10 %")
    for exp, name in runs:
        layers, heads, hr = where_sinks(exp, name)
        p(
            f"{name}: layers [{layers}]; heads [{heads}]; heads ever >= 1 %: {(hr >= 0.01).sum()}"
            f" of {hr.size}"
        )

    p(
        f"\n## paired differences, eps 0.3, percentage points, 95 % bootstrap over windows ({RESAMPLES})"
    )
    w = {(e, n): {f: per_window(e, n, 0.3, f) for f in ("bos", "nobos")} for e, n in runs}
    c = lambda n, f="bos": w[("context", n)][f]
    d = lambda n, f="bos": w[("depth", n)][f]
    pairs = {
        "seed spread T128 (s0 - s1)": c("T128_s0") - c("T128_s1"),
        "seed spread T2048 (s0 - s1)": c("T2048_s0") - c("T2048_s1"),
        "T2048_s0 - T128_s0": c("T2048_s0") - c("T128_s0"),
        "T2048_s1 - T128_s1": c("T2048_s1") - c("T128_s1"),
        "T2048 - T128, seed means": (c("T2048_s0") + c("T2048_s1") - c("T128_s0") - c("T128_s1"))
        / 2,
        "T512_s0 - T128, seed mean": c("T512_s0") - (c("T128_s0") + c("T128_s1")) / 2,
        "T512_s0 - T2048, seed mean": c("T512_s0") - (c("T2048_s0") + c("T2048_s1")) / 2,
        "T512_s0 - T128_s0": c("T512_s0") - c("T128_s0"),
        "L24 - L4": d("L24") - d("L4"),
        "L24 - L12 (T2048_s0)": d("L24") - c("T2048_s0"),
        "L24 - L12 seed mean": d("L24") - (c("T2048_s0") + c("T2048_s1")) / 2,
        "L4 - L12 seed mean": d("L4") - (c("T2048_s0") + c("T2048_s1")) / 2,
    }
    for label, x in pairs.items():
        p(f"<bos>   {label}: {pct(boot(x, rng))}")
    nob = {
        "seed spread T128 (s0 - s1)": c("T128_s0", "nobos") - c("T128_s1", "nobos"),
        "seed spread T2048 (s0 - s1)": c("T2048_s0", "nobos") - c("T2048_s1", "nobos"),
        "T2048 - T128, seed means": (
            c("T2048_s0", "nobos")
            + c("T2048_s1", "nobos")
            - c("T128_s0", "nobos")
            - c("T128_s1", "nobos")
        )
        / 2,
        "T2048_s0 - T128_s0": c("T2048_s0", "nobos") - c("T128_s0", "nobos"),
        "T2048_s1 - T128_s1": c("T2048_s1", "nobos") - c("T128_s1", "nobos"),
        "T512_s0 - T128, seed mean": c("T512_s0", "nobos")
        - (c("T128_s0", "nobos") + c("T128_s1", "nobos")) / 2,
        "T2048, seed mean - T512_s0": (c("T2048_s0", "nobos") + c("T2048_s1", "nobos")) / 2
        - c("T512_s0", "nobos"),
        "L24 - L4": d("L24", "nobos") - d("L4", "nobos"),
        "L12 s1 (T2048_s1) - L4": c("T2048_s1", "nobos") - d("L4", "nobos"),
        "L24 - L12 seed mean": d("L24", "nobos")
        - (c("T2048_s0", "nobos") + c("T2048_s1", "nobos")) / 2,
    }
    for label, x in nob.items():
        p(f"no<bos> {label}: {pct(boot(x, rng))}")

    packing(p, rng)
    variants(p, rng)
    variants_gutenberg(p, rng)

    p(
        "\n## during training: held-out rate eps 0.3 <bos> / text-only (%), and the in-step"
        " statistic at the training context (rate eps 0.3 %, largest head's mean attention to key 0)"
    )
    for exp, name in runs:
        ms = metrics(exp, name)
        ev = [
            (
                m["step"],
                100 * m["val_sink_rate_0.3_bos"],
                100 * m["val_sink_rate_0.3_nobos"],
                m["val_sink_score_bos"],
                m["val_loss"],
            )
            for m in ms
            if "val_loss" in m
        ]
        st = [
            (m["step"], 100 * m["sink_rate_0.3"], float(np.max(m["sink_attn"])))
            for m in ms
            if "sink_rate_0.3" in m
        ]
        p(
            f"{name}: eval "
            + "; ".join(
                f"{s}: {a:.2f}/{b:.2f} alpha {al:.3f} loss {lo:.3f}" for s, a, b, al, lo in ev
            )
        )
        p(f"{name}: in-step " + "; ".join(f"{s}: {r:.4f} {mx:.4f}" for s, r, mx in st))
    out_txt = "\n".join(out)
    print(out_txt)
    with open(os.path.join(HERE, "analysis.txt"), "w") as f:
        f.write(out_txt + "\n")
    figures()


def packing(p, rng):
    """Table 2: the five packing cells; paired differences over the same held-out windows."""
    p("\n## packing (Table 2): final evaluation")
    for name in PACKING:
        s = summary("packing", name)
        p(
            f"{name}: val {s['val_loss']:.3f} | loss <bos>+text {s['val_loss_bos']:.3f}, text only"
            f" {s['val_loss_nobos']:.3f}, text only - <bos> {s['val_loss_nobos'] - s['val_loss_bos']:+.3f}"
            f" nats | sink eps 0.3 <bos> {100 * s['val_sink_rate_0.3_bos']:.2f}, text only"
            f" {100 * s['val_sink_rate_0.3_nobos']:.2f}"
        )
    w = {n: {f: per_window("packing", n, 0.3, f) for f in ("bos", "nobos")} for n in PACKING}
    rerun = {f: per_window("context", "T2048_s0", 0.3, f) for f in ("bos", "nobos")}
    pairs = {
        "causal_fixed_bos - causal_bos, <bos>": w["causal_fixed_bos"]["bos"]
        - w["causal_bos"]["bos"],
        "intra_fixed_bos - intra_bos, <bos>": w["intra_fixed_bos"]["bos"] - w["intra_bos"]["bos"],
        "intra_bos - intra_eos, <bos>": w["intra_bos"]["bos"] - w["intra_eos"]["bos"],
        "intra_bos - intra_eos, text only": w["intra_bos"]["nobos"] - w["intra_eos"]["nobos"],
        "causal_bos (packing) - T2048_s0 (context), same config, <bos>": w["causal_bos"]["bos"]
        - rerun["bos"],
        "causal_bos (packing) - T2048_s0 (context), same config, text only": w["causal_bos"][
            "nobos"
        ]
        - rerun["nobos"],
    }
    pairs.update({f"{n}: <bos> - text only": w[n]["bos"] - w[n]["nobos"] for n in PACKING})
    p(
        f"\n## packing: paired differences, eps 0.3, points, 95 % bootstrap over windows ({RESAMPLES})"
    )
    for label, x in pairs.items():
        p(f"{label}: {pct(boot(x, rng))}")
    p("\n## packing: where the sinks are (eps 0.3, <bos>): layers >= 1 %, heads >= 10 %")
    for name in PACKING:
        layers, heads, _ = where_sinks("packing", name)
        p(f"{name}: layers [{layers}]; heads [{heads}]")
    p("\n## packing: held-out eval during training, step: sink eps 0.3 <bos>/text only (%), loss")
    for name in PACKING:
        ev = [m for m in metrics("packing", name) if "val_loss" in m]
        p(
            f"{name}: "
            + "; ".join(
                f"{m['step']}: {100 * m['val_sink_rate_0.3_bos']:.1f}/"
                f"{100 * m['val_sink_rate_0.3_nobos']:.1f} loss {m['val_loss']:.3f}"
                for m in ev
            )
        )


def variants(p, rng):
    """Beyond the paper: attention variants against the two runs of the softmax baseline
    (context/T2048_s0 and packing/causal_bos: the same configuration trained twice)."""
    base = {"T2048_s0": ("context", "T2048_s0"), "causal_bos": ("packing", "causal_bos")}
    p("\n## variants: final evaluation, and the in-step noop mass at T = 2048 (last record)")
    for name in VARIANTS:
        s = summary("variants", name)
        noop = np.array([m for m in metrics("variants", name) if "noop_mass" in m][-1]["noop_mass"])
        p(
            f"{name}: val {s['val_loss']:.3f} | loss <bos> {s['val_loss_bos']:.3f} text only"
            f" {s['val_loss_nobos']:.3f} | sink eps 0.3 <bos> {100 * s['val_sink_rate_0.3_bos']:.2f}"
            f" text only {100 * s['val_sink_rate_0.3_nobos']:.2f} | eps 0.8 <bos>"
            f" {100 * s['val_sink_rate_0.8_bos']:.2f} text only {100 * s['val_sink_rate_0.8_nobos']:.2f}"
            f" | noop mass mean {noop.mean():.3f}, max head {noop.max():.3f}, per layer"
            f" {np.round(noop.mean(axis=1), 2).tolist()}"
        )
    p("\n## variants - softmax baseline runs, eps 0.3, points, 95 % bootstrap over windows")
    for name in VARIANTS:
        for form in ("bos", "nobos"):
            v = per_window("variants", name, 0.3, form)
            diffs = [f"- {b}: {pct(boot(v - per_window(*base[b], 0.3, form), rng))}" for b in base]
            p(f"{name} {form}: " + "; ".join(diffs))


def variants_gutenberg(p, rng):
    """softmax, sink_logit and sigmoid on the Gutenberg part of the corpus (its own tokenizer
    and held-out windows): sink rates against softmax, and the perturbation spread."""
    p("\n## variants_gutenberg: final evaluation and perturbation spread (last layer, 95 % CI)")
    for name in GUTENBERG:
        s = summary("variants_gutenberg", name)
        ps = s["perturbation_spread"]
        spread = " ".join(
            f"{f} {ps[f]['last']:.4f} [{ps[f]['last_low']:.4f}, {ps[f]['last_high']:.4f}]"
            for f in ("bos", "nobos")
        )
        d = ps["last_bos_minus_nobos"]
        p(
            f"{name}: val {s['val_loss']:.3f} | loss <bos> {s['val_loss_bos']:.3f} text only"
            f" {s['val_loss_nobos']:.3f} | sink eps 0.3 <bos> {100 * s['val_sink_rate_0.3_bos']:.2f}"
            f" text only {100 * s['val_sink_rate_0.3_nobos']:.2f} | spread {spread} |"
            f" <bos> - text only {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] ({ps['rows']} rows)"
        )
    for name in GUTENBERG[1:]:
        for form in ("bos", "nobos"):
            v = per_window("variants_gutenberg", name, 0.3, form)
            base = per_window("variants_gutenberg", "V_softmax", 0.3, form)
            p(f"{name} - V_softmax {form}, eps 0.3, points: {pct(boot(v - base, rng))}")


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
    tok = lambda rows: np.array([m["step"] * TOKENS_PER_STEP / 1e6 for m in rows])
    return (
        tok(ev),
        np.array([100 * m["val_sink_rate_0.3_bos"] for m in ev]),
        np.array([100 * m["val_sink_rate_0.3_nobos"] for m in ev]),
        tok(st),
        np.array([float(np.max(m["sink_attn"])) for m in st]),
    )


def tokens_figure(exp, names, path, title):
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for name in names:
        e = "context" if name in SEQ_LEN else exp
        te, rb, rn, ts, mx = curves(e, name)
        q = summary(e, name)["sink_profile"]
        label = "L12 seed 1 (T2048_s1)" if exp == "depth" and name == "T2048_s1" else name
        (line,) = ax[0].plot(te, rb, "o-", label=label)
        col = line.get_color()
        ax[0].errorbar(
            te[-1:],
            rb[-1:],
            yerr=[
                [rb[-1] - 100 * q["bos"]["0.3"]["rate_low"]],
                [100 * q["bos"]["0.3"]["rate_high"] - rb[-1]],
            ],
            color=col,
            capsize=3,
        )
        ax[1].plot(te, rn, "o-", color=col, label=name)
        ax[1].errorbar(
            te[-1:],
            rn[-1:],
            yerr=[
                [rn[-1] - 100 * q["nobos"]["0.3"]["rate_low"]],
                [100 * q["nobos"]["0.3"]["rate_high"] - rn[-1]],
            ],
            color=col,
            capsize=3,
        )
        ax[2].plot(ts, mx, ".-", color=col, label=name)
    ax[0].set_title("held-out, <bos> + 63 tokens (eps 0.3)")
    ax[1].set_title("held-out, 64 tokens, text only (eps 0.3)")
    ax[2].set_title("in training, at the training T:\nlargest head's mean attention to key 0")
    for a in ax[:2]:
        a.set_ylabel("sink rate %")
        a.set_ylim(0, 6)
    ax[2].set_ylabel("alpha_0 of the top head")
    for a in ax:
        a.set_xlabel("tokens seen (M)")
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    fig.suptitle(title + " (final point: 95 % bootstrap interval over windows)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def layers_figure(path):
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for form, mk, lab in (("bos", "o-", "<bos> + text"), ("nobos", "s--", "text only")):
        xs, ys, lo, hi = [], [], [], []
        for name in DEPTH:
            q = summary("depth", name)["sink_profile"][form]["0.3"]
            xs.append(LAYERS[name])
            ys.append(100 * q["rate"])
            lo.append(100 * (q["rate"] - q["rate_low"]))
            hi.append(100 * (q["rate_high"] - q["rate"]))
        line = ax.errorbar(xs, ys, yerr=[lo, hi], fmt=mk, capsize=3, label=f"{lab}, seed 0")
        q = summary("context", "T2048_s1")["sink_profile"][form]["0.3"]
        ax.errorbar(
            [12.6],
            [100 * q["rate"]],
            yerr=[[100 * (q["rate"] - q["rate_low"])], [100 * (q["rate_high"] - q["rate"])]],
            fmt=mk[0],
            mfc="none",
            capsize=3,
            color=line[0].get_color(),
            label=f"{lab}, 12 layers seed 1 (T2048_s1)",
        )
    ax.set_xticks([4, 12, 24])
    ax.set_xlabel("layers (d_model 512, T 2048, 157M tokens)")
    ax.set_ylabel("final sink rate % (eps 0.3)")
    ax.set_ylim(0, 3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figures():
    tokens_figure(
        "context",
        CONTEXT,
        os.path.join(HERE, "context", "sink_rate_vs_tokens.png"),
        "context length",
    )
    tokens_figure(
        "depth",
        ("L4", "L12", "L24", "T2048_s1"),
        os.path.join(HERE, "depth", "sink_rate_vs_tokens.png"),
        "depth",
    )
    layers_figure(os.path.join(HERE, "depth", "sink_rate_vs_layers.png"))
    spread_figure(os.path.join(HERE, "variants_gutenberg", "perturbation_spread.png"))


if __name__ == "__main__":
    main()
