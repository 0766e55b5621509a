"""The numbers behind each studio view, as JSON-able payloads (schemas: docs/STUDIO.md).

STOPGAP (issue 13): these call what main has today (llama.plots' compute functions,
llama.hooks, llama.explain's walkthrough). When llama/analysis/ lands, each function
here calls the analysis function of the same view instead and keeps its payload; the
server, the page, the Jupyter views and the exports never see the difference.

Every function takes the ModelHandle, the client's token ids and the parsed options,
and runs the model only under the handle's lock (`full_run` for captures, which leaves
the KV cache holding exactly `ids`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from llama.checks import check_index

from ._json import Vocab, finite_or_none, ints, pack_unit_u16, rounded, significant, token_list
from ._registry import EngineError
from ._state import ModelHandle

# Attention probabilities of all layers travel only while they stay this small
# (L x H x T x T cells, 2 bytes each); beyond it, one layer at a time.
MAX_ATTENTION_CELLS = 3_000_000
MAX_LENS_CELLS = 250_000  # stages x positions x k candidates kept for click-through
LENS_CHUNK = 1 << 24  # logits computed at once by the lens (64 MiB of float32)


def stage_labels(n_layers: int) -> list[str]:
    return ["embed"] + [f"L{i}" for i in range(n_layers)]


def stage_hooks(n_layers: int) -> list[str]:
    return ["tok_embeddings"] + [f"layers.{i}.resid_post" for i in range(n_layers)]


def _need_ids(ids) -> None:
    if not ids:
        raise EngineError("there is no text yet: type some first")


def capture(h: ModelHandle, ids, names, memo: dict | None = None) -> dict[str, torch.Tensor]:
    """One forward pass of ids from position 0; the named intermediates, float32 on CPU.

    memo (the client's, cleared whenever its ids change) keeps the last capture, so
    opening the lens after the residual view does not run the model again.
    """
    from llama.hooks import resolve_names, run_with_cache

    wanted = set(resolve_names(h.model, list(names)))
    if memo is not None and "capture" in memo:
        have = memo["capture"]
        if wanted <= set(have):
            return have
        wanted |= set(have)  # one run for both: the views are often opened one after another
    with h.full_run(ids):
        logits, cache = run_with_cache(h.model, h.tensor(ids), names=sorted(wanted),
                                       to_cpu=True, dtype=torch.float32)
    out = dict(cache)
    out.setdefault("logits", logits.detach().float().cpu())
    if memo is not None:
        memo["capture"] = out
    return out


def _position(pos: int, T: int) -> int:
    return check_index(pos, T, "position", f"tokens in the text ({T})", error=EngineError)


def _layer(layer: int, L: int) -> int:
    return check_index(layer, L, "layer", "layers", error=EngineError)


def _head(head: int, H: int) -> int:
    return check_index(head, H, "head", "query heads per layer", error=EngineError)


# ----------------------------------------------------------------------------------
# Prompt views
# ----------------------------------------------------------------------------------


def attention(h: ModelHandle, ids, opts, memo=None) -> dict:
    _need_ids(ids)
    a = h.model.args
    L, H, T = a.n_layers, a.n_heads, len(ids)
    all_fit = L * H * T * T <= MAX_ATTENTION_CELLS
    if opts["layer"] is None:
        layers = list(range(L)) if all_fit else [0]
    else:
        layers = [_layer(opts["layer"], L)]
    warnings = []
    if opts["layer"] is None and not all_fit:
        warnings.append(f"{T} tokens: all {L} layers' attention would be "
                        f"{L * H * T * T * 2 / 2**20:.0f} MiB, so only layer 0 is sent; "
                        "choose another layer above.")
    # First-token share of every layer and head, and the full maps of the chosen layers,
    # from one forward pass; the maps not sent are reduced as they pass and dropped.
    from llama.hooks import intervene

    share = np.zeros((L, H))
    maps: dict[int, torch.Tensor] = {}
    bad = []

    def observe(value: torch.Tensor, name: str) -> torch.Tensor:  # (B, H, T, S)
        i = int(name.split(".")[1])
        p = value[0].detach().float()
        if not torch.isfinite(p).all():
            bad.append(i)
        q0 = 1 if p.shape[1] > 1 else 0  # the first query can only look at itself
        share[i] = p[:, q0:, 0].mean(-1).cpu().numpy()
        if i in layers:
            maps[i] = p.cpu()
        return value

    with h.full_run(ids), intervene(h.model, {"layers.*.attention.probs": observe}):
        h.model(h.tensor(ids))
    if bad:
        warnings.append(f"attention probabilities are not finite in layers {sorted(set(bad))}: "
                        "those maps are not drawn")
    stacked = torch.stack([torch.nan_to_num(maps[i], nan=0.0) for i in layers])  # (n, H, T, T)
    return {
        "kind": "attention", "n_layers": L, "n_heads": H, "n_kv_heads": a.n_kv_heads,
        "layers": layers, "probs": pack_unit_u16(stacked), "first_token_share": rounded(share, 4),
        "non_finite_layers": sorted(set(bad)), "warnings": warnings,
    }


def lens(h: ModelHandle, ids, opts, memo=None) -> dict:
    _need_ids(ids)
    L, T = h.model.args.n_layers, len(ids)
    S = L + 1
    k = max(1, min(opts["k"], MAX_LENS_CELLS // max(1, S * T)))
    cache = capture(h, ids, ["tok_embeddings", "layers.*.resid_post"], memo)
    model = h.model
    w = model.norm.weight
    # Stages go through the final norm and the output matrix as the model's last one does
    # (so the last stage is its prediction), many rows per product, but never more than
    # LENS_CHUNK logits at once (a long text times the vocabulary is large).
    x = torch.cat([cache[name][0] for name in stage_hooks(L)]).to(device=w.device, dtype=w.dtype)  # (S*T, D)
    V = model.args.vocab_size
    rows = max(T, LENS_CHUNK // V)
    with torch.no_grad():
        final = model.output(model.norm(x[-T:])).float().argmax(-1).cpu()  # (T,) the model's choice
        parts = []
        for start in range(0, S * T, rows):
            logits = model.output(model.norm(x[start:start + rows])).float().cpu()  # (rows, V)
            bad = (~torch.isfinite(logits)).any(-1)
            probs = torch.softmax(torch.nan_to_num(logits, nan=-1e30), -1)
            p, i = probs.topk(k, dim=-1)  # (rows, k)
            pos = torch.arange(start, start + len(logits)) % T
            parts.append((p, i, probs.gather(-1, final[pos][:, None])[:, 0], bad))
    cand_p = torch.cat([q[0] for q in parts]).reshape(S, T, k)
    cand_ids = torch.cat([q[1] for q in parts]).reshape(S, T, k)
    probs_of_final = torch.cat([q[2] for q in parts]).reshape(S, T)
    non_finite = int(torch.cat([q[3] for q in parts]).sum())
    top_ids, top_p = cand_ids[..., 0], cand_p[..., 0]
    vocab = Vocab(h.tok)
    vocab.add(cand_ids.reshape(-1).tolist())
    return {
        "kind": "lens", "stages": stage_labels(L), "stage_hooks": stage_hooks(L), "k": k,
        "top_ids": ints(top_ids), "top_probs": rounded(top_p, 4),
        "cand_ids": ints(cand_ids), "cand_probs": rounded(cand_p, 4),
        "final_ids": ints(final), "final_probs": rounded(probs_of_final, 4),
        "vocab": vocab.payload(),
        "warnings": [f"{non_finite} (stage, position) cells had non-finite logits"] if non_finite else [],
    }


def residual(h: ModelHandle, ids, opts, memo=None) -> dict:
    _need_ids(ids)
    from llama.plots import activation_stats, parse_stages, pca_stages  # STOPGAP: llama.analysis

    L, T = h.model.args.n_layers, len(ids)
    cache = capture(h, ids, ["tok_embeddings", "layers.*.resid_post", "layers.*.feed_forward.act"], memo)
    if opts["stages"] is not None:
        bad = [s for s in opts["stages"] if not 0 <= s <= L]
        if bad:
            raise EngineError(f"stage {bad[0]} is out of range: stages are 0 (embeddings) .. {L} "
                              f"(after block {L - 1})")
        stages = list(dict.fromkeys(opts["stages"]))
    else:
        stages = parse_stages(None, L)  # about six spread from the embeddings to the last block
    warnings, grid, traj, positions = [], None, None, list(range(T))
    n_points = T - (1 if opts["skip_first"] else 0)
    finite = all(torch.isfinite(cache[n]).all() for n in stage_hooks(L))
    if not finite:
        warnings.append("the residual stream has non-finite values: no PCA is drawn")
    elif n_points < 2:
        warnings.append("PCA needs at least 2 tokens: type a longer text")
    else:
        g = pca_stages(cache, stages, dims=3, view="grid", skip_first=opts["skip_first"])
        grid = [{"stage": s, "label": stage_labels(L)[s], "coords": rounded(f.coords, 4),
                 "variance": rounded(f.explained_variance_ratio, 4)}
                for s, f in zip(g.stages, g.per_stage)]
        t = pca_stages(cache, list(range(L + 1)), dims=3, view="trajectory",
                       skip_first=opts["skip_first"])
        traj = {"coords": [rounded(c, 4) for c in t.coords],
                "variance": rounded(t.per_stage[0].explained_variance_ratio, 4)}
        positions = g.positions
    act = activation_stats(cache)
    return {
        "kind": "residual", "stages": stage_labels(L), "stage_hooks": stage_hooks(L),
        "pca_stages": stages, "positions": positions,
        "grid": grid, "trajectory": traj,
        "resid_norm": significant(act.resid_norm), "mlp_mean_abs": significant(act.mlp_mean_abs),
        "mlp_max_abs": significant(act.mlp_max_abs), "warnings": warnings,
    }


def saliency(h: ModelHandle, ids, opts, memo=None) -> dict:
    _need_ids(ids)
    from llama.plots import saliency as plots_saliency  # STOPGAP: llama.analysis

    pos = _position(opts["position"], len(ids))
    V = h.model.args.vocab_size
    if opts["target"] is not None and not 0 <= opts["target"] < V:
        raise EngineError(f"target token id must be in 0..{V - 1}, got {opts['target']}")
    with h.dirty_run():
        s = plots_saliency(h.model, h.tensor(ids), pos, opts["target"])
    vocab = Vocab(h.tok)
    vocab.add([s.target_id])
    warnings = [] if np.isfinite(s.scores).all() else ["some scores are not finite (shown blank)"]
    return {"kind": "saliency", "position": pos, "target": int(s.target_id),
            "target_logprob": finite_or_none(s.target_logprob, 5),
            "target_prob": finite_or_none(math.exp(s.target_logprob) if math.isfinite(s.target_logprob) else float("nan"), 5),
            "scores": rounded(s.scores, 5), "grad_norm": significant(s.grad_norm),
            "vocab": vocab.payload(), "warnings": warnings}


def tour(h: ModelHandle, ids, opts, memo=None, text: str = "") -> dict:
    _need_ids(ids)
    from llama.explain import ExplainError, walkthrough

    from ._source import source_line_payload

    prompt = text or h.tok.decode(ids)
    try:
        with h.dirty_run():
            w = walkthrough(h.model, h.tok, prompt, layers=[opts["layer"]], head=opts["head"],
                            pair=opts["pair"], position=opts["position"], model_label=h.name)
    except ExplainError as e:
        raise EngineError(str(e)) from None
    stages = [{"title": st.title, "what": st.what, "body": st.body,
               "sources": [dict(source_line_payload(line), label=label) for label, line in st.sources]}
              for st in w.stages]
    return {"kind": "tour", "prompt": prompt, "header": w.header, "layer": w.layers[0],
            "head": w.head, "pair": w.pair, "position": w.position,
            "tokens": token_list(h.tok, w.token_ids), "stages": stages, "warnings": []}


# ----------------------------------------------------------------------------------
# Model views
# ----------------------------------------------------------------------------------


def summary(h: ModelHandle, opts) -> dict:
    from llama.plots import model_summary  # STOPGAP: llama.analysis

    s = model_summary(h.model, name=h.name)
    return {"kind": "summary", "name": s.name, "config": [list(r) for r in s.config],
            "params": s.params, "total_params": s.total_params, "tied": s.tied,
            "kv_bytes_per_token": s.kv_bytes_per_token, "kv_bytes_full": s.kv_bytes_full,
            "weight_bytes": {k: int(v) for k, v in s.weight_bytes.items()}, "loaded": s.loaded,
            "max_seq_len": h.max_len, "family": type(h.model).__name__, "warnings": []}


def _symbolic_shape(name: str, shape) -> list:
    """(1, 3, 576) -> ["B", "T", 576] for a 3-token probe (scores/probs: (B, H, T, S))."""
    local = name.rsplit(".", 1)[-1]
    out = list(shape)
    out[0] = "B"
    if local in ("scores", "probs"):
        out[2], out[3] = "T", "S"
    elif len(out) > 1:
        out[1] = "T"
    return out


def architecture(h: ModelHandle, opts) -> dict:
    """The forward pass of one block as boxes with real dimensions and hook names: the
    shapes are measured (a 3-token probe through llama.hooks.hook_shapes), not written
    down, so they are right for any model family."""
    from llama.hooks import hook_shapes

    from ._source import locate

    model, a = h.model, h.model.args
    with h.dirty_run():
        shapes = hook_shapes(model, h.tensor([0, 0, 0]))
    names = [n for n in model.hook_names() if not n.startswith("layers.") or n.startswith("layers.0.")]
    boxes = []
    for n in names:
        generic = n.replace("layers.0.", "layers.*.")
        src = locate(model, n)
        boxes.append({"hook": generic, "shape": _symbolic_shape(n, shapes[n]),
                      "in_block": n.startswith("layers."),
                      "line": src.get("line"), "path": src.get("path"), "code": src.get("text")})
    params = [{"name": n, "shape": list(p.shape)} for n, p in model.layers[0].named_parameters()]
    top_params = [{"name": n, "shape": list(p.shape)} for n, p in model.named_parameters()
                  if not n.startswith("layers.")]
    dims = {"D": a.dim, "H": a.n_heads, "KV": a.n_kv_heads, "Hd": a.head_dim, "F": a.hidden_dim,
            "V": a.vocab_size, "L": a.n_layers, "max_seq_len": a.max_seq_len,
            "n_rep": a.n_heads // a.n_kv_heads}
    return {"kind": "architecture", "family": type(model).__name__, "dims": dims, "boxes": boxes,
            "block_params": params, "top_params": top_params,
            "tied": model.output.weight is model.tok_embeddings.weight, "warnings": []}


def params(h: ModelHandle, opts) -> dict:
    from llama.plots import param_stats  # STOPGAP: llama.analysis
    from llama.plots.params import SHORT

    if "params" not in h.memo:
        try:
            h.memo["params"] = param_stats(h.model)
        except (AttributeError, KeyError) as e:  # a family whose tensors have other names
            raise EngineError(f"parameter statistics do not know this model's layout ({e})") from None
    ps = h.memo["params"]
    L = ps.n_layers
    shown = sorted({0, L // 2, L - 1})
    hist = {k: {"edges": significant(ps.hist_edges[k]), "layers": shown,
                "counts": ints(ps.hist[k][shown])} for k in ps.stats}
    return {"kind": "params", "n_layers": L, "kinds": list(ps.stats), "short": {k: SHORT.get(k, k) for k in ps.stats},
            "stats": {k: {st: significant(v) for st, v in d.items()} for k, d in ps.stats.items()},
            "hist": hist,
            "others": {k: {f: finite_or_none(getattr(v, f), 6) for f in ("numel", "mean", "std", "norm", "absmax")}
                       for k, v in ps.others.items()},
            "warnings": []}


def rope(h: ModelHandle, opts) -> dict:
    from llama.plots import rope_table  # STOPGAP: llama.analysis

    t = rope_table(h.model.args, opts["positions"])
    return {"kind": "rope", "head_dim": t.head_dim, "theta": t.theta,
            "inv_freq": significant(t.inv_freq, 5), "inv_freq_scaled": significant(t.inv_freq_scaled, 5),
            "wavelength": significant(t.wavelength, 5), "wavelength_scaled": significant(t.wavelength_scaled, 5),
            "scaling": {k: float(v) for k, v in t.scaling.items()},
            "scaling_is_models_own": bool(t.scaling_is_models_own),
            "positions": int(len(t.positions)), "cos": rounded(t.cos, 3), "sin": rounded(t.sin, 3),
            "warnings": []}
