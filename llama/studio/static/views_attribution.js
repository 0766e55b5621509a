/* llama-from-scratch studio: attribution and interventions (saliency, direct logit attribution, edits).
 * Renderers payload -> SVG, added to LlamaViews.renderers; helpers from views.js. */
(function () {
  "use strict";
  const V = window.LlamaViews;
  const R = V.renderers;
  // eslint-disable-next-line no-unused-vars
  const {SVGNS, FONT, MONO, h, s, svgRoot, clamp, fmtP, fmtN, fmtInt, fmtBytes, showTok, quoteTok, vocabText, tokenLabels, mix, rgb, seqColor, seqRGB, warmRGB, divRGB, textOn, PALETTE, tokenColor, unpack, heatImage, svgImage, tooltip, xLabels, yLabels, legendBar, openSource, matrixMap, orbit} = V._;

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
    // The embedding bar: the token embedding, plus the position embedding where the model
    // learns one (GPT-2's pos_embed): what enters the first block.
    const embed = p.parts.filter(q => q.group === "embed").reduce((a, q) => a + (q.value || 0), 0);
    const all = [embed].concat(p.attn, p.mlp).map(Math.abs);
    const max = Math.max(...all) || 1;
    const bw = clamp(Math.floor(600 / (2 * L + 1)), 4, 20), W = 60 + (2 * L + 1) * bw, Ht = 240, mid = 120;
    const svg = svgRoot(Math.max(W, 300), Ht, "ls-dla");
    svg.append(s("text", {x: 8, y: 14, "font-weight": "bold"}, "per block: attention (purple) and MLP (green); grey: the embedding"));
    svg.append(s("line", {x1: 50, x2: W, y1: mid, y2: mid, stroke: "#888"}));
    const bars = [[p.parts.some(q => q.name === "pos_embed") ? "embed + pos_embed" : "embed", embed, "#777"]];
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
    const hs = matrixMap(p.heads, p.heads.map((_, i) => "L" + i), Array.from({length: H}, (_, j) => "H" + j), {
      title: "each head (blue +, red −)", tipRoot: root, rotate: false, legend: "logit",
      cell: [22, clamp(Math.floor(300 / L), 8, 16)], cls: "ls-dla-heads",
      tip: (r, c, v) => `layers.${r}.attention.heads, head ${c}: ${v >= 0 ? "+" : ""}${fmtN(v, 4)} to the logit`});
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

  /* ---- the patching map: layer x position (or head), how much of the answer comes back */
  R.patching = function (p, fig, ctx) {
    const root = fig.closest(".ls-root") || fig;
    const labels = tokenLabels(p), a = quoteTok(vocabText(p, p.answer)), w = quoteTok(vocabText(p, p.wrong));
    const diff = new Set(p.differ || []);
    let cols = p.column_labels;
    if (p.column_kind === "position") cols = labels.map((t, i) => diff.has(i) ? `${i} ${t}/${showTok(p.corrupt_tokens[i].text, 8)}` : `${i} ${t}`);
    else if (p.column_kind === "kv_head") cols = p.column_labels.map((c, g) => `${c} (q ${p.query_heads[g].join(",")})`);
    const site = {resid_pre: "the residual stream entering the block", resid_mid: "the residual stream after attention",
      resid_post: "the residual stream after the block", attn_out: "the block's attention output", mlp_out: "the block's MLP output",
      heads: "one query head's output", kv_heads: "one key/value head's keys and values"}[p.site] || p.site;
    fig.append(h("div", {class: "ls-subtitle"}, `Run the second prompt, copy ${site} from your text's run at one ${p.column_kind === "position" ? "layer and position" : "layer and head"}, and score the result: logit(${a}) − logit(${w}), normalised so that your text scores 1 and the second prompt 0.`));
    fig.append(h("div", {class: "ls-caption"}, `Your text: ${a} − ${w} = ${fmtN(p.clean_diff, 3)}; the second prompt: ${fmtN(p.corrupt_diff, 3)}. Blue: this patch brings the answer back (1 = all of it); red: it pushes further away. Columns where the prompts differ show both tokens.`));
    const mark = p.top && p.top.length ? [[p.top[0][0], p.top[0][1]]] : [];
    const svg = matrixMap(p.scores, p.row_labels.map(l => l.replace("L", "layer ")), cols, {tipRoot: root, legend: "restored",
      hi: Math.max(1, Math.abs(p.min || 0), Math.abs(p.max || 0)), mark, cell: [clamp(Math.floor(520 / cols.length), 22, 64), clamp(Math.floor(420 / p.scores.length), 9, 18)],
      tip: (r, c, v) => `${p.cell_hooks[r].join(" + ")}${p.column_kind === "position" ? ` at position ${c} (${labels[c]})` : `, ${p.column_labels[c]}`}: ${fmtN(v, 3)} of the way back to ${a}`});
    const tbl = h("table", {class: "ls-table"}, h("tr", null, h("th", null, "strongest patches"), h("th", null, "score")));
    (p.top || []).forEach(([L, c, v]) => tbl.append(h("tr", null, h("td", {class: "ls-mono"}, `layer ${L}, ${p.column_kind === "position" ? `position ${c} ${labels[c]}` : p.column_labels[c]}`), h("td", null, fmtN(v, 3)))));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel ls-scroll"}, svg), h("div", {class: "ls-panel"}, tbl)));
    fig.append(h("div", {class: "ls-caption"}, p.metric));
  };

  /* ---- the head ablation map: every head knocked out alone */
  R.ablation = function (p, fig) {
    const root = fig.closest(".ls-root") || fig;
    const t = quoteTok(vocabText(p, p.target)), L = p.scores.length, H = p.scores[0].length;
    const how = p.mode === "zero" ? "set to zero" : "replaced by its mean over the positions";
    fig.append(h("div", {class: "ls-subtitle"}, `Each cell: one run with that head's output ${how}, everything else untouched. Colour: how log p(${t}) changes (red: the head was helping, blue: it was holding ${t} back).`));
    fig.append(h("div", {class: "ls-caption"}, `Unablated: log p(${t}) = ${fmtN(p.baseline, 3)} (p = ${fmtP(Math.exp(p.baseline))}). ${L * H} runs.`));
    const svg = matrixMap(p.scores, p.scores.map((_, i) => "layer " + i), Array.from({length: H}, (_, j) => "H" + j), {tipRoot: root, rotate: false,
      legend: "change of log p", cell: [clamp(Math.floor(460 / H), 16, 40), clamp(Math.floor(420 / L), 9, 18)],
      mark: p.top && p.top.length ? [[p.top[0][0], p.top[0][1]]] : [],
      tip: (r, c, v) => `layers.${r}.attention.heads, head ${c} ablated: log p ${fmtN(p.baseline + v, 3)} (${v >= 0 ? "+" : ""}${fmtN(v, 3)})`});
    const tbl = h("table", {class: "ls-table"}, h("tr", null, h("th", null, "heads it misses most"), h("th", null, "Δ log p")));
    (p.top || []).forEach(([l, hd, v]) => tbl.append(h("tr", null, h("td", {class: "ls-mono"}, `layer ${l} head ${hd}`), h("td", {class: v >= 0 ? "ls-pos" : "ls-neg"}, fmtN(v, 3)))));
    fig.append(h("div", {class: "ls-row"}, h("div", {class: "ls-panel"}, svg), h("div", {class: "ls-panel"}, tbl)));
  };

  /* ---- head scores: previous-token, first-token, induction, per head */
  R.head_scores = function (p, fig) {
    const root = fig.closest(".ls-root") || fig;
    const L = p.n_layers, H = p.n_heads;
    const what = {"previous-token": "attention from each token to the one just before it",
      "first-token": "attention to the first token (a sink: where a head looks when it has nothing to do)",
      "induction": "on random tokens repeated twice: attention to the token after the same token's earlier copy (it predicts a repeat)"};
    fig.append(h("div", {class: "ls-subtitle"}, `Each score is a mean attention probability (0 to 1) of one head: dark = the head does that. Previous-token and first-token scores are measured on your text (${tokenLabels(p).length} tokens: a short text gives rough scores); induction on random tokens.`));
    const row = h("div", {class: "ls-row"});
    p.maps.forEach(m => {
      const svg = matrixMap(m.scores, Array.from({length: L}, (_, i) => "layer " + i), Array.from({length: H}, (_, j) => "H" + j),
        {scale: "seq", lo: 0, hi: 1, title: m.name, tipRoot: root, rotate: false, legend: "score", cell: [clamp(Math.floor(300 / H), 12, 30), clamp(Math.floor(360 / L), 8, 16)],
          tip: (r, c, v) => `layer ${r} head ${c}: ${m.name} score ${fmtN(v, 3)}`});
      const top = h("div", {class: "ls-caption"}, "top: " + m.top.slice(0, 3).map(([l, hd, v]) => `L${l} H${hd} ${v.toFixed(2)}`).join(", "));
      row.append(h("div", {class: "ls-panel ls-headscore"}, h("div", {class: "ls-caption"}, what[m.name] || m.description), svg, top));
    });
    fig.append(row);
  };

})();
