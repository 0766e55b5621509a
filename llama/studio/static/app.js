/* llama-from-scratch studio: the page. Talks only to the server that served it
 * (relative URLs under /api/); draws with views.js. */
(function () {
  "use strict";
  const V = window.LlamaViews;
  const $ = id => document.getElementById(id);
  const h = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  };

  // One client id per browser tab (kept across reloads of the tab): the server keeps one
  // text, token list and generation per client id.
  let client = sessionStorage.getItem("llama-studio-client");
  if (!client) {
    client = "tab-" + Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    sessionStorage.setItem("llama-studio-client", client);
  }

  const app = {info: null, state: null, tab: "attention", sub: {}, payloads: {}, viewOpts: {}, stale: true, generating: false};

  // ---------------------------------------------------------------- talking to the server
  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(Object.assign({client}, body)),
    };
    let res;
    try { res = await fetch("/api/" + path, init); }
    catch (e) {
      // A request that never reached the server (a busy machine dropped the connection):
      // one more try for those that change nothing; the others say so.
      if (!/^(state|info|source|view\/)/.test(path)) throw new Error("the server did not answer: is llama-studio still running?");
      await new Promise(r => setTimeout(r, 150));
      res = await fetch("/api/" + path, init);
    }
    const text = await res.text();
    let data;
    try { data = JSON.parse(text); } catch (e) { data = {error: text || res.statusText}; }
    if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
    return data;
  }
  function status(msg, isError) {
    const el = $("status");
    el.textContent = msg || "";
    el.style.color = isError ? "#ffb4b4" : "";
  }
  function showError(where, e) {
    status(e.message, true);
    if (where) { where.innerHTML = ""; where.append(h("div", {class: "app-error"}, e.message)); }
  }

  function sampling() {
    const t = Number($("temperature").value), k = Number($("top-k").value), p = Number($("top-p").value);
    return {temperature: t, top_k: k > 0 ? k : null, top_p: p, show: 10};
  }
  function seed() { const v = $("seed").value.trim(); return v === "" ? null : Number(v); }

  // ---------------------------------------------------------------- the text and its tokens
  // Typing sends the whole text; while a request is out, only the latest text waits
  // (a fast typist never queues a request per keystroke, and answers arrive in order).
  let pendingText = null, inFlight = false, truncateNext = false;
  function onType() {
    // A typed text is the user's own: no token of it counts as picked or generated any more.
    app.genFrom = null;
    $("gen-out").textContent = "";
    pendingText = $("text").value;
    if (!inFlight) sendText();
  }
  async function sendText() {
    inFlight = true;
    while (pendingText !== null) {
      const text = pendingText, truncate = truncateNext;
      pendingText = null;
      truncateNext = false;
      const t0 = performance.now();
      try {
        const st = await api("text", Object.assign({text, chat: $("chat").checked, truncate: !!truncate}, sampling()));
        if (pendingText === text) pendingText = null;  // typed back to what was just sent
        if (pendingText === null) {
          renderState(st);
          status(`${st.n_tokens} tokens, ${Math.round(performance.now() - t0)} ms`);
          // The sliders moved while this text was on its way: table it again as they are now.
          if (!sameSampling(st)) refreshTable();
        }
      } catch (e) { showError($("topk"), e); }
    }
    inFlight = false;
  }

  // Sampling controls re-table the stored logits (no model run). Answers may overtake each
  // other, so only the answer to the latest change is drawn, and none while a text is on
  // its way (the typing loop re-tables when it lands, if the sliders moved meanwhile).
  let samplingSeq = 0;
  function sameSampling(st) {
    const a = st.sampling || {}, b = sampling();
    return a.temperature === b.temperature && (a.top_k || null) === b.top_k && Math.abs((a.top_p || 1) - b.top_p) < 1e-9;
  }
  async function refreshTable() {
    const mine = ++samplingSeq;
    try {
      const st = await api("state", sampling());
      if (mine === samplingSeq && !inFlight) renderState(st);
    } catch (e) { showError(null, e); }
  }

  function renderState(st, opts) {
    opts = opts || {};
    const prev = app.state;
    app.state = st;
    const toks = $("tokens");
    toks.innerHTML = "";
    const typedLen = opts.typedLen != null ? opts.typedLen : (prev && prev.version !== st.version && opts.generated ? prev.n_tokens : null);
    st.tokens.forEach((t, i) => {
      const special = /^<\|.*\|>$|^<\/?s>$/.test(t.piece);
      toks.append(h("span", {class: "app-tok" + (special ? " app-special" : "") + (app.genFrom != null && i >= app.genFrom ? " app-gen" : ""),
        title: `position ${i}, id ${t.id}, piece ${JSON.stringify(t.piece)}`, "data-id": t.id}, V.showTok(t.text, 24)));
    });
    $("count").textContent = `${st.n_tokens} token${st.n_tokens === 1 ? "" : "s"} of ${st.max_seq_len.toLocaleString("en-US")}`;
    const tl = $("too-long");
    tl.innerHTML = "";
    if (st.too_long) {
      const keep = h("button", {class: "app-btn", type: "button", id: "keep-end"}, `keep the last ${st.too_long.max_seq_len} tokens`);
      keep.addEventListener("click", () => { truncateNext = true; onType(); });
      tl.append(h("div", {class: "app-error", id: "too-long-msg"}, st.too_long.message, " ", keep));
    }
    const topk = $("topk");
    topk.innerHTML = "";
    V.mount(topk, Object.assign({kind: "topk", title: "", warnings: []}, st), {noTitle: true, onPick: pick});
    if (app.firstTopk == null && st.candidates && st.candidates.length) app.firstTopk = performance.now();
    const busy = app.generating;
    $("gen").disabled = busy || !st.n_tokens || !!st.non_finite;
    $("step").disabled = busy || !st.n_tokens || !!st.non_finite;
    $("back").disabled = busy || !st.n_tokens;
    $("stop").disabled = !busy;
    if (prev == null || prev.version !== st.version) markStale();
  }
  function setBoxFromState(st) {
    if (!st.chat) $("text").value = st.decoded;
  }

  async function pick(id) {
    if (app.generating) return;
    try {
      if (app.genFrom == null && app.state) app.genFrom = app.state.n_tokens;
      const st = await api("pick", Object.assign({id}, sampling()));
      setBoxFromState(st); renderState(st);
    } catch (e) { showError(null, e); }
  }
  async function step() {
    try {
      if (app.genFrom == null && app.state) app.genFrom = app.state.n_tokens;
      const st = await api("step", Object.assign({seed: seed()}, sampling()));
      setBoxFromState(st); renderState(st);
      status(`stepped: ${JSON.stringify(V.showTok(st.tokens[st.tokens.length - 1].text))} (p ${st.chosen.prob})`);
    } catch (e) { showError(null, e); }
  }
  async function back() {
    try {
      const st = await api("back", {n: 1});
      if (app.genFrom != null && st.n_tokens <= app.genFrom) app.genFrom = null;
      setBoxFromState(st); renderState(st);
    } catch (e) { showError(null, e); }
  }
  async function reset() {
    try { const st = await api("reset", {}); app.genFrom = null; $("text").value = ""; $("gen-out").textContent = ""; renderState(st); }
    catch (e) { showError(null, e); }
  }

  // ---------------------------------------------------------------- streamed generation
  let abort = null;
  async function generate() {
    if (app.generating || !app.state || !app.state.n_tokens) return;
    app.generating = true;
    if (app.genFrom == null) app.genFrom = app.state.n_tokens;
    renderState(app.state);
    const out = $("gen-out");
    out.textContent = "";
    abort = new AbortController();
    let final = null;
    try {
      const res = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"}, signal: abort.signal,
        body: JSON.stringify(Object.assign({client, n: Number($("gen-n").value), seed: seed()}, sampling()))});
      if (!res.ok) { const d = await res.json().catch(() => ({error: res.statusText})); throw new Error(d.error); }
      const reader = res.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const line = chunk.split("\n").find(l => l.startsWith("data: "));
          if (!line) continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.type === "token") {
            out.textContent += ev.text;
            $("tokens").append(h("span", {class: "app-tok app-gen", title: `id ${ev.id}, p ${ev.prob}`}, V.showTok(ev.text || "·", 24)));
            status(`generating… ${ev.n}`);
          } else if (ev.type === "done") {
            final = ev;
          } else if (ev.type === "error") {
            throw new Error(ev.message);
          }
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") showError(null, e);
    }
    app.generating = false;
    abort = null;
    if (final) {
      out.textContent += final.tail || "";
      status(`${final.count} tokens, stopped: ${final.reason}` + (final.tokens_per_s ? `, ${final.tokens_per_s} tokens/s` : "") + (final.seed != null ? `, seed ${final.seed}` : ""));
      setBoxFromState(final.state); renderState(final.state);
    } else {
      try { const st = await api("state", sampling()); setBoxFromState(st); renderState(st); } catch (e) { showError(null, e); }
    }
  }
  async function stop() {
    try { await api("stop", {}); } catch (e) { if (abort) abort.abort(); }
  }

  // ---------------------------------------------------------------- views
  const TABS = [
    {id: "attention", label: "Attention", views: ["attention", "head_scores"]},
    {id: "lens", label: "Logit lens", views: ["lens"]},
    {id: "residual", label: "Residual stream", views: ["residual", "embeddings"]},
    {id: "attribution", label: "Attribution", views: ["saliency", "dla"]},
    {id: "intervene", label: "Interventions", views: ["intervene", "patching", "ablation"]},
    {id: "model", label: "The model", views: ["summary", "architecture", "params", "rope", "positions"]},
    {id: "tour", label: "Guided tour", views: ["tour"]},
  ];
  const SUBLABEL = {attention: "Every head", head_scores: "Head scores", residual: "PCA and norms", embeddings: "Token embeddings (3-D)",
    saliency: "Saliency", dla: "Direct logit attribution", intervene: "One edit", patching: "Patching map", ablation: "Head ablation map",
    summary: "Summary", architecture: "Architecture", params: "Parameter statistics", rope: "RoPE frequencies", positions: "Position embeddings"};
  let MODEL_VIEWS = new Set(["summary", "architecture", "params", "rope", "positions"]);
  const viewInfo = kind => (app.info && app.info.views.find(v => v.name === kind)) || {available: true};

  function currentKind() {
    const tab = TABS.find(t => t.id === app.tab);
    return app.sub[tab.id] || tab.views[0];
  }
  function drawTabs() {
    const nav = $("tabs");
    nav.innerHTML = "";
    TABS.forEach(t => nav.append(h("button", {class: "app-tab" + (t.id === app.tab ? " app-on" : ""), type: "button", "data-tab": t.id,
      onclick: () => { app.tab = t.id; drawTabs(); refreshView(); }}, t.label)));
    const tab = TABS.find(t => t.id === app.tab);
    const sub = $("subnav");
    sub.innerHTML = "";
    // A view that does not apply to this model (RoPE for GPT-2, learned positions for
    // Llama) keeps its button, greyed, and says why when clicked.
    if (tab.views.length > 1) tab.views.forEach(k => {
      const na = !viewInfo(k).available;
      sub.append(h("button", {class: "app-tab" + (currentKind() === k ? " app-on" : "") + (na ? " app-na" : ""),
        type: "button", "data-view": k, title: na ? viewInfo(k).why_not : (viewInfo(k).help || ""),
        onclick: () => { app.sub[tab.id] = k; drawTabs(); refreshView(); }}, SUBLABEL[k] || k));
    });
    drawControls();
  }

  // Controls of each view: name -> [label, input type, extra attributes]
  const SITES = [["resid_post", "residual after the block"], ["resid_pre", "residual before the block"], ["resid_mid", "residual after attention"],
    ["attn_out", "attention output"], ["mlp_out", "MLP output"], ["heads", "one query head"], ["kv_heads", "one key/value head"]];
  const CONTROLS = {
    attention: [["layer", "layer", "select-layer"]],
    head_scores: [["induction", "induction (random tokens repeated)", "checkbox", {value: true}], ["length", "length", "number", {value: 20}]],
    residual: [["stages", "PCA at blocks (emb = embeddings)", "text", {placeholder: "emb,0,5,11,17,23,29"}], ["skip_first", "leave out the first token (its vectors are often huge and squeeze the others together)", "checkbox", {value: true}]],
    saliency: [["position", "position", "number", {value: -1}], ["target", "target id", "number", {placeholder: "top"}]],
    dla: [["position", "position", "number", {value: -1}], ["target", "target id", "number", {placeholder: "top"}], ["contrast", "minus id", "number", {placeholder: "none"}]],
    intervene: [["edit", "edit", "select", {options: [["ablate_head", "ablate a head"], ["ablate_attn", "ablate a block's attention"], ["ablate_mlp", "ablate a block's MLP"], ["steer", "steer (A − B)"], ["patch", "patch from a prompt"]]}],
      ["layer", "layer", "number", {value: 0}], ["head", "head", "number", {value: 0, for: ["ablate_head", "patch"]}],
      ["mode", "by", "select", {options: [["zero", "zero"], ["mean", "mean over positions"]], for: ["ablate_head", "ablate_attn", "ablate_mlp"]}],
      ["prompt_a", "A", "text", {value: " love", for: ["steer"]}], ["prompt_b", "B", "text", {value: " hate", for: ["steer"]}],
      ["scale", "scale", "number", {value: 4, step: 0.5, for: ["steer"]}], ["reduce", "of", "select", {options: [["mean", "mean over positions"], ["last", "last position"]], for: ["steer"]}],
      ["source", "source prompt", "text", {for: ["patch"], placeholder: "same number of tokens", value: "The capital of Italy is"}],
      ["site", "site", "select", {options: SITES, for: ["patch"]}],
      ["patch_position", "position", "number", {value: -1, for: ["patch"]}]],
    patching: [["corrupt", "second prompt", "text", {value: "The capital of Italy is", placeholder: "same number of tokens"}],
      ["site", "patch", "select", {options: SITES}], ["answer", "answer id", "number", {placeholder: "auto"}],
      ["wrong", "wrong id", "number", {placeholder: "auto"}]],
    ablation: [["mode", "ablate by", "select", {options: [["zero", "zero"], ["mean", "mean over positions"]]}], ["target", "target id", "number", {placeholder: "top"}]],
    rope: [["positions", "positions", "number", {value: 128}]],
    positions: [["positions", "positions", "number", {placeholder: "all"}]],
    tour: [["layer", "layer", "number", {value: 0}], ["head", "head", "number", {value: 0}], ["pair", "RoPE pair", "number", {value: 0}], ["position", "token", "number", {value: -1}]],
  };
  // Views that run the model many times (a map of patched or ablated runs): computed when
  // asked for (the button), not on every keystroke.
  const ON_DEMAND = new Set(["patching", "ablation"]);
  function drawControls() {
    const kind = currentKind();
    const box = $("view-controls");
    box.innerHTML = "";
    if (!viewInfo(kind).available) return;
    const specs = CONTROLS[kind] || [];
    const opts = app.viewOpts[kind] = app.viewOpts[kind] || {};
    specs.forEach(([name, label, type, extra]) => {
      extra = extra || {};
      if (extra.for && !extra.for.includes(opts.edit || "ablate_head")) return;
      let input;
      if (type === "select-layer") {
        input = h("select", {"data-opt": name}, h("option", {value: ""}, "all"));
        for (let i = 0; i < (app.info ? app.info.n_layers : 0); i++) input.append(h("option", {value: i}, String(i)));
      } else if (type === "select") {
        input = h("select", {"data-opt": name});
        extra.options.forEach(([v, t]) => input.append(h("option", {value: v}, t)));
      } else if (type === "checkbox") {
        input = h("input", {type: "checkbox", "data-opt": name});
      } else {
        input = h("input", {type, "data-opt": name, placeholder: extra.placeholder || null, step: extra.step || null});
      }
      if (opts[name] === undefined && extra.value !== undefined) opts[name] = extra.value;
      if (type === "checkbox") input.checked = !!opts[name];
      else if (opts[name] !== undefined && opts[name] !== null) input.value = opts[name];
      input.addEventListener("change", () => {
        opts[name] = type === "checkbox" ? input.checked : input.value;
        if (name === "edit") drawControls();
        refreshView();
      });
      box.append(h("label", null, label + " ", input));
    });
    if (kind === "intervene" || ON_DEMAND.has(kind)) box.append(h("button", {class: "app-btn app-primary", type: "button", id: "view-apply", onclick: () => refreshView(true)}, kind === "intervene" ? "apply" : "compute"));
    if (kind === "tour" && app.info && app.info.family_name === "gpt2") box.querySelector('[data-opt="pair"]').closest("label").remove();
  }
  function optionsFor(kind) {
    const raw = app.viewOpts[kind] || {};
    const out = {};
    for (const [name, , type] of CONTROLS[kind] || []) {
      let v = raw[name];
      if (v === undefined || v === "") continue;
      if (type === "number" || type === "select-layer") v = Number(v);
      if (name === "stages") {
        v = String(v).split(",").map(x => x.trim()).filter(Boolean).map(x => /^emb/.test(x) ? 0 : (Number(x) < 0 ? app.info.n_layers + Number(x) + 1 : Number(x) + 1));
      }
      out[name] = v;
    }
    if (kind === "intervene") {  // send only what the chosen edit uses
      const edit = out.edit || "ablate_head";
      for (const [name, , , extra] of CONTROLS.intervene) if (extra && extra.for && !extra.for.includes(edit)) delete out[name];
    }
    return out;
  }

  let viewSeq = 0, viewTimer = null;
  function markStale() {
    app.stale = true;
    const v = $("view");
    if (!MODEL_VIEWS.has(currentKind())) v.classList.add("app-stale");
    clearTimeout(viewTimer);
    viewTimer = setTimeout(() => {
      // Redraw only if the text changed since the view was drawn (typing back and forth
      // to the same tokens, or a re-tabled sampling change, redraws nothing).
      const kind = currentKind(), drawn = $("view").dataset.version;
      if (app.generating || !app.state || MODEL_VIEWS.has(kind) || String(app.state.version) === drawn) {
        $("view").classList.remove("app-stale");
      } else if (ON_DEMAND.has(kind)) {  // many runs of the model: only when asked
        if ($("view").querySelector(".ls-figure")) status("the text changed: press compute for a new map");
        else refreshView();
      } else refreshView();
    }, 350);
  }
  async function refreshView(asked) {
    const kind = currentKind();
    const seq = ++viewSeq;
    const v = $("view");
    const vi = viewInfo(kind);
    if (!vi.available) {
      app.payloads.view = null;  // nothing drawn: nothing to export
      v.classList.remove("app-stale");
      v.innerHTML = "";
      v.dataset.kind = kind;
      v.append(h("div", {class: "app-na-note"}, h("strong", null, `${SUBLABEL[kind] || kind}: not for this model. `), vi.why_not));
      return;
    }
    if (!MODEL_VIEWS.has(kind) && (!app.state || !app.state.n_tokens)) {
      app.payloads.view = null;
      v.classList.remove("app-stale");
      v.innerHTML = "";
      v.append(h("div", {class: "app-busy"}, "Type some text on the left: this view shows what the model does with it."));
      return;
    }
    if (ON_DEMAND.has(kind) && !asked && !(v.dataset.kind === kind && v.querySelector(".ls-figure"))) {
      app.payloads.view = null;
      v.classList.remove("app-stale");
      v.innerHTML = "";
      v.dataset.kind = kind;
      v.dataset.version = app.state.version;
      v.append(h("div", {class: "app-busy"}, `${vi.title}: ${vi.help} It runs the model once per cell (${kind === "ablation" ? `${app.info.n_layers} × ${app.info.n_heads} heads` : `${app.info.n_layers} layers × the positions`}), so it is computed when you press "compute".`));
      return;
    }
    if (!v.children.length || v.dataset.kind !== kind) { v.innerHTML = ""; v.append(h("div", {class: "app-busy"}, "computing…")); }
    else if (asked || ON_DEMAND.has(kind)) { v.classList.add("app-stale"); status(`computing the ${vi.title.toLowerCase()}…`); }
    v.dataset.kind = kind;
    const t0 = performance.now();
    try {
      const payload = await api("view/" + kind, {options: optionsFor(kind)});
      if (seq !== viewSeq) return;
      app.payloads.view = payload;
      v.classList.remove("app-stale");
      const initial = app.sel && app.sel[kind];
      V.mount(v, payload, {onSource: openSide, onPick: pick, initial, onSelect: sel => { app.sel = app.sel || {}; app.sel[kind] = sel; }});
      v.dataset.version = payload.version == null ? "" : payload.version;
      status(`${payload.title}: ${Math.round(performance.now() - t0)} ms`);
    } catch (e) {
      if (seq !== viewSeq) return;
      v.classList.remove("app-stale");
      showError(v, e);
    }
  }

  // ---------------------------------------------------------------- source side panel
  let sideSrc = null;
  function openSide(src) {
    sideSrc = src;
    $("side").classList.add("app-open");
    $("side-title").textContent = src.hook ? `${src.hook}` : `${src.path}:${src.line}`;
    const body = $("side-body");
    body.innerHTML = "";
    body.append(V.sourceSnippet(src));
    if (src.hook) body.append(h("p", {class: "app-meta"}, `Captured with llama.hooks as "${src.hook}": with capture(model, "${src.hook}") as cache: model(tokens)`));
  }
  async function wholeFile() {
    if (!sideSrc || !sideSrc.path) return;
    try {
      const f = await api("source?path=" + encodeURIComponent(sideSrc.path));
      const body = $("side-body");
      body.innerHTML = "";
      const lo = 1, src = Object.assign({}, sideSrc, {context: {start: lo, lines: f.lines}});
      body.append(V.sourceSnippet(src));
      const hl = body.querySelector(".ls-hl");
      if (hl) hl.scrollIntoView({block: "center"});
    } catch (e) { showError($("side-body"), e); }
  }

  // ---------------------------------------------------------------- export
  async function doExport(format, target) {
    let payload = app.payloads[target];
    const el = target === "topk" ? $("topk") : $("view");
    if (target === "topk" && app.state && app.state.n_tokens) {
      try { payload = await api("view/topk", {options: sampling()}); } catch (e) { showError(null, e); return; }
    }
    if (!payload) { status("nothing to export: this view has not been drawn", true); return; }
    const name = (payload.kind || "view") + (payload.version != null ? "-" + payload.version : "");
    try {
      if (format === "html") {
        const res = await fetch("/api/export", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({client, payload})});
        if (!res.ok) throw new Error((await res.json()).error);
        const html = await res.text();
        V.download(name + ".html", URL.createObjectURL(new Blob([html], {type: "text/html"})));
      } else if (!el.querySelector(".ls-figure svg.ls-svg")) {
        status("this view is text, not a picture: export it as HTML", true);
        return;
      } else if (format === "svg") {
        V.download(name + ".svg", URL.createObjectURL(new Blob([V.exportSVG(el)], {type: "image/svg+xml"})));
      } else {
        V.download(name + ".png", await V.exportPNG(el));
      }
      status(`saved ${name}.${format}`);
    } catch (e) { showError(null, e); }
  }

  // ---------------------------------------------------------------- start
  async function start() {
    try {
      app.info = await api("info");
    } catch (e) { showError($("view"), e); return; }
    const i = app.info;
    $("model").textContent = `${i.name} · ${i.family}, ${i.n_layers} layers, ${i.n_heads} heads (${i.n_kv_heads} kv), d=${i.dim}, ${(i.n_params / 1e6).toFixed(1)}M parameters, ${i.dtype} on ${i.device}` + (i.speed ? (/^plain/.test(i.speed) ? " · plain kernels" : " · measured kernels") : "");
    if (i.speed) $("model").title = i.speed;
    MODEL_VIEWS = new Set(i.views.filter(v => v.needs === "model").map(v => v.name));
    $("chat").disabled = !i.has_chat_template;
    const topkView = i.views.find(v => v.name === "topk");
    if (topkView) {  // where the table's numbers come from, as under every view
      const box = $("topk-sources");
      box.append(h("span", {class: "ls-src-label"}, "Reads "));
      topkView.sources.forEach(src => box.append(h("button", {class: "ls-src-link", type: "button", onclick: () => openSide(src)},
        h("code", null, src.hook), ` ← ${src.path}:${src.line}`)));
    }
    drawTabs();
    $("text").addEventListener("input", onType);
    $("chat").addEventListener("change", onType);
    ["temperature", "top-k", "top-p"].forEach(id => $(id).addEventListener("input", () => {
      $("temperature-value").textContent = $("temperature").value;
      $("top-p-value").textContent = Number($("top-p").value) >= 1 ? "off" : $("top-p").value;
      refreshTable();
    }));
    $("gen").addEventListener("click", generate);
    $("stop").addEventListener("click", stop);
    $("step").addEventListener("click", step);
    $("back").addEventListener("click", back);
    $("reset").addEventListener("click", reset);
    $("side-close").addEventListener("click", () => $("side").classList.remove("app-open"));
    $("side-file").addEventListener("click", wholeFile);
    document.querySelectorAll("[data-export]").forEach(b => b.addEventListener("click", () => doExport(b.dataset.export, b.dataset.target)));
    const st = await api("state", sampling());
    if (st.n_tokens) { $("text").value = st.text || st.decoded; renderState(st); }
    else { $("text").value = i.default_prompt; onType(); }
    document.body.dataset.ready = "1";
    // For tests and the curious (browser console): the last payloads the page drew.
    window.LlamaStudioPage = {payloads: app.payloads, state: () => app.state, client,
      firstTopk: () => app.firstTopk, busy: () => inFlight || pendingText !== null};
  }
  start();
})();
