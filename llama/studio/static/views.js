/* llama-from-scratch studio: the view renderers (core: helpers, mount, sources, export).
 *
 * One file, plain JavaScript, no dependencies, no network: the page served by
 * `llama-studio`, every exported HTML file and every Jupyter view run this same code.
 * A renderer turns one JSON payload (schemas in docs/STUDIO.md) into SVG and a little
 * HTML; nothing here talks to the server. The page passes callbacks (pick a candidate,
 * open a source line) through `ctx`; a standalone copy has none and shows the source
 * snippet that travels inside the payload instead.
 *
 * Files, loaded in this order (export.VIEW_SCRIPTS): views.js (this: helpers, mount,
 * sources, export), views_prompt.js (topk, attention, lens, residual),
 * views_attribution.js (saliency, dla, intervene), views_model.js (summary,
 * architecture, params, rope, tour).
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
    if (Math.abs(x) < 5e-5 && x !== 0) x = 0;  // no "-0.00"
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
  function legendBar(g, x, y, w, label, colorAt, lo, hi, mid) {
    const n = 40;
    if (mid != null) g.append(s("text", {x: x + w / 2, y: y + 19, "text-anchor": "middle", class: "ls-axis"}, mid));
    for (let i = 0; i < n; i++) g.append(s("rect", {x: x + i * w / n, y, width: w / n + 0.5, height: 8, fill: rgb(colorAt(i / (n - 1)))}));
    g.append(s("text", {x, y: y + 19, class: "ls-axis"}, lo));
    g.append(s("text", {x: x + w, y: y + 19, "text-anchor": "end", class: "ls-axis"}, hi));
    g.append(s("text", {x: x + w / 2, y: y - 3, "text-anchor": "middle", class: "ls-axis"}, label));
  }

  /* A matrix of numbers as a heatmap with labelled rows and columns, a colour legend and
   * a tooltip: layer x head maps, layer x position maps. opts: scale "div" (red - white -
   * blue around 0, symmetric) or "seq" (white -> blue from lo to hi); lo, hi; cell [w, h];
   * title; legend (its label); tip(r, c, v) -> text; mark [[r, c], ...] outlined cells. */
  function matrixMap(values, rowLabels, colLabels, opts) {
    opts = opts || {};
    const R_ = values.length, C = colLabels.length;
    const flat = values.flat().filter(v => v != null && isFinite(v));
    const div = opts.scale !== "seq";
    const m = div ? (opts.hi != null ? opts.hi : Math.max(1e-9, ...flat.map(Math.abs))) : 0;
    const lo = div ? -m : (opts.lo != null ? opts.lo : Math.min(0, ...flat));
    const hi = div ? m : (opts.hi != null ? opts.hi : Math.max(1e-9, ...flat));
    const color = v => v == null || !isFinite(v) ? [220, 220, 220] : div ? divRGB(v, m) : seqRGB((v - lo) / ((hi - lo) || 1));
    const [cw, ch] = opts.cell || [clamp(Math.floor(420 / Math.max(C, 1)), 12, 40), clamp(Math.floor(380 / Math.max(R_, 1)), 9, 18)];
    const longest = Math.max(...colLabels.map(l => String(l).length));
    const left = clamp(8 + 6.2 * Math.max(...rowLabels.map(l => String(l).length)), 24, 130), topM = opts.title ? 22 : 6, bottom = opts.rotate === false ? 18 : clamp(7 * longest, 18, 110), legendW = Math.max(56, 6 * String(opts.legend || "").length + 6);
    const svg = svgRoot(left + C * cw + legendW + 8, topM + R_ * ch + bottom + 4, "ls-map " + (opts.cls || ""));
    if (opts.title) svg.append(s("text", {x: 4, y: 14, "font-weight": "bold"}, opts.title));
    svg.append(svgImage(heatImage(R_, C, (r, c) => color(values[r][c]), cw, ch), left, topM, C * cw, R_ * ch));
    const step = Math.max(1, Math.ceil(R_ * 12 / (R_ * ch)));
    rowLabels.forEach((l, r) => { if (r % step === 0 || r === R_ - 1) svg.append(s("text", {x: left - 4, y: topM + r * ch + ch / 2 + 3.5, "text-anchor": "end", class: "ls-axis"}, l)); });
    if (opts.rotate === false) colLabels.forEach((l, c) => svg.append(s("text", {x: left + c * cw + cw / 2, y: topM + R_ * ch + 12, "text-anchor": "middle", class: "ls-axis"}, l)));
    else xLabels(svg, colLabels, left, cw, topM + R_ * ch + 10, {rotate: true});
    (opts.mark || []).forEach(([r, c]) => svg.append(s("rect", {x: left + c * cw + 0.5, y: topM + r * ch + 0.5, width: cw - 1, height: ch - 1, fill: "none", stroke: "#111", "stroke-width": 1.5})));
    const lx = left + C * cw + 10, lh = Math.min(R_ * ch, 160);
    for (let i = 0; i < 30; i++) {
      const v = hi - (hi - lo) * i / 29;
      svg.append(s("rect", {x: lx, y: topM + i * lh / 30, width: 10, height: lh / 30 + 0.5, fill: rgb(color(v))}));
    }
    svg.append(s("text", {x: lx + 13, y: topM + 8, class: "ls-axis"}, (div && hi > 0 ? "+" : "") + fmtN(hi, 2)));
    if (div) svg.append(s("text", {x: lx + 13, y: topM + lh / 2 + 3, class: "ls-axis"}, "0"));
    svg.append(s("text", {x: lx + 13, y: topM + lh, class: "ls-axis"}, fmtN(lo, 2)));
    if (opts.legend) svg.append(s("text", {x: lx, y: topM + lh + 14, class: "ls-axis"}, opts.legend));
    if (opts.tipRoot) {
      const tip = tooltip(opts.tipRoot);
      const hit = s("rect", {x: left, y: topM, width: C * cw, height: R_ * ch, fill: "transparent", class: opts.onClick ? "ls-click" : null});
      const cellAt = e => {
        const b = svg.getBoundingClientRect(), sc = b.width / Number(svg.getAttribute("width"));
        const c = Math.floor(((e.clientX - b.left) / sc - left) / cw), r = Math.floor(((e.clientY - b.top) / sc - topM) / ch);
        return r >= 0 && r < R_ && c >= 0 && c < C ? [r, c] : null;
      };
      hit.addEventListener("mousemove", e => { const rc = cellAt(e); if (rc) tip.show(e, (opts.tip || ((r, c, v) => `${rowLabels[r]}, ${colLabels[c]}: ${fmtN(v, 4)}`))(rc[0], rc[1], values[rc[0]][rc[1]])); });
      hit.addEventListener("mouseleave", () => tip.hide());
      if (opts.onClick) hit.addEventListener("click", e => { const rc = cellAt(e); if (rc) opts.onClick(rc[0], rc[1]); });
      svg.append(hit);
    }
    return svg;
  }

  /* Dragging to turn a 3-D point cloud: orbit(points) -> {proj(q) -> [x, y, depth],
   * attach(svg, redraw)}. Points are centred and scaled to fit, then turned by yaw
   * (drag left/right) and pitch (drag up/down) and drawn with a little perspective. */
  function orbit(points, W, Ht) {
    const pts = points.filter(q => q && q.every(v => v != null));
    const n = Math.max(1, pts.length);
    const mean = [0, 1, 2].map(d => pts.reduce((a, q) => a + (q[d] || 0), 0) / n);
    const rad = Math.max(1e-9, ...pts.map(q => Math.hypot((q[0] || 0) - mean[0], (q[1] || 0) - mean[1], (q[2] || 0) - mean[2])));
    const o = {yaw: 0.7, pitch: 0.35, mean, rad};
    o.proj = q => {
      const x = ((q[0] || 0) - mean[0]) / rad, y = ((q[1] || 0) - mean[1]) / rad, z = ((q[2] || 0) - mean[2]) / rad;
      const cx = Math.cos(o.yaw) * x + Math.sin(o.yaw) * z, cz = -Math.sin(o.yaw) * x + Math.cos(o.yaw) * z;
      const cy = Math.cos(o.pitch) * y - Math.sin(o.pitch) * cz, dz = Math.sin(o.pitch) * y + Math.cos(o.pitch) * cz;
      const f = 1 / (1 + 0.25 * dz + 0.25), r = 0.38 * Math.min(W, Ht);
      return [W / 2 + cx * r * f * 1.25, Ht / 2 - cy * r * f * 1.25, dz];
    };
    o.axes = svg => {  // dashed PC1..PC3 axes from the centre
      const c = o.proj(mean);
      ["PC1", "PC2", "PC3"].forEach((name, d) => {
        const q = mean.slice(); q[d] += rad * 0.7; const e = o.proj(q);
        svg.append(s("line", {x1: c[0], y1: c[1], x2: e[0], y2: e[1], stroke: "#999", "stroke-dasharray": "3 3"}));
        svg.append(s("text", {x: e[0] + 3, y: e[1], "font-size": 10, fill: "#666"}, name));
      });
    };
    o.attach = (svg, redraw) => {
      let drag = null;
      svg.classList.add("ls-3d");
      svg.addEventListener("pointerdown", e => { drag = [e.clientX, e.clientY, o.yaw, o.pitch]; if (svg.setPointerCapture && e.pointerId != null) try { svg.setPointerCapture(e.pointerId); } catch (err) { /* synthetic events */ } });
      svg.addEventListener("pointermove", e => { if (!drag) return; o.yaw = drag[2] + (e.clientX - drag[0]) / 120; o.pitch = clamp(drag[3] + (e.clientY - drag[1]) / 120, -1.5, 1.5); redraw(); });
      const end = () => { drag = null; };
      svg.addEventListener("pointerup", end); svg.addEventListener("pointercancel", end);
    };
    return o;
  }

  // ================================================================ renderers
  // Each kind's renderer(payload, figure element, ctx) is added by views_prompt.js,
  // views_attribution.js and views_model.js, which load after this file.
  const R = {};

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
    renderers: R, version: "1",
    // The drawing helpers, for the renderer files (views_*.js) that add to `renderers`.
    _: {SVGNS, FONT, MONO, h, s, svgRoot, clamp, fmtP, fmtN, fmtInt, fmtBytes, showTok, quoteTok, vocabText,
      tokenLabels, mix, rgb, seqColor, seqRGB, warmRGB, divRGB, textOn, PALETTE, tokenColor, unpack, heatImage,
      svgImage, tooltip, xLabels, yLabels, legendBar, openSource, matrixMap, orbit}};
})();

