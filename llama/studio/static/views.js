/* llama-from-scratch studio: the view renderers.
 *
 * One file, plain JavaScript, no dependencies, no network: the page served by
 * `llama-studio`, every exported HTML file and every Jupyter view run this same code.
 * A renderer turns one JSON payload (schemas in docs/STUDIO.md) into SVG and a little
 * HTML; nothing here talks to the server. The page passes callbacks (pick a candidate,
 * open a source line) through `ctx`; a standalone copy has none and shows the source
 * snippet that travels inside the payload instead.
 *
 *   LlamaViews.mount(element, payload, ctx)   -> draws the view (header, figure, sources)
 *   LlamaViews.exportSVG(element)             -> one SVG string of the view's figure
 *   LlamaViews.exportPNG(element, scale)      -> Promise of a PNG data URL
 */
(function () {
  "use strict";
  const SVGNS = "http://www.w3.org/2000/svg";
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif';
  const MONO = 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace';

  // ---------------------------------------------------------------- small helpers
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
  }
  function svgRoot(width, height, cls) {
    return s("svg", {xmlns: SVGNS, width, height, viewBox: `0 0 ${width} ${height}`,
      class: "ls-svg " + (cls || ""), "font-family": FONT, "font-size": 11});
  }
  function clamp(x, lo, hi) { return Math.max(lo, Math.min(hi, x)); }
  function fmtP(p) {
    if (p == null) return "n/a";
    if (p >= 0.99995) return "1.0000";
    if (p > 0 && p < 0.0001) return p.toExponential(1);
    return p.toFixed(4);
  }
  function fmtN(x, d) {
    if (x == null) return "n/a";
    const a = Math.abs(x);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(d == null ? 2 : d);
    return x.toFixed(d == null ? (a >= 100 ? 1 : a >= 1 ? 3 : 4) : d);
  }
  function fmtInt(n) { return n == null ? "n/a" : Number(n).toLocaleString("en-US"); }
  function fmtBytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; n = Number(n);
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 2 : 0)} ${u[i]}`;
  }
  /* A token's text with the invisible made visible: a space as ␣, a newline as ↵. */
  function showTok(t, max) {
    if (t == null) return "?";
    let v = String(t).replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍");
    if (v === "") v = "∅";
    max = max || 16;
    return v.length > max ? v.slice(0, max - 1) + "…" : v;
  }
  function quoteTok(t) { return JSON.stringify(String(t)); }
  function vocabText(p, id) {
    if (p.vocab && p.vocab[String(id)] != null) return p.vocab[String(id)];
    return "#" + id;
  }
  function tokenLabels(p) { return (p.tokens || []).map(t => showTok(t.text, 12)); }

  // Colour scales: sequential (white -> deep blue), diverging (red - white - blue),
  // and a warm one for "how big" (norms). All return CSS rgb() strings.
  function mix(a, b, t) { return a.map((x, i) => Math.round(x + (b[i] - x) * t)); }
  const BLUES = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const WARM = [[255, 255, 229], [254, 217, 118], [253, 141, 60], [227, 26, 28], [103, 0, 13]];
  function ramp(stops, t) {
    t = clamp(t, 0, 1) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t));
    return mix(stops[i], stops[i + 1], t - i);
  }
  function rgb(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }
  function seqColor(v) { return rgb(seqRGB(v)); }
  function seqRGB(v) { return v == null ? [220, 220, 220] : ramp(BLUES, Math.sqrt(clamp(v, 0, 1))); }
  function warmRGB(t) { return ramp(WARM, t); }
  function divRGB(v, max) {
    if (v == null || !isFinite(v)) return [220, 220, 220];
    const t = clamp(Math.abs(v) / (max || 1), 0, 1);
    return v >= 0 ? mix([255, 255, 255], [33, 102, 172], t) : mix([255, 255, 255], [178, 24, 43], t);
  }
  function textOn(c) { return (c[0] * 0.299 + c[1] * 0.587 + c[2] * 0.114) < 140 ? "#fff" : "#111"; }
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  function tokenColor(i, n) {
    if (n <= PALETTE.length) return PALETTE[i % PALETTE.length];
    return `hsl(${Math.round(300 * i / Math.max(1, n - 1))}, 65%, 42%)`;
  }

  /* Attention probabilities arrive as base64 little-endian uint16, value = q / 65535. */
  function unpack(packed) {
    const bin = atob(packed.data);
    const n = bin.length >> 1;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) * packed.scale;
    return {shape: packed.shape, data: out};
  }

  /* A heatmap as an <image> (a PNG data URL drawn at its display size, so exports and
   * zooming stay sharp). get(r, c) -> [r, g, b]. */
  function heatImage(rows, cols, get, cw, ch) {
    const cv = document.createElement("canvas");
    cv.width = cols; cv.height = rows;
    const ctx = cv.getContext("2d");
    const img = ctx.createImageData(cols, rows);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const v = get(r, c), o = 4 * (r * cols + c);
      img.data[o] = v[0]; img.data[o + 1] = v[1]; img.data[o + 2] = v[2]; img.data[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const big = document.createElement("canvas");
    big.width = Math.max(1, Math.round(cols * cw)); big.height = Math.max(1, Math.round(rows * ch));
    const bctx = big.getContext("2d");
    bctx.imageSmoothingEnabled = false;
    bctx.drawImage(cv, 0, 0, big.width, big.height);
    return big.toDataURL("image/png");
  }
  function svgImage(url, x, y, w, hgt, attrs) {
    return s("image", Object.assign({href: url, x, y, width: w, height: hgt, preserveAspectRatio: "none"}, attrs || {}));
  }

  // ---------------------------------------------------------------- tooltip
  function tooltip(root) {
    let tip = root.querySelector(":scope > .ls-tip");
    if (!tip) { tip = h("div", {class: "ls-tip"}); root.append(tip); }
    return {
      show(evt, html) {
        tip.innerHTML = "";
        tip.append(html instanceof Node ? html : document.createTextNode(String(html)));
        tip.style.display = "block";
        const r = root.getBoundingClientRect();
        let x = evt.clientX - r.left + 14, y = evt.clientY - r.top + 14;
        const w = tip.offsetWidth;
        if (x + w > root.clientWidth) x = Math.max(0, evt.clientX - r.left - w - 10);
        tip.style.left = x + "px"; tip.style.top = y + "px";
      },
      hide() { tip.style.display = "none"; },
    };
  }

  // ---------------------------------------------------------------- axis labels
  function xLabels(g, labels, x0, step, y, opts) {
    opts = opts || {};
    labels.forEach((lab, i) => {
      const x = x0 + i * step + step / 2;
      g.append(s("text", {x, y, "text-anchor": opts.rotate ? "end" : "middle", class: "ls-axis",
        transform: opts.rotate ? `rotate(-55 ${x} ${y})` : null, "font-family": MONO,
        "font-size": opts.size || 10}, lab));
    });
  }
  function yLabels(g, labels, x, y0, step, opts) {
    opts = opts || {};
    labels.forEach((lab, i) => {
      g.append(s("text", {x, y: y0 + i * step + step / 2 + 3.5, "text-anchor": "end", class: "ls-axis",
        "font-family": opts.mono === false ? FONT : MONO, "font-size": opts.size || 10}, lab));
    });
  }
  function legendBar(g, x, y, w, label, colorAt, lo, hi) {
    const n = 40;
    for (let i = 0; i < n; i++) g.append(s("rect", {x: x + i * w / n, y, width: w / n + 0.5, height: 8, fill: rgb(colorAt(i / (n - 1)))}));
    g.append(s("text", {x, y: y + 19, class: "ls-axis"}, lo));
    g.append(s("text", {x: x + w, y: y + 19, "text-anchor": "end", class: "ls-axis"}, hi));
    g.append(s("text", {x: x + w / 2, y: y - 3, "text-anchor": "middle", class: "ls-axis"}, label));
  }

  // ================================================================ renderers
  const R = {};

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
    const cw = clamp(Math.floor(900 / Math.max(T, 1)), 46, 78), ch = 17, left = 44, topM = 8, bottom = 104;
    const W = left + T * cw + 6, Ht = topM + S * ch + bottom;
    const svg = svgRoot(W, Ht, "ls-lens");
    // Last layer on top, embeddings at the bottom: the stream flows upwards.
    const rowY = st => topM + (S - 1 - st) * ch;
    const detail = h("div", {class: "ls-panel ls-lens-detail"}, h("div", {class: "ls-note"}, "Click a cell for its top candidates."));
    for (let st = 0; st < S; st++) {
      svg.append(s("text", {x: left - 4, y: rowY(st) + 12, "text-anchor": "end", class: "ls-axis"}, p.stages[st]));
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
    legendBar(svg, Math.max(left, W - 170), Ht - 22, 150, "probability of the top token", v => seqRGB(v * v), "0", "1");
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
    fig.append(h("div", {class: "ls-caption"}, "Each cell: the most likely next token if the model stopped at that layer (final norm + output matrix applied to the residual stream), coloured by its probability; bold = the same as the model's final prediction. Bottom row: the embeddings; top row: the last block."));
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
    let yaw = 0.7, pitch = 0.35, stage = S - 1, lines = true;
    let all = []; traj.coords.forEach(st => st.forEach(q => all.push(q)));
    const mean = [0, 1, 2].map(d => all.reduce((a, q) => a + (q[d] || 0), 0) / all.length);
    const rad = Math.max(...all.map(q => Math.hypot((q[0] || 0) - mean[0], (q[1] || 0) - mean[1], (q[2] || 0) - mean[2]))) || 1;
    function proj(q) {
      const x = ((q[0] || 0) - mean[0]) / rad, y = ((q[1] || 0) - mean[1]) / rad, z = ((q[2] || 0) - mean[2]) / rad;
      const cx = Math.cos(yaw) * x + Math.sin(yaw) * z, cz = -Math.sin(yaw) * x + Math.cos(yaw) * z;
      const cy = Math.cos(pitch) * y - Math.sin(pitch) * cz, dz = Math.sin(pitch) * y + Math.cos(pitch) * cz;
      const f = 1 / (1 + 0.25 * dz + 0.25);
      return [W / 2 + cx * 150 * f * 1.25, Ht / 2 - cy * 150 * f * 1.25, dz];
    }
    function draw() {
      svg.innerHTML = "";
      svg.append(s("rect", {x: 0.5, y: 0.5, width: W - 1, height: Ht - 1, fill: "#fcfcff", stroke: "#ddd"}));
      const o = proj(mean);
      ["PC1", "PC2", "PC3"].forEach((name, d) => {
        const q = mean.slice(); q[d] += rad * 0.7; const e = proj(q);
        svg.append(s("line", {x1: o[0], y1: o[1], x2: e[0], y2: e[1], stroke: "#999", "stroke-dasharray": "3 3"}));
        svg.append(s("text", {x: e[0] + 3, y: e[1], "font-size": 10, fill: "#666"}, name));
      });
      if (lines) for (let t = 0; t < P; t++) {
        const pts = traj.coords.map(st => proj(st[t]));
        svg.append(s("polyline", {points: pts.map(q => `${q[0]},${q[1]}`).join(" "), fill: "none", stroke: colors[t], "stroke-width": 1.1, opacity: 0.45}));
      }
      const pts = traj.coords[stage].map((q, t) => [proj(q), t]).sort((a, b) => b[0][2] - a[0][2]);
      for (const [q, t] of pts) {
        svg.append(s("circle", {cx: q[0], cy: q[1], r: 5, fill: colors[t], stroke: "#fff"}));
        svg.append(s("text", {x: q[0] + 6, y: q[1] - 5, "font-size": 10.5, "font-family": MONO, fill: colors[t]}, labels[t]));
      }
      svg.append(s("text", {x: 8, y: 16, "font-size": 11, "font-weight": "bold"}, `stage ${stagesLbl[stage]} (one PCA fitted on all stages; drag to rotate)`));
      const v = traj.variance || [];
      svg.append(s("text", {x: 8, y: Ht - 8, "font-size": 10, fill: "#555"}, "variance explained: " + v.map((x, i) => `PC${i + 1} ${(100 * x).toFixed(1)}%`).join(", ")));
    }
    let drag = null;
    svg.addEventListener("pointerdown", e => { drag = [e.clientX, e.clientY, yaw, pitch]; svg.setPointerCapture(e.pointerId); });
    svg.addEventListener("pointermove", e => { if (!drag) return; yaw = drag[2] + (e.clientX - drag[0]) / 120; pitch = clamp(drag[3] + (e.clientY - drag[1]) / 120, -1.5, 1.5); draw(); });
    svg.addEventListener("pointerup", () => { drag = null; });
    const slider = h("input", {type: "range", min: 0, max: S - 1, value: stage, class: "ls-stage-slider"});
    const lab = h("span", {class: "ls-caption"}, stagesLbl[stage]);
    slider.addEventListener("input", () => { stage = Number(slider.value); lab.textContent = stagesLbl[stage]; draw(); if (onStage) onStage(stage); });
    const cb = h("input", {type: "checkbox", checked: true});
    cb.addEventListener("change", () => { lines = cb.checked; draw(); });
    box.append(h("div", {class: "ls-subtitle"}, "3-D: each token's path through the layers"), svg,
      h("div", {class: "ls-controls"}, h("label", null, "stage ", slider), lab, h("label", null, cb, " trajectories")));
    draw();
    box._rotate = (dy, dp) => { yaw += dy; pitch += dp; draw(); };
    return box;
  }

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
    row.append(heatGrid(p.mlp_max_abs, p.stages.slice(1), labels.map((l, i) => `${i} ${l}`), "MLP: largest |silu(gate)·up|", {tipRoot: root}));
    norms.append(row);
    fig.append(norms);
  };

  /* ---- saliency */
  R.saliency = function (p, fig, ctx) {
    const labels = tokenLabels(p), T = labels.length;
    const sc = p.scores, max = Math.max(...sc.map(v => Math.abs(v || 0))) || 1;
    const root = fig.closest(".ls-root") || fig;
    const tip = tooltip(root);
    fig.append(h("div", {class: "ls-subtitle"}, `Explaining ${quoteTok(vocabText(p, p.target))} (id ${p.target}, p = ${fmtP(p.target_prob)}) after position ${p.position}: input × gradient of log p. Blue raised it, red lowered it.`));
    const cw = clamp(Math.floor(860 / T), 40, 90), W = 40 + T * cw, Ht = 200;
    const svg = svgRoot(W, Ht, "ls-saliency");
    const mid = 110;
    labels.forEach((l, i) => {
      const v = sc[i], c = divRGB(v, max);
      const x = 30 + i * cw;
      svg.append(s("rect", {x, y: 6, width: cw - 3, height: 24, rx: 4, fill: rgb(c), stroke: "#bbb"}));
      svg.append(s("text", {x: x + (cw - 3) / 2, y: 22, "text-anchor": "middle", "font-family": MONO, "font-size": 11, fill: textOn(c)}, showTok(p.tokens[i].text, Math.floor(cw / 7))));
      const bh = 60 * Math.abs(v || 0) / max;
      svg.append(s("rect", {x: x + 4, y: v >= 0 ? mid - bh : mid, width: cw - 11, height: Math.max(0.5, bh), fill: v >= 0 ? "#2166ac" : "#b2182b"}));
      svg.append(s("text", {x: x + (cw - 3) / 2, y: Ht - 10, "text-anchor": "middle", "font-size": 9.5}, fmtN(v, 3)));
      const hit = s("rect", {x, y: 0, width: cw, height: Ht, fill: "transparent"});
      hit.addEventListener("mousemove", e => tip.show(e, `${i} ${quoteTok(p.tokens[i].text)}: input×gradient ${fmtN(v, 4)}, |gradient| ${fmtN(p.grad_norm[i], 3)}`));
      hit.addEventListener("mouseleave", () => tip.hide());
      svg.append(hit);
    });
    svg.append(s("line", {x1: 26, x2: W - 4, y1: mid, y2: mid, stroke: "#888"}));
    fig.append(h("div", {class: "ls-scroll"}, svg));
  };

  /* ---- direct logit attribution */
  R.dla = function (p, fig, ctx) {
    const L = p.attn.length, H = p.heads[0].length;
    const root = fig.closest(".ls-root") || fig;
    const tip = tooltip(root);
    const what = p.contrast == null ? `the logit of ${quoteTok(vocabText(p, p.target))}` :
      `logit(${quoteTok(vocabText(p, p.target))}) − logit(${quoteTok(vocabText(p, p.contrast))})`;
    fig.append(h("div", {class: "ls-subtitle"}, `${what} at position ${p.position} = ${fmtN(p.logit, 4)}; the parts below add up to ${fmtN(p.total, 4)} (final norm's scale frozen at ${fmtN(p.norm_scale, 4)}).`));
    const all = [p.parts.find(q => q.group === "embed").value].concat(p.attn, p.mlp).map(Math.abs);
    const max = Math.max(...all) || 1;
    const bw = clamp(Math.floor(600 / (2 * L + 1)), 4, 20), W = 60 + (2 * L + 1) * bw, Ht = 240, mid = 120;
    const svg = svgRoot(Math.max(W, 300), Ht, "ls-dla");
    svg.append(s("text", {x: 8, y: 14, "font-weight": "bold"}, "per block: attention (purple) and MLP (green)"));
    svg.append(s("line", {x1: 50, x2: W, y1: mid, y2: mid, stroke: "#888"}));
    const bars = [["embed", p.parts.find(q => q.group === "embed").value, "#777"]];
    for (let i = 0; i < L; i++) { bars.push([`L${i} attn`, p.attn[i], "#7b3294"]); bars.push([`L${i} MLP`, p.mlp[i], "#1b7837"]); }
    bars.forEach(([name, v, col], i) => {
      const x = 54 + i * bw, bh = 95 * Math.abs(v || 0) / max;
      const r = s("rect", {x, y: v >= 0 ? mid - bh : mid, width: bw - 2, height: Math.max(0.5, bh), fill: col});
      r.addEventListener("mousemove", e => tip.show(e, `${name}: ${fmtN(v, 4)}`));
      r.addEventListener("mouseleave", () => tip.hide());
      svg.append(r);
      if (i === 0 || (i > 1 && i % 2 === 1 && ((i - 1) / 2) % Math.max(1, Math.ceil(L / 8)) === 0)) svg.append(s("text", {x: x + (i === 0 ? bw / 2 : bw), y: Ht - 6, "text-anchor": "middle", class: "ls-axis"}, i === 0 ? "emb" : `L${(i - 1) / 2}`));
    });
    svg.append(s("text", {x: 46, y: mid - 92, "text-anchor": "end", class: "ls-axis"}, "+" + fmtN(max, 2)));
    svg.append(s("text", {x: 46, y: mid + 98, "text-anchor": "end", class: "ls-axis"}, "−" + fmtN(max, 2)));
    // Heads: L x H diverging map.
    const hmax = Math.max(...p.heads.flat().map(v => Math.abs(v || 0))) || 1;
    const cw = 22, ch = clamp(Math.floor(300 / L), 8, 16), left = 36;
    const hs = svgRoot(left + H * cw + 70, 24 + L * ch + 10, "ls-dla-heads");
    hs.append(s("text", {x: 4, y: 13, "font-weight": "bold"}, "each head (blue +, red −)"));
    const url = heatImage(L, H, (r, c) => divRGB(p.heads[r][c], hmax), cw, ch);
    hs.append(svgImage(url, left, 20, H * cw, L * ch));
    for (let i = 0; i < L; i += Math.max(1, Math.ceil(L / 15))) hs.append(s("text", {x: left - 3, y: 20 + i * ch + ch - 2, "text-anchor": "end", class: "ls-axis"}, "L" + i));
    for (let j = 0; j < H; j++) hs.append(s("text", {x: left + j * cw + cw / 2, y: 20 + L * ch + 9, "text-anchor": "middle", class: "ls-axis"}, "H" + j));
    const hit = s("rect", {x: left, y: 20, width: H * cw, height: L * ch, fill: "transparent"});
    hit.addEventListener("mousemove", e => {
      const r = hs.getBoundingClientRect(), sc = r.width / Number(hs.getAttribute("width"));
      const c = Math.floor(((e.clientX - r.left) / sc - left) / cw), rr = Math.floor(((e.clientY - r.top) / sc - 20) / ch);
      if (c >= 0 && c < H && rr >= 0 && rr < L) tip.show(e, `layer ${rr} head ${c}: ${fmtN(p.heads[rr][c], 4)}`);
    });
    hit.addEventListener("mouseleave", () => tip.hide());
    hs.append(hit);
    legendBar(hs, left + H * cw + 8, 40, 56, "", v => divRGB(2 * v - 1, 1), "−" + fmtN(hmax, 1), "+");
    // Top parts.
    const top = p.parts.slice().sort((a, b) => Math.abs(b.value || 0) - Math.abs(a.value || 0)).slice(0, 12);
    const tbl = h("table", {class: "ls-table"}, h("tr", null, h("th", null, "largest parts"), h("th", null, "logit")));
    top.forEach(q => tbl.append(h("tr", null, h("td", {class: "ls-mono"}, q.name), h("td", {class: q.value >= 0 ? "ls-pos" : "ls-neg"}, fmtN(q.value, 4)))));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, svg), h("div", {class: "ls-panel"}, hs), h("div", {class: "ls-panel"}, tbl)));
  };

  /* ---- interventions: clean and edited next-token tables side by side */
  R.intervene = function (p, fig, ctx) {
    fig.append(h("div", {class: "ls-subtitle"}, "Edit: " + p.description));
    if (p.non_finite) { fig.append(h("div", {class: "ls-error"}, p.non_finite.message)); return; }
    const clean = p.clean, edited = p.edited;
    const summary = p.top_changed ? `The top token changed: ${quoteTok(vocabText(p, p.clean_top))} → ${quoteTok(vocabText(p, p.edited_top))}.`
      : `The top token stays ${quoteTok(vocabText(p, p.clean_top))}: p ${fmtP(p.clean_top_prob)} → ${fmtP(p.edited_top_prob)}.`;
    fig.append(h("div", {class: "ls-caption ls-intervene-summary"}, `${summary} KL(clean ‖ edited) = ${fmtN(p.kl, 4)}; largest logit change ${fmtN(p.max_abs_logit_change, 3)}.`));
    const W = 620, rowH = 20, n = Math.max(clean.length, edited.length);
    const svg = svgRoot(W, 26 + n * rowH + 18, "ls-intervene");
    const cleanIds = new Set(clean.map(c => c.id));
    [[clean, "clean run", 0], [edited, "edited run", 280]].forEach(([rows, title, x0]) => {
      svg.append(s("text", {x: x0 + 4, y: 14, "font-weight": "bold"}, title));
      const best = Math.max(clean.length ? clean[0].prob || 0 : 0, edited.length ? edited[0].prob || 0 : 0) || 1;
      rows.forEach((c, i) => {
        const y = 22 + i * rowH, isNew = x0 && !cleanIds.has(c.id);
        if (isNew) svg.append(s("rect", {x: x0, y: y + 1, width: 100, height: rowH - 3, fill: "#fff1cc"}));
        svg.append(s("text", {x: x0 + 4, y: y + 13, "font-family": MONO, "font-size": 11}, showTok(c.text, 12)));
        svg.append(s("rect", {x: x0 + 104, y: y + 3, width: Math.max(1, 100 * (c.prob || 0) / best), height: rowH - 7, fill: x0 ? "#e6550d" : "#3182bd"}));
        svg.append(s("text", {x: x0 + 208, y: y + 13, "font-size": 10}, fmtP(c.prob)));
        if (x0 && c.clean_prob != null) {
          const d = (c.prob || 0) - c.clean_prob;
          svg.append(s("text", {x: x0 + 250, y: y + 13, "font-size": 10, fill: d >= 0 ? "#1f5fa6" : "#a61f2d"}, `${d >= 0 ? "+" : "−"}${fmtP(Math.abs(d))}`));
        }
      });
    });
    svg.append(s("text", {x: 4, y: 26 + n * rowH + 12, class: "ls-axis"}, "Bars share one scale. Right column: change from the clean run's probability of the same token; yellow: not in the clean top list."));
    fig.append(h("div", {class: "ls-panel"}, svg));
  };

  /* ---- the model */
  R.summary = function (p, fig) {
    const cfg = h("table", {class: "ls-table"}, h("tr", null, h("th", {colspan: 2}, "configuration")));
    p.config.forEach(([k, v]) => cfg.append(h("tr", null, h("td", null, k), h("td", {class: "ls-mono"}, v))));
    const total = p.total_params;
    const W = 380, rows = Object.entries(p.params);
    const svg = svgRoot(W, 30 + rows.length * 22, "ls-summary");
    svg.append(s("text", {x: 4, y: 14, "font-weight": "bold"}, `parameters: ${fmtInt(total)} (${(total / 1e6).toFixed(2)} M)`));
    rows.forEach(([k, v], i) => {
      const y = 24 + i * 22;
      svg.append(s("text", {x: 4, y: y + 13}, k));
      svg.append(s("rect", {x: 100, y: y + 3, width: Math.max(v ? 1 : 0, 170 * v / total), height: 14, fill: "#3182bd"}));
      svg.append(s("text", {x: 276, y: y + 13, "font-size": 10}, `${fmtInt(v)}  ${(100 * v / total).toFixed(1)}%`));
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
    svg.append(s("text", {x: 8, y: 14, "font-weight": "bold"}, `${p.family}: ${d.L} layers, D=${d.D}, F=${d.F}, V=${fmtInt(d.V)}`));
    svg.append(s("text", {x: 8, y: 27, "font-size": 10.5, fill: "#334"}, `H=${d.H} query heads of Hd=${d.Hd}, KV=${d.KV} key/value heads (${d.n_rep} query heads share each)`));
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
    [0, xs.length - 1].forEach(i => svg.append(s("text", {x: X(i), y: Ht - 8, "text-anchor": "middle", class: "ls-axis"}, xs[i])));
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

  // ================================================================ sources
  function sourceSnippet(src) {
    const box = h("div", {class: "ls-snippet"});
    if (src.error) { box.append(h("div", {class: "ls-error"}, src.error)); return box; }
    box.append(h("div", {class: "ls-snippet-head"}, `${src.path}:${src.line}` + (src.function ? `  in ${src.function}` : "") + (src.hook ? `  — ${src.hook}` : "")));
    if (src.context) {
      const pre = h("pre", {class: "ls-code"});
      src.context.lines.forEach((line, j) => {
        const n = src.context.start + j;
        const on = n >= src.line && n <= (src.end_line || src.line);
        pre.append(h("span", {class: "ls-line" + (on ? " ls-hl" : "")}, h("span", {class: "ls-ln"}, String(n).padStart(4) + "  "), line + "\n"));
      });
      box.append(pre);
    } else if (src.text) box.append(h("pre", {class: "ls-code"}, src.text));
    return box;
  }
  function openSource(root, ctx, src) {
    if (ctx && ctx.onSource) { ctx.onSource(src); return; }
    let panel = root.querySelector(".ls-inline-source");
    if (!panel) { panel = h("div", {class: "ls-inline-source"}); (root.querySelector(".ls-sources") || root).append(panel); }
    panel.innerHTML = "";
    panel.append(sourceSnippet(src));
  }

  // ================================================================ mount
  function mount(el, payload, ctx) {
    ctx = ctx || {};
    el.innerHTML = "";
    el.classList.add("ls-root");
    const r = R[payload.kind];
    const head = h("div", {class: "ls-head"});
    if (!ctx.noTitle) head.append(h("div", {class: "ls-title"}, payload.title || payload.kind, payload.model ? h("span", {class: "ls-model"}, "  " + payload.model) : null));
    if (payload.help && !ctx.noHelp) head.append(h("div", {class: "ls-help"}, payload.help));
    el.append(head);
    (payload.warnings || []).forEach(w => el.append(h("div", {class: "ls-warning"}, w)));
    const fig = h("div", {class: "ls-figure", "data-kind": payload.kind});
    el.append(fig);
    if (!r) fig.append(h("div", {class: "ls-error"}, `this page cannot draw a ${payload.kind} view`));
    else {
      try { r(payload, fig, ctx); } catch (e) {
        fig.append(h("div", {class: "ls-error"}, `drawing failed: ${e && e.message}`));
        if (window.console) console.error(e);
      }
    }
    if (payload.sources && payload.sources.length) {
      const src = h("div", {class: "ls-sources"});
      src.append(h("span", {class: "ls-src-label"}, "Reads "));
      payload.sources.forEach((q, j) => {
        const b = h("button", {class: "ls-src-link", type: "button", title: q.text || q.error || ""},
          h("code", null, q.hook), q.error ? " (no source line)" : ` ← ${q.path}:${q.line}`);
        b.addEventListener("click", () => openSource(el, ctx, q));
        src.append(b);
        if (j < payload.sources.length - 1) src.append(" ");
      });
      el.append(src);
    }
    return el;
  }

  // ================================================================ export
  /* One SVG of everything drawn in the view's figure: each <svg> placed where it is on
   * the page (HTML tables are not part of the picture; the HTML export keeps them). */
  function exportSVG(el) {
    const fig = el.querySelector(".ls-figure") || el;
    const base = fig.getBoundingClientRect();
    const parts = Array.from(fig.querySelectorAll("svg.ls-svg")).filter(sv => !sv.closest(".ls-noexport") && sv.getBoundingClientRect().width > 0);
    let W = 10, Ht = 10;
    const out = [];
    const title = (el.querySelector(".ls-title") || {}).textContent || "";
    const top = title ? 24 : 0;
    parts.forEach(sv => {
      const r = sv.getBoundingClientRect();
      const x = Math.round(r.left - base.left), y = Math.round(r.top - base.top) + top;
      const w = Number(sv.getAttribute("width")), hh = Number(sv.getAttribute("height"));
      const copy = sv.cloneNode(true);
      copy.setAttribute("x", x); copy.setAttribute("y", y);
      out.push(new XMLSerializer().serializeToString(copy));
      W = Math.max(W, x + w); Ht = Math.max(Ht, y + hh);
    });
    const esc = t => t.replace(/&/g, "&amp;").replace(/</g, "&lt;");
    return `<svg xmlns="${SVGNS}" width="${W + 10}" height="${Ht + 10}" viewBox="0 0 ${W + 10} ${Ht + 10}" font-family='${FONT}' font-size="11">` +
      `<style>.ls-axis{fill:#444;font-size:10px}.ls-bar-model{fill:#b8c7d9}.ls-bar-sample{fill:#e6550d}.ls-share{fill:#f9b36b}.ls-filtered{opacity:.45}.ls-selected{stroke:#e6550d;stroke-width:2}</style>` +
      `<rect width="100%" height="100%" fill="#fff"/>` + (title ? `<text x="6" y="16" font-size="14" font-weight="bold">${esc(title)}</text>` : "") +
      out.join("") + `</svg>`;
  }
  function exportPNG(el, scale) {
    scale = scale || 2;
    const svgText = exportSVG(el);
    const m = svgText.match(/width="(\d+)" height="(\d+)"/);
    const W = Number(m[1]), Ht = Number(m[2]);
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const cv = document.createElement("canvas");
        cv.width = W * scale; cv.height = Ht * scale;
        const c = cv.getContext("2d");
        c.fillStyle = "#fff"; c.fillRect(0, 0, cv.width, cv.height);
        c.drawImage(img, 0, 0, cv.width, cv.height);
        resolve(cv.toDataURL("image/png"));
      };
      img.onerror = () => reject(new Error("the SVG could not be rasterised"));
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svgText);
    });
  }
  function download(name, url) {
    const a = document.createElement("a");
    a.href = url; a.download = name; document.body.append(a); a.click(); a.remove();
  }
  /* Export buttons for a mounted view (standalone files and notebooks use these). */
  function exportButtons(el, name) {
    const bar = h("div", {class: "ls-export"});
    const svgB = h("button", {class: "ls-btn", type: "button"}, "SVG");
    const pngB = h("button", {class: "ls-btn", type: "button"}, "PNG");
    svgB.addEventListener("click", () => download(name + ".svg", URL.createObjectURL(new Blob([exportSVG(el)], {type: "image/svg+xml"}))));
    pngB.addEventListener("click", () => exportPNG(el).then(u => download(name + ".png", u)));
    bar.append(h("span", {class: "ls-caption"}, "save as "), svgB, pngB);
    return bar;
  }

  window.LlamaViews = {mount, exportSVG, exportPNG, exportButtons, download, unpack, showTok, sourceSnippet,
    renderers: R, version: "1"};
})();
