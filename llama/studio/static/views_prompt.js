/* llama-from-scratch studio: the views of a prompt (next token, attention, logit lens, residual stream).
 * Renderers payload -> SVG, added to LlamaViews.renderers; helpers from views.js. */
(function () {
  "use strict";
  const V = window.LlamaViews;
  const R = V.renderers;
  // eslint-disable-next-line no-unused-vars
  const {SVGNS, FONT, MONO, h, s, svgRoot, clamp, fmtP, fmtN, fmtInt, fmtBytes, showTok, quoteTok, vocabText, tokenLabels, mix, rgb, seqColor, seqRGB, warmRGB, divRGB, textOn, PALETTE, tokenColor, unpack, heatImage, svgImage, tooltip, xLabels, yLabels, legendBar, openSource, matrixMap, orbit} = V._;

  /* ---- next-token table: model probability (grey) and sampling probability (colour) */
  R.topk = R.state = function (p, fig, ctx) {
    if (p.non_finite) { fig.append(h("div", {class: "ls-error"}, p.non_finite.message)); return; }
    const rows = p.candidates || [];
    if (!rows.length) { fig.append(h("div", {class: "ls-note"}, "Type some text to see the next-token table.")); return; }
    const smp = p.sampling || {greedy: true};
    const W = 430, rowH = 22, labW = 120, barW = 190, top = 18;
    const svg = svgRoot(W, top + rows.length * rowH + 8, "ls-topk");
    const tip = tooltip(fig.closest(".ls-root") || fig);
    svg.append(s("text", {x: labW + 6, y: 11, class: "ls-axis"}, "model probability"));
    svg.append(s("text", {x: labW + barW + 10, y: 11, class: "ls-axis"}, smp.greedy ? "greedy pick" : "sampled with"));
    const best = rows[0].prob || 1;
    rows.forEach((c, i) => {
      const y = top + i * rowH;
      const filtered = !smp.greedy && !(c.sample_prob > 0);
      const g = s("g", {class: "ls-cand" + (filtered ? " ls-filtered" : "") + (ctx.onPick ? " ls-click" : ""),
        "data-id": c.id, "data-rank": c.rank});
      g.append(s("rect", {x: 0, y, width: W, height: rowH - 2, fill: "transparent"}));
      g.append(s("text", {x: 18, y: y + 15, "text-anchor": "end", class: "ls-axis"}, c.rank + "."));
      g.append(s("text", {x: 24, y: y + 15, "font-family": MONO, "font-size": 12, class: "ls-piece"}, showTok(c.text, 13)));
      const wModel = (barW - 50) * (c.prob || 0) / best;
      g.append(s("rect", {x: labW, y: y + 3, width: Math.max(1, wModel), height: rowH - 8, class: "ls-bar-model"}));
      g.append(s("text", {x: labW + Math.max(1, wModel) + 4, y: y + 14, "font-size": 10}, fmtP(c.prob)));
      const sp = c.sample_prob || 0;
      g.append(s("rect", {x: labW + barW + 10, y: y + 3, width: Math.max(sp > 0 ? 1 : 0, 60 * sp), height: rowH - 8, class: "ls-bar-sample"}));
      g.append(s("text", {x: labW + barW + 74, y: y + 14, "font-size": 10}, filtered ? "filtered" : smp.greedy && !(sp > 0) ? "" : fmtP(sp)));
      g.addEventListener("mousemove", e => tip.show(e, `${quoteTok(c.text)}  id ${c.id}  logit ${fmtN(c.logit, 3)}  p ${fmtP(c.prob)}` + (ctx.onPick ? "  (click to append)" : "")));
      g.addEventListener("mouseleave", () => tip.hide());
      if (ctx.onPick) g.addEventListener("click", () => ctx.onPick(c.id, c));
      svg.append(g);
    });
    fig.append(svg);
    const kept = smp.greedy ? "temperature 0: greedy, always the top candidate"
      : `temperature ${smp.temperature}, top-k ${smp.top_k || "off"}, top-p ${smp.top_p >= 1 ? "off" : smp.top_p}: sampling keeps ${fmtInt(p.kept)} token${p.kept === 1 ? "" : "s"}`;
    fig.append(h("div", {class: "ls-caption"}, kept));
  };

  /* ---- attention: every layer x head, and one head enlarged */
  R.attention = function (p, fig, ctx) {
    const labels = tokenLabels(p), T = labels.length, H = p.n_heads;
    const maps = unpack(p.probs);  // (n_layers_sent, H, T, T)
    const layers = p.layers;
    const share = p.first_token_share;  // (L, H)
    const root = fig.closest(".ls-root") || fig;
    const tip = tooltip(root);
    const at = (li, hd, q, k) => maps.data[((li * H + hd) * T + q) * T + k];
    // Start on the head that looks least at the first token (the sink): the one with the
    // most visible pattern of its own, rather than on an arbitrary layers.0 head 0.
    const state = {li: 0, head: 0};
    let best = Infinity;
    layers.forEach((L, li) => { for (let hd = 0; hd < H; hd++) { const v = share[L][hd]; if (v != null && v < best) { best = v; state.li = li; state.head = hd; } } });
    if (ctx.initial && ctx.initial.layer != null && layers.indexOf(ctx.initial.layer) >= 0) state.li = layers.indexOf(ctx.initial.layer);
    if (ctx.initial && ctx.initial.head != null) state.head = clamp(ctx.initial.head, 0, H - 1);

    // The grid: one canvas-made image of all thumbnails, labels and share strips in SVG.
    const th = clamp(Math.floor(430 / Math.max(H, 1)) - 8, 24, 44), gap = 7, strip = 11;
    const left = 34, topM = 16;
    const cellW = th + gap, cellH = th + strip + gap;
    const gw = left + H * cellW, gh = topM + layers.length * cellH;
    const gridBox = h("div", {class: "ls-panel"});
    gridBox.append(h("div", {class: "ls-subtitle"}, `All ${layers.length === p.n_layers ? p.n_layers : layers.length} layer${layers.length > 1 ? "s" : ""} × ${H} heads (rows: queries, columns: keys). The orange strip and number under each map: the head's mean attention to the first token (the "attention sink"). Click a map to enlarge it.`));
    const svg = svgRoot(gw, gh + 4, "ls-attn-grid");
    const big = document.createElement("canvas");
    big.width = H * cellW; big.height = layers.length * cellH;
    const bctx = big.getContext("2d");
    bctx.imageSmoothingEnabled = false;
    const small = document.createElement("canvas"); small.width = T; small.height = T;
    const sctx = small.getContext("2d");
    const img = sctx.createImageData(T, T);
    layers.forEach((L, li) => {
      for (let hd = 0; hd < H; hd++) {
        for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {
          const c = k > q ? [250, 250, 250] : seqRGB(at(li, hd, q, k)), o = 4 * (q * T + k);
          img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
        }
        sctx.putImageData(img, 0, 0);
        bctx.drawImage(small, hd * cellW, li * cellH, th, th);
      }
    });
    svg.append(svgImage(big.toDataURL("image/png"), left, topM, big.width, big.height));
    for (let hd = 0; hd < H; hd++) svg.append(s("text", {x: left + hd * cellW + th / 2, y: 11, "text-anchor": "middle", class: "ls-axis"}, "H" + hd));
    const sel = s("rect", {class: "ls-selected", width: th + 4, height: th + 4, fill: "none"});
    layers.forEach((L, li) => {
      svg.append(s("text", {x: left - 4, y: topM + li * cellH + th / 2 + 4, "text-anchor": "end", class: "ls-axis"}, "L" + L));
      for (let hd = 0; hd < H; hd++) {
        const v = share[L][hd], x = left + hd * cellW, y = topM + li * cellH + th + 1;
        svg.append(s("rect", {x, y, width: th, height: strip - 2, fill: "#f3f3f3"}));
        svg.append(s("rect", {x, y, width: th * clamp(v || 0, 0, 1), height: strip - 2, class: "ls-share"}));
        if (th >= 34) svg.append(s("text", {x: x + th - 1, y: y + 8, "text-anchor": "end", "font-size": 8.5, fill: "#333"}, v == null ? "" : v.toFixed(2)));
        const hit = s("rect", {x, y: topM + li * cellH, width: th, height: th + strip, fill: "transparent", class: "ls-click ls-thumb",
          "data-layer": L, "data-head": hd});
        hit.addEventListener("mousemove", e => tip.show(e, `layers.${L}.attention.probs, head ${hd}: first-token share ${v == null ? "n/a" : v.toFixed(3)} (click to enlarge)`));
        hit.addEventListener("mouseleave", () => tip.hide());
        hit.addEventListener("click", () => { state.li = li; state.head = hd; drawHead(); });
        svg.append(hit);
      }
    });
    svg.append(sel);
    gridBox.append(svg);

    // The enlarged head.
    const headBox = h("div", {class: "ls-panel ls-head-panel"});
    function drawHead() {
      const L = layers[state.li], hd = state.head;
      sel.setAttribute("x", left + hd * cellW - 2); sel.setAttribute("y", topM + state.li * cellH - 2);
      headBox.innerHTML = "";
      const kv = Math.floor(hd / (H / p.n_kv_heads));
      headBox.append(h("div", {class: "ls-subtitle"}, `layers.${L}.attention.probs, head ${hd} (reads key/value head ${kv}). Hover a cell, or a token below: what it attends to (blue) and what attends to it (orange).`));
      const cell = clamp(Math.floor(400 / T), 5, 34), lab = 96;
      const W = lab + T * cell + 10, Ht = lab + T * cell + 6;
      const sv = svgRoot(W, Ht, "ls-attn-head");
      const url = heatImage(T, T, (q, k) => (k > q ? [250, 250, 250] : seqRGB(at(state.li, hd, q, k))), cell, cell);
      sv.append(svgImage(url, lab, lab, T * cell, T * cell));
      const g = s("g");
      yLabels(g, labels.map((t, i) => `${t} ${i}`), lab - 4, lab, cell, {size: clamp(cell * 0.75, 7, 11)});
      labels.forEach((t, i) => {
        const x = lab + i * cell + cell / 2;
        g.append(s("text", {x, y: lab - 5, "text-anchor": "start", class: "ls-axis", "font-family": MONO,
          "font-size": clamp(cell * 0.75, 7, 11), transform: `rotate(-60 ${x} ${lab - 5})`}, `${i} ${t}`));
      });
      g.append(s("text", {x: 4, y: 12, class: "ls-axis"}, "query ↓  key →"));
      legendBar(g, 6, 34, 70, "probability", v => seqRGB(v * v), "0", "1", ".25");
      sv.append(g);
      const hl = s("rect", {fill: "none", stroke: "#e6550d", "stroke-width": 2, display: "none"});
      sv.append(hl);
      const hit = s("rect", {x: lab, y: lab, width: T * cell, height: T * cell, fill: "transparent"});
      hit.addEventListener("mousemove", e => {
        const r = sv.getBoundingClientRect(), sc = r.width / W;
        const k = Math.floor(((e.clientX - r.left) / sc - lab) / cell), q = Math.floor(((e.clientY - r.top) / sc - lab) / cell);
        if (q < 0 || k < 0 || q >= T || k >= T) return;
        hl.setAttribute("x", lab + k * cell); hl.setAttribute("y", lab + q * cell);
        hl.setAttribute("width", cell); hl.setAttribute("height", cell); hl.setAttribute("display", "");
        tip.show(e, k > q ? `query ${q} ${labels[q]} cannot see key ${k} ${labels[k]} (causal mask)` :
          `query ${q} ${labels[q]} → key ${k} ${labels[k]}: ${at(state.li, hd, q, k).toFixed(3)}`);
        highlight(q, k);
      });
      hit.addEventListener("mouseleave", () => { hl.setAttribute("display", "none"); tip.hide(); });
      sv.append(hit);
      headBox.append(sv);
      // Token strip: hover a token.
      const strip1 = h("div", {class: "ls-chips"}), strip2 = h("div", {class: "ls-chips"});
      const chips1 = labels.map((t, i) => h("span", {class: "ls-chip", "data-pos": i}, t));
      const chips2 = labels.map((t, i) => h("span", {class: "ls-chip", "data-pos": i}, t));
      const info = h("div", {class: "ls-caption"}, "Hover a token.");
      function paint(pos) {
        chips1.forEach((c, k) => { const v = k <= pos ? at(state.li, hd, pos, k) : 0; c.style.background = rgb(mix([255, 255, 255], [33, 113, 181], Math.sqrt(v))); c.style.color = v > 0.45 ? "#fff" : ""; c.title = `${labels[pos]} attends to ${labels[k]}: ${v.toFixed(3)}`; });
        chips2.forEach((c, q) => { const v = q >= pos ? at(state.li, hd, q, pos) : 0; c.style.background = rgb(mix([255, 255, 255], [230, 85, 13], Math.sqrt(v))); c.style.color = v > 0.45 ? "#fff" : ""; c.title = `${labels[q]} attends to ${labels[pos]}: ${v.toFixed(3)}`; });
        const row = []; for (let k = 0; k <= pos; k++) row.push([at(state.li, hd, pos, k), k]);
        row.sort((a, b) => b[0] - a[0]);
        info.textContent = `${pos} ${labels[pos]} attends most to: ` + row.slice(0, 3).map(([v, k]) => `${labels[k]} (${k}) ${v.toFixed(2)}`).join(", ");
      }
      function highlight(q) { paint(q); }
      [chips1, chips2].forEach(list => list.forEach((c, i) => c.addEventListener("mouseenter", () => paint(i))));
      headBox.append(h("div", {class: "ls-strip-label"}, "attends to (row of the hovered token):"), strip1);
      chips1.forEach(c => strip1.append(c));
      headBox.append(h("div", {class: "ls-strip-label"}, "attended by (its column):"), strip2);
      chips2.forEach(c => strip2.append(c));
      headBox.append(info);
      paint(T - 1);
      if (ctx.onSelect) ctx.onSelect({layer: L, head: hd});
    }
    fig.append(h("div", {class: "ls-row ls-attn-row"}, gridBox, headBox));
    drawHead();
  };

  /* ---- logit lens grid */
  R.lens = function (p, fig, ctx) {
    const labels = tokenLabels(p), T = labels.length, S = p.stages.length;
    const root = fig.closest(".ls-root") || fig;
    const tip = tooltip(root);
    const cw = clamp(Math.floor(900 / Math.max(T, 1)), 46, 78), ch = 17, left = 50, topM = 8, bottom = 140;
    // Wide enough for the legend and the axis note under the grid, however short the text.
    const W = Math.max(left + T * cw + 6, left + 390), Ht = topM + S * ch + bottom;
    const svg = svgRoot(W, Ht, "ls-lens");
    // Last layer on top, embeddings at the bottom: the stream flows upwards.
    const rowY = st => topM + (S - 1 - st) * ch;
    const detail = h("div", {class: "ls-panel ls-lens-detail"}, h("div", {class: "ls-note"}, "Click a cell for its top candidates."));
    for (let st = 0; st < S; st++) {
      svg.append(s("text", {x: left - 4, y: rowY(st) + 12, "text-anchor": "end", class: "ls-axis"}, st === 0 && p.stage0 === "token + position" ? "tok+pos" : p.stages[st]));
      for (let t = 0; t < T; t++) {
        const pr = p.top_probs[st][t], id = p.top_ids[st][t];
        const c = seqRGB(pr);
        const isFinal = id === p.final_ids[t];
        const g = s("g", {class: "ls-click ls-lens-cell", "data-stage": st, "data-pos": t});
        g.append(s("rect", {x: left + t * cw, y: rowY(st), width: cw - 1, height: ch - 1, fill: rgb(c)}));
        g.append(s("text", {x: left + t * cw + 3, y: rowY(st) + 12, "font-family": MONO, "font-size": 10,
          fill: textOn(c), "font-weight": isFinal ? "bold" : null}, showTok(vocabText(p, id), Math.floor(cw / 6.6))));
        g.addEventListener("mousemove", e => tip.show(e, `${p.stage_hooks[st]}, position ${t} (${labels[t]}): top ${quoteTok(vocabText(p, id))} ${fmtP(pr)}; the model's final choice ${quoteTok(vocabText(p, p.final_ids[t]))} has ${fmtP(p.final_probs[st][t])} here`));
        g.addEventListener("mouseleave", () => tip.hide());
        g.addEventListener("click", () => showCell(st, t));
        svg.append(g);
      }
    }
    xLabels(svg, labels.map((l, i) => `${i} ${l}`), left, cw, topM + S * ch + 10, {rotate: true});
    svg.append(s("text", {x: left, y: Ht - 4, class: "ls-axis"}, "position and the token there (each cell guesses the token after it)"));
    legendBar(svg, left, Ht - 40, 150, "probability of the top token", v => seqRGB(v * v), "0", "1", "0.25");
    function showCell(st, t) {
      detail.innerHTML = "";
      detail.append(h("div", {class: "ls-subtitle"}, `${p.stage_hooks[st]} at position ${t} (${labels[t]}): top ${p.k}`));
      const tbl = h("table", {class: "ls-table"});
      p.cand_ids[st][t].forEach((id, r) => {
        const pr = p.cand_probs[st][t][r];
        tbl.append(h("tr", null, h("td", null, r + 1 + "."), h("td", {class: "ls-mono"}, showTok(vocabText(p, id), 18)),
          h("td", null, fmtP(pr)), h("td", null, h("span", {class: "ls-inline-bar", style: `width:${Math.round(80 * pr)}px`}))));
      });
      detail.append(tbl);
    }
    fig.append(h("div", {class: "ls-caption"}, `Each cell: the most likely next token if the model stopped at that layer (final norm + output matrix applied to the residual stream), coloured by its probability; bold = the same as the model's final prediction. Bottom row: ${p.stage0 === "token + position" ? "the token + position embeddings that enter the first block" : "the token embeddings"}; top row: the last block.`));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-scroll"}, svg), detail));
    showCell(S - 1, T - 1);
  };

  /* ---- residual stream: PCA grid, 3-D trajectories, norms */
  function scatter2d(points, labels, colors, size, title, opts) {
    opts = opts || {};
    const svg = svgRoot(size, size + 18, "ls-scatter");
    const every = points.concat(...(opts.paths || []));
    const xs = every.map(q => q[0]), ys = every.map(q => q[1] || 0);
    const pad = 16, padR = 48;
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const sx = v => pad + (v - x0) / ((x1 - x0) || 1) * (size - pad - padR);
    const sy = v => 18 + size - pad - (v - y0) / ((y1 - y0) || 1) * (size - 2 * pad);
    svg.append(s("rect", {x: 0.5, y: 18.5, width: size - 1, height: size - 1, fill: "#fff", stroke: "#ddd"}));
    svg.append(s("text", {x: size / 2, y: 12, "text-anchor": "middle", "font-size": 11, "font-weight": "bold"}, title));
    if (opts.paths) opts.paths.forEach((path, i) => {
      svg.append(s("polyline", {points: path.map(q => `${sx(q[0])},${sy(q[1] || 0)}`).join(" "), fill: "none", stroke: colors[i], "stroke-width": 1.2, opacity: 0.55}));
      svg.append(s("circle", {cx: sx(path[0][0]), cy: sy(path[0][1] || 0), r: 2.5, fill: "none", stroke: colors[i], opacity: 0.7}));
    });
    points.forEach((q, i) => {
      svg.append(s("circle", {cx: sx(q[0]), cy: sy(q[1] || 0), r: 3.5, fill: colors[i]}));
      if (labels[i]) svg.append(s("text", {x: sx(q[0]) + 5, y: sy(q[1] || 0) - 4, "font-size": 9.5, "font-family": MONO, fill: colors[i]}, labels[i]));
    });
    return svg;
  }

  function view3d(traj, labels, colors, stagesLbl, onStage) {
    // A small rotatable 3-D scatter in SVG: drag to turn, the slider picks the stage.
    const W = 460, Ht = 400, box = h("div", {class: "ls-panel"});
    const svg = svgRoot(W, Ht, "ls-3d");
    const S = traj.coords.length, P = labels.length;
    let stage = S - 1, lines = true;
    const all = []; traj.coords.forEach(st => st.forEach(q => all.push(q)));
    const o = orbit(all, W, Ht);
    function draw() {
      svg.innerHTML = "";
      svg.append(s("rect", {x: 0.5, y: 0.5, width: W - 1, height: Ht - 1, fill: "#fcfcff", stroke: "#ddd"}));
      o.axes(svg);
      if (lines) for (let t = 0; t < P; t++) {
        const pts = traj.coords.map(st => o.proj(st[t]));
        svg.append(s("polyline", {points: pts.map(q => `${q[0]},${q[1]}`).join(" "), fill: "none", stroke: colors[t], "stroke-width": 1.1, opacity: 0.45}));
      }
      const pts = traj.coords[stage].map((q, t) => [o.proj(q), t]).sort((a, b) => b[0][2] - a[0][2]);
      for (const [q, t] of pts) {
        svg.append(s("circle", {cx: q[0], cy: q[1], r: 5, fill: colors[t], stroke: "#fff"}));
        svg.append(s("text", {x: q[0] + 6, y: q[1] - 5, "font-size": 10.5, "font-family": MONO, fill: colors[t]}, labels[t]));
      }
      svg.append(s("text", {x: 8, y: 16, "font-size": 11, "font-weight": "bold"}, `dots: the tokens at ${stagesLbl[stage]}; lines: their paths`));
      const v = traj.variance || [];
      svg.append(s("text", {x: 8, y: Ht - 8, "font-size": 10, fill: "#555"}, "one PCA fitted on all stages; variance explained: " + v.map((x, i) => `PC${i + 1} ${(100 * x).toFixed(1)}%`).join(", ")));
    }
    o.attach(svg, draw);
    const slider = h("input", {type: "range", min: 0, max: S - 1, value: stage, class: "ls-stage-slider"});
    const lab = h("span", {class: "ls-caption"}, stagesLbl[stage]);
    slider.addEventListener("input", () => { stage = Number(slider.value); lab.textContent = stagesLbl[stage]; draw(); if (onStage) onStage(stage); });
    const cb = h("input", {type: "checkbox", checked: true});
    cb.addEventListener("change", () => { lines = cb.checked; draw(); });
    box.append(h("div", {class: "ls-subtitle"}, "3-D (drag to rotate): each token's path through the layers"), svg,
      h("div", {class: "ls-controls"}, h("label", null, "stage ", slider), lab, h("label", null, cb, " trajectories")));
    draw();
    return box;
  }

  /* A rotatable 3-D scatter of labelled points (token embeddings, position vectors). */
  function scatter3d(points, labels, colors, opts) {
    opts = opts || {};
    const W = opts.width || 520, Ht = opts.height || 440;
    const svg = svgRoot(W, Ht, "ls-3d ls-scatter3d");
    const o = orbit(points, W, Ht);
    function draw() {
      svg.innerHTML = "";
      svg.append(s("rect", {x: 0.5, y: 0.5, width: W - 1, height: Ht - 1, fill: "#fcfcff", stroke: "#ddd"}));
      o.axes(svg);
      if (opts.path) svg.append(s("polyline", {points: points.map(q => o.proj(q)).map(q => `${q[0]},${q[1]}`).join(" "), fill: "none", stroke: "#8896aa", "stroke-width": 1, opacity: 0.6}));
      const order = points.map((q, i) => [o.proj(q), i]).sort((a, b) => b[0][2] - a[0][2]);
      for (const [q, i] of order) {
        svg.append(s("circle", {cx: q[0], cy: q[1], r: opts.r || 5, fill: colors[i], stroke: "#fff", "stroke-width": opts.r && opts.r < 4 ? 0.5 : 1}));
        if (labels[i]) svg.append(s("text", {x: q[0] + 6, y: q[1] - 5, "font-size": 10.5, "font-family": MONO, fill: colors[i]}, labels[i]));
      }
      if (opts.title) svg.append(s("text", {x: 8, y: 16, "font-size": 11, "font-weight": "bold"}, opts.title));
      if (opts.footer) svg.append(s("text", {x: 8, y: Ht - 8, "font-size": 10, fill: "#555"}, opts.footer));
    }
    o.attach(svg, draw);
    draw();
    return svg;
  }
  V.scatter3d = scatter3d;

  function heatGrid(values, rowLabels, colLabels, title, opts) {
    // values: rows x cols (numbers or null); log colour by default.
    opts = opts || {};
    const R_ = values.length, C = colLabels.length;
    const cw = clamp(Math.floor(520 / Math.max(C, 1)), 12, 40), ch = clamp(Math.floor(360 / Math.max(R_, 1)), 8, 18), left = 44, topM = 20, bottom = 66;
    const svg = svgRoot(left + C * cw + 60, topM + R_ * ch + bottom, "ls-heat");
    const flat = values.flat().filter(v => v != null && v > 0);
    const lo = Math.log(Math.min(...flat)), hi = Math.log(Math.max(...flat));
    const t = v => v == null || v <= 0 ? 0 : (Math.log(v) - lo) / ((hi - lo) || 1);
    const url = heatImage(R_, C, (r, c) => values[R_ - 1 - r][c] == null ? [220, 220, 220] : warmRGB(t(values[R_ - 1 - r][c])), cw, ch);
    svg.append(s("text", {x: left, y: 13, "font-size": 11, "font-weight": "bold"}, title));
    svg.append(svgImage(url, left, topM, C * cw, R_ * ch));
    const step = Math.max(1, Math.ceil(R_ / 16));
    rowLabels.forEach((l, r) => { if (r % step === 0 || r === R_ - 1) svg.append(s("text", {x: left - 4, y: topM + (R_ - 1 - r) * ch + ch / 2 + 3.5, "text-anchor": "end", class: "ls-axis"}, l)); });
    xLabels(svg, colLabels, left, cw, topM + R_ * ch + 10, {rotate: true});
    const tipRoot = opts.tipRoot;
    if (tipRoot) {
      const tip = tooltip(tipRoot);
      const hit = s("rect", {x: left, y: topM, width: C * cw, height: R_ * ch, fill: "transparent"});
      hit.addEventListener("mousemove", e => {
        const r = svg.getBoundingClientRect(), sc = r.width / Number(svg.getAttribute("width"));
        const c = Math.floor(((e.clientX - r.left) / sc - left) / cw), rr = R_ - 1 - Math.floor(((e.clientY - r.top) / sc - topM) / ch);
        if (c < 0 || c >= C || rr < 0 || rr >= R_) return;
        tip.show(e, `${rowLabels[rr]}, ${colLabels[c]}: ${fmtN(values[rr][c])}`);
      });
      hit.addEventListener("mouseleave", () => tip.hide());
      svg.append(hit);
    }
    // Legend: log scale.
    const lg = s("g");
    const lx = left + C * cw + 14;
    for (let i = 0; i < 30; i++) lg.append(s("rect", {x: lx, y: topM + (29 - i) * (R_ * ch / 30), width: 10, height: R_ * ch / 30 + 0.5, fill: rgb(warmRGB(i / 29))}));
    lg.append(s("text", {x: lx, y: topM - 4, class: "ls-axis"}, fmtN(Math.exp(hi), 1)));
    lg.append(s("text", {x: lx, y: topM + R_ * ch + 12, class: "ls-axis"}, fmtN(Math.exp(lo), 2)));
    svg.append(lg);
    return svg;
  }

  R.residual = function (p, fig, ctx) {
    const labels = tokenLabels(p);
    const root = fig.closest(".ls-root") || fig;
    const pos = p.positions;
    const lbl = pos.map(i => labels[i]);
    const colors = pos.map((_, i) => tokenColor(i, pos.length));
    if (p.grid) {
      const grid = h("div", {class: "ls-panel"});
      grid.append(h("div", {class: "ls-subtitle"}, "PCA in 2-D, fitted separately at each depth (axes: the two directions of largest variance among these tokens)"));
      const row = h("div", {class: "ls-wrap"});
      p.grid.forEach(g => row.append(scatter2d(g.coords, lbl, colors, 210, `${g.label}  (${(100 * g.variance[0]).toFixed(0)}% + ${(100 * (g.variance[1] || 0)).toFixed(0)}%)`)));
      grid.append(row);
      fig.append(grid);
      const S = p.trajectory.coords.length;
      const paths = pos.map((_, t) => p.trajectory.coords.map(st => st[t]));
      const last = p.trajectory.coords[S - 1];
      const flat = h("div", {class: "ls-panel"}, h("div", {class: "ls-subtitle"}, "2-D trajectories: every token from its embedding (faint start) to the last layer (dot), one PCA over all stages (vectors RMS-normalised first)"),
        scatter2d(last, lbl, colors, 400, "PC1 × PC2, all stages", {paths}));
      fig.append(h("div", {class: "ls-row"}, view3d(p.trajectory, lbl, colors, p.stages), flat));
    }
    const norms = h("div", {class: "ls-panel"}, h("div", {class: "ls-subtitle"}, "Activation sizes (log colour): a token whose row is far darker than the others carries a \"massive activation\"."));
    const row = h("div", {class: "ls-wrap"});
    row.append(heatGrid(p.resid_norm, p.stages, labels.map((l, i) => `${i} ${l}`), "residual stream L2 norm", {tipRoot: root}));
    const act = p.mlp === "GELU" ? "gelu(up)" : "silu(gate)·up";
    row.append(heatGrid(p.mlp_max_abs, p.stages.slice(1), labels.map((l, i) => `${i} ${l}`), `MLP: largest |${act}|`, {tipRoot: root}));
    norms.append(row);
    fig.append(norms);
  };

  /* ---- token embeddings: the text's distinct token vectors in 3-D */
  R.embeddings = function (p, fig) {
    if (!p.coords) { fig.append(h("div", {class: "ls-note"}, "Type a text with at least two different tokens.")); return; }
    const labels = p.ids.map(id => showTok(vocabText(p, id), 14));
    const colors = p.ids.map((_, i) => tokenColor(i, p.ids.length));
    const v = p.variance || [];
    const pts = p.coords.map(q => [q[0], q[1] || 0, q[2] || 0]);
    fig.append(h("div", {class: "ls-subtitle"}, `The ${p.ids.length} distinct tokens of your text: their rows of tok_embeddings.weight (${fmtInt(p.vocab_size)} × ${fmtInt(p.dim)}), projected on the top 3 principal components of these rows. Tokens close together start out alike to the model.`));
    const svg = V.scatter3d(pts, labels, colors, {title: "token vectors, PCA in 3-D (drag to rotate)",
      footer: "variance explained: " + v.map((x, i) => `PC${i + 1} ${(100 * x).toFixed(1)}%`).join(", ")});
    const tbl = h("table", {class: "ls-table"}, h("tr", null, h("th", null, "token"), h("th", null, "id"), h("th", null, "first at"), h("th", null, "|vector|")));
    p.ids.forEach((id, i) => tbl.append(h("tr", null, h("td", {class: "ls-mono", style: `color:${colors[i]}`}, labels[i]),
      h("td", null, String(id)), h("td", null, String(p.positions[i])), h("td", null, fmtN(p.norms[i], 3)))));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, svg), h("div", {class: "ls-panel"}, tbl)));
    fig.append(h("div", {class: "ls-caption"}, "A token's embedding does not depend on where it stands, so a repeated token is one point. The residual stream view's stage 0 (embed) is what enters the first block" + (p.family === "GPT-2" ? " (for GPT-2 that adds each position's vector)." : ".")));
  };

})();
