/* llama-from-scratch studio: attribution and interventions (saliency, direct logit attribution, edits).
 * Renderers payload -> SVG, added to LlamaViews.renderers; helpers from views.js. */
(function () {
  "use strict";
  const V = window.LlamaViews;
  const R = V.renderers;
  // eslint-disable-next-line no-unused-vars
  const {SVGNS, FONT, MONO, h, s, svgRoot, clamp, fmtP, fmtN, fmtInt, fmtBytes, showTok, quoteTok, vocabText, tokenLabels, mix, rgb, seqColor, seqRGB, warmRGB, divRGB, textOn, PALETTE, tokenColor, unpack, heatImage, svgImage, tooltip, xLabels, yLabels, legendBar, openSource} = V._;

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

})();
