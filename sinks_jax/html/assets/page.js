// The page's own script: reads the inline page data and draws each view with plotly.js.
// Hand-written parts: the controls, the float16 map decoding and the token strip (plain DOM:
// a wrapped run of coloured tokens is text, not a chart).
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("sinks-data").textContent);
  const LAYOUT_LABEL = { with_bos: "<bos> + text", text_only: "text only" };
  const RUN_LAYOUT = { with_bos: "bos", text_only: "nobos" };
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif",
    size: 12 };
  // no "share to the cloud" button, no server: the page never sends anything anywhere
  const CONFIG = { displaylogo: false, responsive: true, showSendToCloud: false,
    showEditInChartStudio: false, plotlyServerURL: "" };
  const profiles = DATA.profiles || [];
  const runs = DATA.runs || [];
  const state = { profile: 0, colour: "rate", eps: null, layout: null, head: null, window: 0,
    scale: "linear", curve: "ppl_cumulative" };

  // ---------- small helpers ----------
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + " %";
  const num = (v, d) => (v === null || v === undefined) ? "–" : Number(v).toFixed(d);
  const range = (n) => Array.from({ length: n }, (_, i) => i);
  const colour = (i) => PALETTE[i % PALETTE.length];
  function rgba(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${a})`;
  }
  function plotLabel(s) { // plotly reads a subset of HTML in labels: escape it
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function tokenText(s) {
    const t = String(s).replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");
    return t.length ? t : "\u2205";
  }
  function radios(groupId, name, values, labels, current, onChange) {
    const group = $(groupId);
    values.forEach((v) => {
      const input = el("input", { type: "radio", name: name, value: v });
      input.checked = v === current;
      input.addEventListener("change", () => onChange(v));
      const label = el("label");
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + labels(v)));
      group.appendChild(label);
    });
  }
  function fillSelect(select, options, current) {
    select.innerHTML = "";
    options.forEach(([value, text]) => {
      const o = el("option", { value: String(value) }, text);
      if (String(value) === String(current)) o.selected = true;
      select.appendChild(o);
    });
  }
  function baseLayout(extra) {
    const layout = Object.assign({ font: FONT, margin: { l: 60, r: 20, t: 30, b: 50 },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff" }, extra);
    ["xaxis", "yaxis"].forEach((k) => { layout[k] = Object.assign({ zeroline: false }, layout[k]); });
    return layout;
  }

  // ---------- float16 attention maps ----------
  let HALF = null;
  function halfTable() {
    if (HALF) return HALF;
    HALF = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? s * Math.pow(2, -14) * (f / 1024)
        : e === 31 ? (f ? NaN : s * Infinity) : s * Math.pow(2, e - 15) * (1 + f / 1024);
    }
    return HALF;
  }
  const decoded = new Map();
  function windowValues(maps, w) { // Float32Array of every head's lower triangle
    const key = maps.data[w];
    if (!decoded.has(key)) {
      const bytes = Uint8Array.from(atob(key), (c) => c.charCodeAt(0));
      const halves = new Uint16Array(bytes.buffer);
      const table = halfTable();
      const out = new Float32Array(halves.length);
      for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
      decoded.set(key, out);
    }
    return decoded.get(key);
  }
  function headMap(maps, w, layer, head) { // t x t rows, null above the diagonal
    const t = maps.t, tri = t * (t + 1) / 2;
    const values = windowValues(maps, w);
    let p = (layer * maps.H + head) * tri;
    const rows = [];
    for (let i = 0; i < t; i++) {
      const row = new Array(t).fill(null);
      for (let j = 0; j <= i; j++) row[j] = values[p++];
      rows.push(row);
    }
    return rows;
  }

  // ---------- header, toolbar ----------
  function setupHeader() {
    $("title").textContent = DATA.title || "sinks_jax report";
    document.title = DATA.title || document.title;
    $("subtitle").textContent = {
      analyze: "sinks-jax analyze: sink statistics of a model over many sequences",
      report: "sinks-jax report: a family of training runs",
      stream: "sinks-jax stream: perplexity of a streaming cache against tokens read",
    }[DATA.kind] || "";
    const shown = [["view-grid", "layer × head"], ["view-map", "attention map"],
      ["view-layers", "per layer"], ["view-training", "training"], ["view-stream", "stream"],
      ["view-settings", "settings"]].filter(([id]) => !$(id).hidden);
    shown.forEach(([id, text]) => {
      const a = el("a", { href: "#" + id }, text);
      $("nav").appendChild(a);
    });
  }
  function allEps() {
    const set = new Set();
    profiles.forEach((p) => Object.values(p.layouts).forEach((l) => Object.keys(l.eps)
      .forEach((e) => set.add(e))));
    runs.forEach((r) => Object.keys(r.evals).forEach((k) => {
      const m = k.match(/^val_sink_rate_([0-9.]+)_/);
      if (m) set.add(m[1]);
    }));
    return Array.from(set).sort((a, b) => Number(a) - Number(b));
  }
  function allLayouts() {
    const set = new Set();
    profiles.forEach((p) => Object.keys(p.layouts).forEach((l) => set.add(l)));
    if (runs.length) { set.add("with_bos"); set.add("text_only"); }
    return ["with_bos", "text_only"].filter((l) => set.has(l));
  }
  // A link can open the page on a view: #layer=5&head=3&layout=text_only&eps=0.8&window=1
  // &scale=sqrt&colour=score&model=0 (any subset).
  function hashState() {
    const out = {};
    new URLSearchParams(location.hash.replace(/^#/, "")).forEach((v, k) => { out[k] = v; });
    return out;
  }
  function setupToolbar() {
    const eps = allEps(), layouts = allLayouts(), wanted = hashState();
    state.eps = eps.includes(wanted.eps) ? wanted.eps : eps.includes("0.3") ? "0.3" : eps[0];
    state.layout = layouts.includes(wanted.layout) ? wanted.layout : layouts[0];
    if (wanted.layer !== undefined && wanted.head !== undefined) {
      state.head = [Number(wanted.layer), Number(wanted.head)];
    }
    if (wanted.window !== undefined) state.window = Number(wanted.window);
    if (wanted.scale === "sqrt") { state.scale = "sqrt"; $("map-scale").value = "sqrt"; }
    if (wanted.colour === "score") {
      state.colour = "score";
      document.querySelector("input[name=colour][value=score]").checked = true;
    }
    if (wanted.model !== undefined && Number(wanted.model) < profiles.length) {
      state.profile = Number(wanted.model);
    }
    if (!eps.length) $("eps-group").hidden = true;
    if (!layouts.length) $("layout-group").hidden = true;
    radios("eps-group", "eps", eps, (e) => e, state.eps, (e) => { state.eps = e; redraw(); });
    radios("layout-group", "layout", layouts, (l) => LAYOUT_LABEL[l] || l, state.layout,
      (l) => { state.layout = l; state.window = 0; redraw(); });
    document.querySelectorAll("input[name=colour]").forEach((input) =>
      input.addEventListener("change", () => { state.colour = input.value; drawGrid(); }));
    if (profiles.length > 1) {
      fillSelect($("profile-select"), profiles.map((p, i) => [i, p.name]), state.profile);
      $("profile-select").addEventListener("change", (ev) => {
        state.profile = Number(ev.target.value); state.head = null; state.window = 0; redraw();
      });
    } else {
      $("profile-group").hidden = true;
    }
    if (!profiles.length) $("colour-group").hidden = true;
  }

  // ---------- view 1: layer x head grid ----------
  function currentLayout() {
    const p = profiles[state.profile];
    return p && (p.layouts[state.layout] || Object.values(p.layouts)[0]);
  }
  function strongestHead(lay) {
    let best = [0, 0], value = -1;
    lay.head_score.forEach((row, l) => row.forEach((v, h) => {
      if (v > value) { value = v; best = [l, h]; }
    }));
    return best;
  }
  function cellText(lay, l, h) {
    const e = lay.eps[state.eps];
    return `layer ${l}, head ${h}: sink rate ${pct(e.head_rate[l][h])} (95 % interval ` +
      `${pct(e.head_low[l][h])} – ${pct(e.head_high[l][h])}), mean α0 ${num(lay.head_score[l][h], 3)}` +
      ` (eps ${state.eps}, ${LAYOUT_LABEL[state.layout] || state.layout})`;
  }
  let gridBound = false;
  function drawGrid() {
    const lay = currentLayout();
    if (!lay) return;
    const e = lay.eps[state.eps];
    const L = lay.head_score.length, H = lay.head_score[0].length;
    if (!state.head || state.head[0] >= L || state.head[1] >= H) state.head = strongestHead(lay);
    const byRate = state.colour === "rate";
    const z = byRate ? e.head_rate.map((r) => r.map((v) => 100 * v)) : lay.head_score;
    const custom = range(L).map((l) => range(H).map((h) => [pct(e.head_rate[l][h]),
      pct(e.head_low[l][h]), pct(e.head_high[l][h]), num(lay.head_score[l][h], 3)]));
    const trace = {
      type: "heatmap", z: z, x: range(H), y: range(L), customdata: custom, xgap: 1, ygap: 1,
      colorscale: "Viridis", zmin: 0, zmax: byRate ? 100 : 1,
      colorbar: { title: { text: byRate ? "sink rate %" : "mean α0" }, thickness: 14 },
      hovertemplate: "layer %{y}, head %{x}<br>sink rate %{customdata[0]}<br>" +
        "95 % interval %{customdata[1]} – %{customdata[2]}<br>mean α0 %{customdata[3]}" +
        "<extra></extra>",
    };
    const [sl, sh] = state.head;
    const layout = baseLayout({
      height: Math.max(320, Math.min(900, 20 * L + 110)),
      xaxis: { title: { text: "head" }, dtick: H > 32 ? undefined : 1, constrain: "domain" },
      yaxis: { title: { text: "layer" }, dtick: L > 40 ? undefined : 1 },
      shapes: [{ type: "rect", x0: sh - 0.5, x1: sh + 0.5, y0: sl - 0.5, y1: sl + 0.5,
        line: { color: "#d62728", width: 2 } }],
      title: { text: `${profiles[state.profile].name}: ` +
        (byRate ? `sink rate, eps ${state.eps}` : "mean α0") +
        `, ${LAYOUT_LABEL[state.layout] || state.layout}`, font: { size: 13 } },
    });
    Plotly.react("grid", [trace], layout, CONFIG);
    $("grid-info").textContent = "selected: " + cellText(lay, sl, sh);
    $("interval-note").textContent = "Intervals: " + (profiles[state.profile].interval || "");
    if (!gridBound) {
      gridBound = true;
      const gd = $("grid");
      gd.on("plotly_hover", (ev) => {
        const pt = ev.points[0];
        $("grid-info").textContent = cellText(currentLayout(), pt.y, pt.x);
      });
      gd.on("plotly_click", (ev) => {
        const pt = ev.points[0];
        state.head = [pt.y, pt.x];
        drawGrid();
        drawMap();
      });
    }
  }

  // ---------- view 2: attention map of the chosen head ----------
  function drawMap() {
    const p = profiles[state.profile];
    const maps = p && p.maps && p.maps[state.layout];
    const strip = $("token-strip");
    if (!maps || !maps.data.length) {
      Plotly.purge("map");
      strip.innerHTML = "";
      $("window-select").innerHTML = "";
      $("map-title").textContent = "";
      $("map-missing").hidden = false;
      return;
    }
    $("map-missing").hidden = true;
    if (state.window >= maps.data.length) state.window = 0;
    fillSelect($("window-select"), maps.windows.map((w, i) => [i, `sequence ${w}`]), state.window);
    const [layer, head] = state.head || [0, 0];
    const A = headMap(maps, state.window, layer, head);
    const labels = maps.labels[state.window].map(tokenText);
    const t = maps.t;
    const sqrt = state.scale === "sqrt";
    const z = A.map((row) => row.map((v) => (v === null ? null : (sqrt ? Math.sqrt(v) : v))));
    const custom = A.map((row, i) => row.map((v, j) => [plotLabel(labels[i]),
      plotLabel(labels[j]), v === null ? "" : v.toFixed(4)]));
    const ticks = range(t), text = labels.map(plotLabel);
    const trace = {
      type: "heatmap", z: z, x: ticks, y: ticks, customdata: custom, colorscale: "Viridis",
      zmin: 0, zmax: 1, hoverongaps: false,
      colorbar: { title: { text: sqrt ? "√ attention" : "attention" }, thickness: 14 },
      hovertemplate: "query %{y} %{customdata[0]}<br>key %{x} %{customdata[1]}<br>" +
        "attention %{customdata[2]}<extra></extra>",
    };
    const size = Math.max(420, Math.min(1100, 11 * t + 200));
    const layout = baseLayout({
      height: size, width: size + 80, margin: { l: 110, r: 20, t: 40, b: 110 },
      xaxis: { title: { text: "key" }, tickmode: "array", tickvals: ticks, ticktext: text,
        tickangle: -90, tickfont: { size: t > 80 ? 7 : 9 }, side: "bottom", showgrid: false },
      yaxis: { title: { text: "query" }, tickmode: "array", tickvals: ticks, ticktext: text,
        autorange: "reversed", tickfont: { size: t > 80 ? 7 : 9 }, scaleanchor: "x",
        showgrid: false },
      shapes: [{ type: "rect", x0: -0.5, x1: 0.5, y0: -0.5, y1: t - 0.5,
        line: { color: "#d62728", width: 2 } }],
      annotations: [{ x: 0, y: -0.5, yshift: 12, text: "sink", showarrow: false,
        font: { color: "#d62728", size: 11 } }],
    });
    Plotly.react("map", [trace], layout, CONFIG);
    $("map-title").textContent = `${p.name}: layer ${layer}, head ${head}, sequence ` +
      `${maps.windows[state.window]} (${LAYOUT_LABEL[state.layout] || state.layout}), ` +
      `${t} tokens`;
    $("map-note").textContent = [maps.crop && maps.crop !== "none" ? "Saved maps: " + maps.crop : "",
      t < maps.saved_tokens ? `Cropped to the first ${t} of ${maps.saved_tokens} saved tokens ` +
        "to fit the page." : "", maps.compute ? "Computed with " + maps.compute + "." : ""]
      .filter(Boolean).join(" ");
    // the token strip: alpha_k = mean over queries i >= k of A[i][k]
    strip.replaceChildren();
    labels.forEach((label, k) => {
      let total = 0;
      for (let i = k; i < t; i++) total += A[i][k];
      const alpha = total / (t - k);
      const span = el("span", { class: "tok" + (k === 0 ? " sink" : ""),
        title: `token ${k} ${JSON.stringify(maps.labels[state.window][k])}: α${k} = ` +
          alpha.toFixed(4) }, label);
      span.style.background = `rgba(230,85,13,${Math.min(1, Math.sqrt(alpha)).toFixed(3)})`;
      strip.appendChild(span);
    });
  }

  // ---------- view 3: per-layer rates with interval bands ----------
  function drawLayers() {
    const traces = [];
    profiles.forEach((p, pi) => {
      ["with_bos", "text_only"].forEach((name) => {
        const lay = p.layouts[name];
        if (!lay || !lay.eps[state.eps]) return;
        const e = lay.eps[state.eps], x = range(e.layer_rate.length);
        const group = `${p.name} ${name}`, c = colour(pi);
        traces.push({ x: x, y: e.layer_high.map((v) => 100 * v), mode: "lines",
          line: { width: 0, color: c }, legendgroup: group, showlegend: false,
          hoverinfo: "skip" });
        traces.push({ x: x, y: e.layer_low.map((v) => 100 * v), mode: "lines",
          line: { width: 0, color: c }, fill: "tonexty", fillcolor: rgba(c, 0.18),
          legendgroup: group, showlegend: false, hoverinfo: "skip" });
        traces.push({ x: x, y: e.layer_rate.map((v) => 100 * v), mode: "lines+markers",
          name: `${p.name}, ${LAYOUT_LABEL[name]}`, legendgroup: group,
          line: { color: c, dash: name === "with_bos" ? "solid" : "dash" },
          customdata: x.map((l) => [pct(e.layer_low[l]), pct(e.layer_high[l])]),
          hovertemplate: `${plotLabel(p.name)}, ${plotLabel(LAYOUT_LABEL[name])}<br>layer %{x}: ` +
            "%{y:.1f} % (95 % interval %{customdata[0]} – %{customdata[1]})<extra></extra>" });
      });
    });
    Plotly.react("layers", traces, baseLayout({
      height: 380, xaxis: { title: { text: "layer" }, dtick: 1 },
      yaxis: { title: { text: `sink rate % (eps ${state.eps})` }, range: [-3, 103] },
      legend: { orientation: "h", y: -0.2 }, margin: { l: 60, r: 20, t: 20, b: 60 },
    }), CONFIG);
  }

  // ---------- view 4: training runs ----------
  const visibleRuns = new Set();
  function runTraces(kind) {
    const traces = [];
    runs.forEach((r, ri) => {
      const c = colour(ri), shown = visibleRuns.has(ri);
      const common = { legendgroup: r.name, visible: shown ? true : "legendonly" };
      if (kind === "loss") {
        if (r.train.steps.length) {
          traces.push(Object.assign({ x: r.train.steps, y: r.train.loss, mode: "lines",
            name: `${r.name} train`, line: { color: c, width: 1 }, opacity: 0.55 }, common));
        }
        if (r.evals.val_loss) {
          traces.push(Object.assign({ x: r.evals.steps, y: r.evals.val_loss,
            mode: "lines+markers", name: `${r.name} held-out`, line: { color: c } }, common));
        }
      } else {
        const key = `val_sink_rate_${state.eps}_${RUN_LAYOUT[state.layout]}`;
        if (r.evals[key]) {
          traces.push(Object.assign({ x: r.evals.steps, y: r.evals[key].map((v) =>
            v === null ? null : 100 * v), mode: "lines+markers", name: `${r.name} held-out`,
          line: { color: c } }, common));
        }
        const batch = r.train_rates[`sink_rate_${state.eps}`];
        if (batch && state.layout === "with_bos") {
          traces.push(Object.assign({ x: batch.steps, y: batch.values.map((v) => 100 * v),
            mode: "lines", name: `${r.name} training batch`,
            line: { color: c, dash: "dot", width: 1 } }, common));
        }
      }
    });
    return traces;
  }
  function drawTraining() {
    Plotly.react("loss", runTraces("loss"), baseLayout({
      height: 360, title: { text: "loss", font: { size: 13 } },
      xaxis: { title: { text: "step" } }, yaxis: { title: { text: "nats / token" } },
      legend: { font: { size: 10 } } }), CONFIG);
    Plotly.react("rates", runTraces("rates"), baseLayout({
      height: 360, title: { text: `sink rate, eps ${state.eps}, held-out ` +
        `${LAYOUT_LABEL[state.layout]}` + (state.layout === "with_bos" ?
        " (dotted: training batches)" : ""), font: { size: 13 } },
      xaxis: { title: { text: "step" } }, yaxis: { title: { text: "sink rate %" },
        range: [-3, 103] }, legend: { font: { size: 10 } } }), CONFIG);
    drawStepGrid();
  }
  function setupTraining() {
    runs.forEach((r, ri) => {
      visibleRuns.add(ri);
      const input = el("input", { type: "checkbox", value: String(ri) });
      input.checked = true;
      input.addEventListener("change", () => {
        if (input.checked) visibleRuns.add(ri); else visibleRuns.delete(ri);
        drawTraining();
      });
      const label = el("label");
      label.style.color = colour(ri);
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + r.name));
      $("run-checks").appendChild(label);
    });
    const withStats = runs.map((r, i) => [i, r.name]).filter(([i]) =>
      Object.keys(runs[i].step_stats).length);
    if (!withStats.length) {
      $("stepgrid").replaceChildren(el("p", { class: "missing" },
        "These runs logged no per-layer, per-head statistics."));
      return;
    }
    fillSelect($("stat-run"), withStats, withStats[0][0]);
    const refillKeys = () => {
      const r = runs[Number($("stat-run").value)];
      fillSelect($("stat-key"), Object.entries(r.step_stats).map(([k, s]) => [k, s.label]),
        $("stat-key").value);
      const s = r.step_stats[$("stat-key").value];
      $("stat-step").max = String(s.steps.length - 1);
      $("stat-step").value = String(s.steps.length - 1);
    };
    $("stat-run").addEventListener("change", () => { refillKeys(); drawStepGrid(); });
    $("stat-key").addEventListener("change", () => { refillKeys(); drawStepGrid(); });
    $("stat-step").addEventListener("input", drawStepGrid);
    refillKeys();
  }
  function drawStepGrid() {
    if (!$("stat-run").value) return;
    const r = runs[Number($("stat-run").value)], s = r.step_stats[$("stat-key").value];
    if (!s) return;
    const i = Math.min(Number($("stat-step").value), s.steps.length - 1);
    const z = s.values[i], L = z.length, H = z[0].length;
    // one colour scale for every step of this statistic, so the slider compares like with like
    const zmax = Math.max(1e-6, ...s.values.map((m) => Math.max(...m.map((row) => Math.max(...row)))));
    $("stat-step-label").textContent = `step ${s.steps[i]} (${i + 1} of ${s.steps.length})`;
    Plotly.react("stepgrid", [{ type: "heatmap", z: z, x: range(H), y: range(L),
      colorscale: "Viridis", zmin: 0, zmax: zmax, xgap: 1, ygap: 1,
      colorbar: { title: { text: "value" }, thickness: 14 },
      hovertemplate: "layer %{y}, head %{x}: %{z:.3f}<extra></extra>" }],
    baseLayout({ height: Math.max(300, Math.min(800, 20 * L + 110)),
      title: { text: `${r.name}: ${s.label}, step ${s.steps[i]}`, font: { size: 13 } },
      xaxis: { title: { text: "head" }, dtick: 1 },
      yaxis: { title: { text: "layer" }, dtick: L > 40 ? undefined : 1 } }), CONFIG);
  }

  // ---------- view 5: streaming perplexity ----------
  function drawStream() {
    const st = DATA.stream;
    const traces = st.records.filter((r) => r.curve && r.curve.tokens).map((r, i) => ({
      x: r.curve.tokens, y: r.curve[state.curve], mode: "lines", name: r.name,
      line: { color: colour(i), dash: r.kind === "cache" ? "solid" : "dash" },
      hovertemplate: `${plotLabel(r.name)} (${plotLabel(r.group || r.kind)})<br>` +
        "%{x} tokens read: perplexity %{y:.2f}<extra></extra>",
    }));
    Plotly.react("stream", traces, baseLayout({
      height: 420, xaxis: { title: { text: "tokens read" } },
      yaxis: { title: { text: state.curve === "ppl_bin" ? `perplexity of each bin of ${st.bin}` +
        " targets" : "cumulative perplexity" }, type: "log" },
      legend: { font: { size: 10 } } }), CONFIG);
  }
  function streamTable() {
    const st = DATA.stream;
    const table = el("table");
    const head = el("tr");
    ["cache", "kind", "sinks", "window", "size", "mode", "perplexity [95 %]",
      "after first eviction", "tokens/s"].forEach((h) => head.appendChild(el("th", {}, h)));
    table.appendChild(head);
    st.records.forEach((r) => {
      const tr = el("tr");
      const after = r.after_eviction ? num(r.after_eviction.ppl, 2) : "–";
      [r.name, r.kind, r.sinks, r.window, r.cache_size, r.mode,
        `${num(r.ppl, 2)} [${num(r.ppl_low, 2)}, ${num(r.ppl_high, 2)}]`, after,
        num(r.tokens_per_second, 0)].forEach((v, i) =>
        tr.appendChild(el("td", i >= 6 ? { class: "num" } : {}, v === null ? "–" : v)));
      table.appendChild(tr);
    });
    $("stream-table").replaceChildren(table);
    document.querySelectorAll("input[name=curve]").forEach((input) =>
      input.addEventListener("change", () => { state.curve = input.value; drawStream(); }));
  }

  // ---------- view 6: settings and sources ----------
  function kvTable(items) {
    const table = el("table");
    Object.entries(items).forEach(([k, v]) => {
      const tr = el("tr");
      tr.appendChild(el("th", {}, k));
      tr.appendChild(el("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : v));
      table.appendChild(tr);
    });
    return table;
  }
  function drawSettings() {
    const box = $("settings");
    (DATA.settings || []).forEach((s, i) => {
      const d = el("details");
      if (i === 0 || DATA.settings.length <= 2) d.open = true;
      d.appendChild(el("summary", {}, s.name));
      d.appendChild(kvTable(s.items || {}));
      Object.entries(s.details || {}).forEach(([k, v]) => {
        if (v === null || v === undefined) return;
        const inner = el("details");
        inner.appendChild(el("summary", {}, k));
        inner.appendChild(typeof v === "object" ? kvTable(v) : el("pre", {}, v));
        d.appendChild(inner);
      });
      box.appendChild(d);
    });
    $("command").textContent = DATA.command || "(not recorded)";
    $("versions").appendChild(kvTable(DATA.versions || {}));
    (DATA.sources || []).forEach((p) => $("sources").appendChild(el("li", {}, p)));
    if ((DATA.notes || []).length) {
      $("notes-block").hidden = false;
      DATA.notes.forEach((n) => $("notes").appendChild(el("li", {}, n)));
    }
  }

  // ---------- wiring ----------
  function redraw() {
    if (profiles.length) { drawGrid(); drawMap(); drawLayers(); }
    if (runs.length) drawTraining();
  }
  $("view-grid").hidden = !profiles.length;
  $("view-map").hidden = !profiles.some((p) => p.maps && Object.keys(p.maps).length);
  $("view-layers").hidden = !profiles.length;
  $("view-training").hidden = !runs.length;
  $("view-stream").hidden = !DATA.stream;
  setupHeader();
  setupToolbar();
  if (runs.length) setupTraining();
  $("window-select").addEventListener("change", (ev) => {
    state.window = Number(ev.target.value); drawMap();
  });
  $("map-scale").addEventListener("change", (ev) => { state.scale = ev.target.value; drawMap(); });
  redraw();
  if (DATA.stream) { streamTable(); drawStream(); }
  drawSettings();
  document.body.setAttribute("data-ready", "1");
})();
