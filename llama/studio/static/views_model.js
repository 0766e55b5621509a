/* llama-from-scratch studio: the model (summary, architecture, parameters, RoPE) and the guided tour.
 * Renderers payload -> SVG, added to LlamaViews.renderers; helpers from views.js. */
(function () {
  "use strict";
  const V = window.LlamaViews;
  const R = V.renderers;
  // eslint-disable-next-line no-unused-vars
  const {SVGNS, FONT, MONO, h, s, svgRoot, clamp, fmtP, fmtN, fmtInt, fmtBytes, showTok, quoteTok, vocabText, tokenLabels, mix, rgb, seqColor, seqRGB, warmRGB, divRGB, textOn, PALETTE, tokenColor, unpack, heatImage, svgImage, tooltip, xLabels, yLabels, legendBar, openSource, matrixMap, orbit} = V._;

  /* ---- the model */
  R.summary = function (p, fig) {
    const cfg = h("table", {class: "ls-table"}, h("tr", null, h("th", {colspan: 2}, "configuration")));
    p.config.forEach(([k, v]) => cfg.append(h("tr", null, h("td", null, k), h("td", {class: "ls-mono"}, v))));
    const total = p.total_params;
    const W = 440, rows = Object.entries(p.params);
    const svg = svgRoot(W, 30 + rows.length * 22, "ls-summary");
    svg.append(s("text", {x: 4, y: 14, "font-weight": "bold"}, `parameters: ${fmtInt(total)} (${(total / 1e6).toFixed(2)} M)`));
    rows.forEach(([k, v], i) => {
      const y = 24 + i * 22;
      svg.append(s("text", {x: 4, y: y + 13}, k));
      svg.append(s("rect", {x: 100, y: y + 3, width: Math.max(v ? 1 : 0, 170 * v / total), height: 14, fill: "#3182bd"}));
      // A tied output matrix is the embedding matrix, counted once under "embedding".
      const note = k === "output" && !v && /^tied/.test(p.tied || "") ? "  (tied: in embedding)" : "";
      svg.append(s("text", {x: 276, y: y + 13, "font-size": 10}, `${fmtInt(v)}  ${(100 * v / total).toFixed(1)}%${note}`));
    });
    const mem = h("table", {class: "ls-table"}, h("tr", null, h("th", {colspan: 3}, "memory")));
    mem.append(h("tr", null, h("td", null, "loaded as"), h("td", {colspan: 2}, p.loaded || "")));
    mem.append(h("tr", null, h("td", null, "output matrix"), h("td", {colspan: 2}, p.tied)));
    Object.entries(p.kv_bytes_per_token).forEach(([k, v]) => mem.append(h("tr", null, h("td", null, "KV cache " + k),
      h("td", null, fmtBytes(v) + " / token"), h("td", null, `${fmtBytes(p.kv_bytes_full[k])} at ${fmtInt(p.max_seq_len)} tokens`))));
    Object.entries(p.weight_bytes).forEach(([k, v]) => mem.append(h("tr", null, h("td", null, "weights as " + k), h("td", {colspan: 2}, fmtBytes(v)))));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, cfg), h("div", {class: "ls-panel"}, svg, mem)));
  };

  R.architecture = function (p, fig, ctx) {
    const d = p.dims;
    const boxes = p.boxes;
    const W = 560, bh = 30, gap = 8;
    const Ht = 40 + boxes.length * (bh + gap) + 30;
    const svg = svgRoot(W, Ht, "ls-arch");
    svg.append(s("text", {x: 8, y: 14, "font-weight": "bold"}, `${p.family} (${p.norm}, ${p.mlp} MLP, ${p.positions === "rope" ? "RoPE" : "learned positions"}): ${d.L} layers, D=${d.D}, F=${d.F}, V=${fmtInt(d.V)}`));
    svg.append(s("text", {x: 8, y: 27, "font-size": 10.5, fill: "#334"}, `H=${d.H} query heads of Hd=${d.Hd}, KV=${d.KV} key/value heads ` +
      (d.n_rep > 1 ? `(grouped-query: ${d.n_rep} query heads share each)` : "(one per query head)")));
    let firstBlock = -1, lastBlock = -1;
    boxes.forEach((b, i) => { if (b.in_block) { if (firstBlock < 0) firstBlock = i; lastBlock = i; } });
    const root = fig.closest(".ls-root") || fig;
    const tip = tooltip(root);
    boxes.forEach((b, i) => {
      const y = 36 + i * (bh + gap), x = b.in_block ? 70 : 40, w = W - x - 20;
      const g = s("g", {class: "ls-arch-box" + (ctx.onSource || true ? " ls-click" : ""), "data-hook": b.hook});
      g.append(s("rect", {x, y, width: w, height: bh, rx: 5, fill: b.in_block ? "#eef4fb" : "#f5f5f5", stroke: "#9ab"}));
      g.append(s("text", {x: x + 8, y: y + 13, "font-family": MONO, "font-size": 11, "font-weight": "bold"}, b.hook));
      g.append(s("text", {x: x + w - 8, y: y + 13, "text-anchor": "end", "font-family": MONO, "font-size": 11, fill: "#225"}, "(" + b.shape.join(", ") + ")"));
      const code = (b.path ? `${b.path}:${b.line}  ` : "") + (b.code || "");
      const fit = Math.floor((w - 16) / 5.9);
      g.append(s("text", {x: x + 8, y: y + 25, "font-family": MONO, "font-size": 9.5, fill: "#666"}, code.length > fit ? code.slice(0, fit - 1) + "…" : code));
      g.addEventListener("mousemove", e => tip.show(e, `${b.hook}: ${b.code || ""} (click for the source)`));
      g.addEventListener("mouseleave", () => tip.hide());
      g.addEventListener("click", () => openSource(root, ctx, {hook: b.hook, path: b.path, line: b.line, end_line: b.line, text: b.code}));
      svg.append(g);
      if (i < boxes.length - 1) svg.append(s("line", {x1: W / 2, x2: W / 2, y1: y + bh, y2: y + bh + gap, stroke: "#9ab"}));
    });
    if (firstBlock >= 0) {
      const y0 = 36 + firstBlock * (bh + gap) - 4, y1 = 36 + lastBlock * (bh + gap) + bh + 4;
      svg.append(s("path", {d: `M 62 ${y0} L 56 ${y0} L 56 ${y1} L 62 ${y1}`, fill: "none", stroke: "#468", "stroke-width": 2}));
      svg.append(s("text", {x: 50, y: (y0 + y1) / 2, "text-anchor": "middle", transform: `rotate(-90 50 ${(y0 + y1) / 2})`, fill: "#468", "font-weight": "bold"}, `× ${d.L} blocks (layers.0 … layers.${d.L - 1})`));
    }
    const ptab = h("table", {class: "ls-table"}, h("tr", null, h("th", {colspan: 2}, "weights of one block (layers.0)")));
    p.block_params.forEach(q => ptab.append(h("tr", null, h("td", {class: "ls-mono"}, q.name), h("td", {class: "ls-mono"}, "(" + q.shape.join(", ") + ")"))));
    ptab.append(h("tr", null, h("th", {colspan: 2}, "outside the blocks")));
    p.top_params.forEach(q => ptab.append(h("tr", null, h("td", {class: "ls-mono"}, q.name), h("td", {class: "ls-mono"}, "(" + q.shape.join(", ") + ")"))));
    ptab.append(h("tr", null, h("td", null, "output"), h("td", null, p.tied ? "tied to tok_embeddings.weight" : "its own matrix")));
    fig.append(h("div", {class: "ls-caption"}, "Shapes as measured on this model (B batch, T new tokens, S keys so far). Click a box for the line that computes it."));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, svg), h("div", {class: "ls-panel"}, ptab)));
  };

  function lineChart(series, xs, title, opts) {
    opts = opts || {};
    const W = opts.width || 300, Ht = opts.height || 170, l = 46, r = 8, t = 20, b = 22;
    const svg = svgRoot(W, Ht, "ls-line");
    const vals = series.flatMap(q => q.values).filter(v => v != null && (!opts.log || v > 0));
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (opts.log) { lo = Math.log10(lo); hi = Math.log10(hi); }
    if (hi === lo) { hi += 1; lo -= 1; }
    const X = i => l + (i / Math.max(1, xs.length - 1)) * (W - l - r);
    const Y = v => t + (1 - ((opts.log ? Math.log10(v) : v) - lo) / (hi - lo)) * (Ht - t - b);
    svg.append(s("text", {x: l, y: 13, "font-weight": "bold", "font-size": 11}, title));
    svg.append(s("rect", {x: l, y: t, width: W - l - r, height: Ht - t - b, fill: "none", stroke: "#ddd"}));
    [lo, (lo + hi) / 2, hi].forEach(v => svg.append(s("text", {x: l - 3, y: Y(opts.log ? Math.pow(10, v) : v) + 3, "text-anchor": "end", class: "ls-axis"}, fmtN(opts.log ? Math.pow(10, v) : v, 2))));
    [0, xs.length - 1].forEach((i, j) => svg.append(s("text", {x: X(i), y: Ht - 8, "text-anchor": j ? "end" : "start", class: "ls-axis"}, xs[i])));
    if (opts.xlabel) svg.append(s("text", {x: (l + W) / 2, y: Ht - 8, "text-anchor": "middle", class: "ls-axis"}, opts.xlabel));
    series.forEach(q => {
      const pts = q.values.map((v, i) => v == null || (opts.log && v <= 0) ? null : `${X(i)},${Y(v)}`).filter(Boolean);
      svg.append(s("polyline", {points: pts.join(" "), fill: "none", stroke: q.color, "stroke-width": 1.6, "stroke-dasharray": q.dash || null}));
    });
    return svg;
  }
  function legend(series) {
    return h("div", {class: "ls-legend"}, series.map(q => h("span", null, h("i", {style: `background:${q.color}`}), q.name)));
  }

  R.params = function (p, fig) {
    const kinds = p.kinds, xs = Array.from({length: p.n_layers}, (_, i) => "L" + i);
    const series = st => kinds.map((k, i) => ({name: p.short[k], color: PALETTE[i % PALETTE.length], values: p.stats[k][st]}));
    const row = h("div", {class: "ls-wrap"});
    [["mean", "mean"], ["std", "standard deviation"], ["norm", "Frobenius norm"], ["absmax", "largest |value|"]].forEach(([st, t]) =>
      row.append(lineChart(series(st), xs, t, {xlabel: "layer", log: st === "norm" || st === "absmax"})));
    fig.append(h("div", {class: "ls-panel"}, h("div", {class: "ls-subtitle"}, "Every weight tensor of every block, layer by layer"), legend(series("mean")), row));
    const hist = h("div", {class: "ls-wrap"});
    kinds.forEach(k => {
      const hh = p.hist[k], edges = hh.edges, n = edges.length - 1;
      const W = 210, Ht = 120, svg = svgRoot(W, Ht, "ls-hist");
      svg.append(s("text", {x: 4, y: 12, "font-weight": "bold"}, p.short[k]));
      const mx = Math.max(...hh.counts.flat()) || 1;
      hh.layers.forEach((L, j) => {
        const pts = hh.counts[j].map((c, i) => `${8 + i * (W - 16) / n},${Ht - 18 - (Ht - 36) * Math.sqrt(c / mx)}`);
        svg.append(s("polyline", {points: pts.join(" "), fill: "none", stroke: ["#1f77b4", "#2ca02c", "#d62728"][j % 3], "stroke-width": 1.2}));
      });
      svg.append(s("text", {x: 8, y: Ht - 4, class: "ls-axis"}, fmtN(edges[0], 2)));
      svg.append(s("text", {x: W - 8, y: Ht - 4, "text-anchor": "end", class: "ls-axis"}, fmtN(edges[n], 2)));
      hist.append(svg);
    });
    const layersShown = p.hist[kinds[0]].layers;
    fig.append(h("div", {class: "ls-panel"}, h("div", {class: "ls-subtitle"}, "Value histograms (square-root scale)"),
      legend(layersShown.map((L, j) => ({name: "layer " + L, color: ["#1f77b4", "#2ca02c", "#d62728"][j % 3]}))), hist));
  };

  R.rope = function (p, fig) {
    const pairs = Array.from({length: p.wavelength.length}, (_, i) => String(i));
    const s1 = [{name: "the model's wavelengths", color: "#1f77b4", values: p.scaling_is_models_own ? p.wavelength_scaled : p.wavelength},
      {name: p.scaling_is_models_own ? "without its Llama 3 scaling" : "with Llama 3.1 scaling (illustrative)", color: "#ff7f0e", dash: "4 3",
        values: p.scaling_is_models_own ? p.wavelength : p.wavelength_scaled}];
    const chart = lineChart(s1, pairs, "tokens per full turn, per dimension pair (log scale)", {log: true, width: 420, height: 220, xlabel: "pair j (dims 2j, 2j+1)"});
    const P = p.positions, J = p.cos[0].length;
    const cw = clamp(Math.floor(360 / J), 3, 12), ch = clamp(Math.floor(300 / P), 1, 6);
    const svg = svgRoot(40 + J * cw + 10, 24 + P * ch + 20, "ls-rope");
    svg.append(s("text", {x: 4, y: 13, "font-weight": "bold"}, `cos(position × frequency), positions 0..${P - 1}`));
    svg.append(svgImage(heatImage(P, J, (r, c) => divRGB(p.cos[r][c], 1), cw, ch), 40, 20, J * cw, P * ch));
    svg.append(s("text", {x: 36, y: 28, "text-anchor": "end", class: "ls-axis"}, "0"));
    svg.append(s("text", {x: 36, y: 20 + P * ch, "text-anchor": "end", class: "ls-axis"}, String(P - 1)));
    svg.append(s("text", {x: 40, y: 20 + P * ch + 14, class: "ls-axis"}, "pair 0 (fast)"));
    svg.append(s("text", {x: 40 + J * cw, y: 20 + P * ch + 14, "text-anchor": "end", class: "ls-axis"}, `pair ${J - 1} (slow)`));
    const sc = p.scaling;
    fig.append(h("div", {class: "ls-caption"}, `head_dim ${p.head_dim}, theta ${fmtInt(p.theta)}; scaling ${p.scaling_is_models_own ? "used by this model" : "not used by this model (the orange curve shows what Llama 3.1's would do)"}: factor ${sc.factor}, low/high ${sc.low_freq_factor}/${sc.high_freq_factor}, original context ${fmtInt(sc.original_max_seq_len)}.`));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, chart, legend(s1)), h("div", {class: "ls-panel"}, svg)));
  };

  /* ---- the guided tour: one stage per page */
  R.tour = function (p, fig, ctx) {
    const root = fig.closest(".ls-root") || fig;
    let i = ctx.initial && ctx.initial.stage != null ? clamp(ctx.initial.stage, 0, p.stages.length - 1) : 0;
    const page = h("div", {class: "ls-tour-page"});
    const prev = h("button", {class: "ls-btn ls-tour-prev", type: "button"}, "← previous");
    const next = h("button", {class: "ls-btn ls-tour-next", type: "button"}, "next →");
    const count = h("span", {class: "ls-caption ls-tour-count"});
    const dots = h("div", {class: "ls-tour-dots"});
    p.stages.forEach((st, j) => {
      const d = h("button", {class: "ls-dot", type: "button", title: st.title}, String(j + 1));
      d.addEventListener("click", () => { i = j; draw(); });
      dots.append(d);
    });
    function draw() {
      const st = p.stages[i];
      page.innerHTML = "";
      page.append(h("h3", {class: "ls-tour-title"}, `${i + 1}. ${st.title}`), h("p", null, st.what));
      st.sources.forEach(src => {
        const a = h("button", {class: "ls-src-link", type: "button"}, `${src.label}: ${src.path}:${src.line}`, h("code", null, "  " + (src.text || "").slice(0, 90)));
        a.addEventListener("click", () => openSource(root, ctx, src));
        page.append(h("div", null, a));
      });
      page.append(h("pre", {class: "ls-pre"}, st.body.join("\n")));
      count.textContent = `stage ${i + 1} of ${p.stages.length}`;
      prev.disabled = i === 0; next.disabled = i === p.stages.length - 1;
      Array.from(dots.children).forEach((d, j) => d.classList.toggle("ls-on", j === i));
      if (ctx.onSelect) ctx.onSelect({stage: i});
    }
    prev.addEventListener("click", () => { if (i > 0) { i--; draw(); } });
    next.addEventListener("click", () => { if (i < p.stages.length - 1) { i++; draw(); } });
    fig.append(h("pre", {class: "ls-pre ls-tour-header"}, p.header.join("\n")),
      h("div", {class: "ls-controls"}, prev, next, count), dots, page);
    draw();
  };

  /* ---- learned position embeddings (GPT-2) */
  R.positions = function (p, fig) {
    const P = p.n_positions, xs = Array.from({length: P}, (_, i) => String(i));
    fig.append(h("div", {class: "ls-subtitle"}, `This model learned one ${fmtInt(p.dim)}-wide vector per position (pos_embeddings, ${fmtInt(p.n_learned)} of them) and adds it to each token's vector before the first block. ${P < p.n_learned ? `Showing positions 0..${P - 1}.` : ""}`));
    const norms = lineChart([{name: "|vector|", color: "#1f77b4", values: p.norms}], xs, "size of each position's vector", {width: 330, height: 180, xlabel: "position"});
    const off = lineChart([{name: "mean cosine", color: "#d62728", values: p.by_offset}], xs, "how alike positions k apart are (mean cosine)", {width: 330, height: 180, xlabel: "distance k"});
    const cos = unpack(p.cosine), n = p.map_positions.length;
    const cell = clamp(Math.floor(300 / n), 1, 8);
    const hm = svgRoot(50 + n * cell + 70, 24 + n * cell + 24, "ls-poscos");
    hm.append(s("text", {x: 4, y: 13, "font-weight": "bold"}, "cosine of positions i and j"));
    hm.append(svgImage(heatImage(n, n, (r, c) => divRGB(cos.data[r * n + c] * 2 - 1, 1), cell, cell), 40, 20, n * cell, n * cell));
    hm.append(s("text", {x: 36, y: 28, "text-anchor": "end", class: "ls-axis"}, "0"));
    hm.append(s("text", {x: 36, y: 20 + n * cell, "text-anchor": "end", class: "ls-axis"}, String(p.map_positions[n - 1])));
    hm.append(s("text", {x: 40 + n * cell, y: 20 + n * cell + 14, "text-anchor": "end", class: "ls-axis"}, `j → ${p.map_positions[n - 1]}`));
    legendBar(hm, 46 + n * cell, 40, 56, "", v => divRGB(2 * v - 1, 1), "−1", "+1");
    const colors = xs.map((_, i) => `hsl(${Math.round(260 * i / Math.max(1, P - 1))}, 70%, 45%)`);
    const every = Math.max(1, Math.ceil(P / 12));
    const v = p.variance || [];
    const path = V.scatter3d(p.coords.map(q => [q[0], q[1] || 0, q[2] || 0]), xs.map((x, i) => i % every === 0 ? x : ""), colors,
      {path: true, r: P > 200 ? 2.2 : 3.5, width: 440, height: 380, title: "the position vectors in 3-D, in order (drag to rotate)",
        footer: "PCA of the vectors; variance explained: " + v.map((x, i) => `PC${i + 1} ${(100 * x).toFixed(1)}%`).join(", ")});
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, norms, off), h("div", {class: "ls-panel"}, hm), h("div", {class: "ls-panel"}, path)));
    fig.append(h("div", {class: "ls-caption"}, "Trained GPT-2 position vectors lie on a smooth curve: neighbours are alike (a bright band along the diagonal) and similarity falls with distance. A random or untrained model shows no such structure. Llama models have no such vectors: they rotate q and k by position inside every attention layer (RoPE)."));
  };

})();
