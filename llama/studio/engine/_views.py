"""The studio's views of a text and of the model, as JSON payloads (schemas: docs/STUDIO.md).

Every number comes from the library: `llama.analysis.compute_view` on the client's
ViewSource (llama.session.Session.view_source: captures run through the session, so its
KV-cache record stays true), llama.explain for the tour, llama.hooks.hook_shapes and
llama.source for the architecture. What is here is presentation: which library views a
page shows together, rounding, packing, labels, and the limits that keep a payload small.
The engine calls each builder with the model's lock held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llama.analysis import (
    AnalysisError,
    View,
    ViewSource,
    attention_maps,
    compute_view,
    first_token_share,
    pca,
    stage_label,
)

from llama.checks import check_index

from ._json import ints, pack_unit_u16, rounded, significant, token_list
from ._kinds import EngineError

# Attention probabilities of all layers travel only while they stay this small
# (L x H x T x T cells, 2 bytes each); beyond it, one layer at a time.
MAX_ATTENTION_CELLS = 3_000_000
MAX_LENS_CELLS = 250_000  # stages x positions x k candidates kept for click-through
MAX_POSITION_MAP = 256  # positions in the similarity map sent (every n-th beyond it)


@dataclass
class Job:
    """What a builder needs: the model, its tokenizer and name, the ViewSource (the text's,
    or the model alone), the parsed options, and the client (None for model views)."""

    model: torch.nn.Module
    tok: Any
    name: str
    src: ViewSource
    opts: dict
    client: Any = None

    @property
    def args(self):
        return self.model.args

    def compute(self, kind: str, **options) -> View:
        return compute_view(kind, self.src, options)


def vocab_payload(labels: dict) -> dict[str, str]:
    """A View's labels ({id: text}) as the payload's "vocab"."""
    return {str(k): v for k, v in sorted(labels.items())}


# ----------------------------------------------------------------------------------
# A text's views
# ----------------------------------------------------------------------------------


def attention(job: Job) -> dict:
    a, src = job.args, job.src
    L, H, T = a.n_layers, a.n_heads, len(src.ids)
    all_fit = L * H * T * T <= MAX_ATTENTION_CELLS
    chosen = job.opts["layer"]
    if chosen is not None:
        chosen = check_index(chosen, L, "layer", "layers", error=EngineError)
    warnings = []
    if all_fit:  # every layer's maps from one capture; the share of every head from them
        v = job.compute("attention", view="sink")
        share = first_token_share(v.data)
        layers = list(range(L)) if chosen is None else [chosen]
    else:  # one layer's maps; the share a few layers at a time
        layer = 0 if chosen is None else chosen
        v = job.compute("attention", layer=layer, view="grid")
        share = _share_in_chunks(src, L, H, T)
        layers = [layer]
        if chosen is None:
            warnings.append(f"{T} tokens: all {L} layers' attention would be "
                            f"{L * H * T * T * 2 / 2**20:.0f} MiB, so only layer 0 is sent; "
                            "choose another layer above.")
    maps = v.data.probs
    bad = sorted(i for i in range(L) if i in maps and not np.isfinite(maps[i]).all())
    if bad:
        warnings.append(f"attention probabilities are not finite in layers {bad}: those maps are "
                        "not drawn")
    stacked = np.stack([np.nan_to_num(maps[i], nan=0.0) for i in layers])  # (n, H, T, T)
    return {
        "kind": "attention", "n_layers": L, "n_heads": H, "n_kv_heads": a.n_kv_heads,
        "layers": layers, "probs": pack_unit_u16(stacked), "first_token_share": rounded(share, 4),
        "non_finite_layers": bad, "warnings": warnings,
        "reads": ["layers.*.attention.probs"],  # the share is every layer's, whatever is sent
    }


def _share_in_chunks(src: ViewSource, L: int, H: int, T: int) -> np.ndarray:
    """First-token share of every layer and head for a text whose attention maps do not
    all fit at once: a few layers per capture (src.run: through the session, not kept)."""
    per = max(1, MAX_ATTENTION_CELLS * 4 // max(1, H * T * T))
    rows = []
    for start in range(0, L, per):
        chunk = list(range(start, min(L, start + per)))
        cache = src.run([f"layers.{i}.attention.probs" for i in chunk])
        rows.append(first_token_share(attention_maps(cache, chunk, n_layers=L)))
    return np.concatenate(rows)


def lens(job: Job) -> dict:
    L, T = job.args.n_layers, len(job.src.ids)
    S = L + 1
    k = max(1, min(job.opts["k"], MAX_LENS_CELLS // max(1, S * T)))
    v = job.compute("lens", k=k)
    d = v.data
    top_p = np.asarray(d.top_probs, dtype=np.float64)
    non_finite = int((~np.isfinite(top_p)).sum())
    return {
        "kind": "lens", "stages": [stage_label(s) for s in d.stages], "stage_hooks": v.hooks,
        "k": k, "top_ids": ints(d.top_ids), "top_probs": rounded(d.top_probs, 4),
        "cand_ids": ints(d.ranked_ids), "cand_probs": rounded(d.ranked_probs, 4),
        "final_ids": ints(d.final_ids), "final_probs": rounded(d.final_token_probs, 4),
        "stage0": d.input_label, "vocab": vocab_payload(v.labels),
        "warnings": [f"{non_finite} (stage, position) cells had non-finite logits"] if non_finite else [],
        "reads": v.hooks + ["norm", "logits"],
    }


def _stage_spec(stages: list[int] | None, L: int) -> str | None:
    """The studio's stage numbers (0 = embeddings, i + 1 = after block i) as the library's
    layer spec ("emb,0,5")."""
    if stages is None:
        return None
    bad = [s for s in stages if not 0 <= s <= L]
    if bad:
        raise EngineError(f"stage {bad[0]} is out of range: stages are 0 (embeddings) .. {L} "
                          f"(after block {L - 1})")
    return ",".join("emb" if s == 0 else str(s - 1) for s in dict.fromkeys(stages))


def residual(job: Job) -> dict:
    L, T = job.args.n_layers, len(job.src.ids)
    skip = job.opts["skip_first"]
    spec = _stage_spec(job.opts["stages"], L)  # bad stages said before anything runs
    act = job.compute("activations")  # captures the residual stream and the MLP activations
    stage_hooks = act.hooks[: L + 1]
    finite = all(torch.isfinite(job.src.cache[n]).all() for n in stage_hooks)
    warnings, grid, traj, positions, stages = [], None, None, list(range(T)), None
    if not finite:
        warnings.append("the residual stream has non-finite values: no PCA is drawn")
    elif T - (1 if skip else 0) < 2:
        warnings.append("PCA needs at least 2 tokens: type a longer text")
    else:
        g = job.compute("pca", layers=spec, view="grid", dims=3, skip_first=skip).data
        t = job.compute("pca", view="trajectory", dims=3, skip_first=skip).data
        stages, positions = g.stages, g.positions
        grid = [{"stage": s, "label": stage_label(s), "coords": rounded(f.coords, 4),
                 "variance": rounded(f.explained_variance_ratio, 4)}
                for s, f in zip(g.stages, g.per_stage)]
        traj = {"coords": [rounded(c, 4) for c in t.coords],
                "variance": rounded(t.per_stage[0].explained_variance_ratio, 4)}
    a = act.data
    if stages is None:
        from llama.analysis import parse_stages

        stages = parse_stages(spec, L)
    return {
        "kind": "residual", "stages": [stage_label(s) for s in range(L + 1)], "stage_hooks": stage_hooks,
        "stage0": a.input_label, "pca_stages": stages, "positions": positions,
        "grid": grid, "trajectory": traj,
        "resid_norm": significant(a.resid_norm), "mlp_mean_abs": significant(a.mlp_mean_abs),
        "mlp_max_abs": significant(a.mlp_max_abs), "mlp": job.src.family.mlp,
        "warnings": warnings, "reads": act.hooks,
    }


def embeddings(job: Job) -> dict:
    try:
        v = job.compute("embeddings", dims=job.opts["dims"])
    except AnalysisError as e:
        if "at least 2 different tokens" not in str(e):
            raise
        return {"kind": "embeddings", "ids": [], "positions": [], "coords": None, "variance": None,
                "norms": [], "dims": job.opts["dims"], "vocab": {}, "warnings": [_sentence(str(e))],
                "reads": ["tok_embeddings"]}
    d = v.data
    return {"kind": "embeddings", "ids": [int(i) for i in d.ids], "positions": list(d.positions),
            "coords": rounded(d.fit.coords, 4), "variance": rounded(d.fit.explained_variance_ratio, 4),
            "norms": significant(d.norms), "dims": d.dims, "vocab": vocab_payload(v.labels),
            "dim": int(job.args.dim), "vocab_size": int(job.args.vocab_size), "warnings": [], "reads": v.hooks}


def saliency(job: Job) -> dict:
    v = job.compute("saliency", position=job.opts["position"], target=job.opts["target"])
    s = v.data
    lp = float(s.target_logprob)
    warnings = [] if np.isfinite(s.scores).all() else ["some scores are not finite (shown blank)"]
    return {"kind": "saliency", "position": int(s.position), "target": int(s.target_id),
            "target_logprob": round(lp, 5) if math.isfinite(lp) else None,
            "target_prob": round(math.exp(lp), 5) if math.isfinite(lp) else None,
            "scores": rounded(s.scores, 5), "grad_norm": significant(s.grad_norm),
            "vocab": vocab_payload(v.labels), "warnings": warnings, "reads": v.hooks}


def tour(job: Job) -> dict:
    from llama.explain import ExplainError, walkthrough

    from ._source import line_payload

    ids, client = job.src.ids, job.client
    text = client.text if client is not None else ""
    chat = client is not None and client.session.settings.chat
    # The walkthrough tokenizes a prompt itself: the typed text when it gives these very
    # tokens, else the tokens decoded (after picks, generations or a chat template).
    prompt = text if text and not chat and list(job.tok.encode(text)) == ids else job.tok.decode(ids)
    o = job.opts
    try:
        w = walkthrough(job.model, job.tok, prompt, layers=[o["layer"]], head=o["head"],
                        pair=o["pair"], position=o["position"], model_label=job.name)
    except ExplainError as e:
        raise EngineError(str(e)) from None
    finally:
        job.model.reset_cache()
    stages = [{"title": st.title, "what": st.what, "body": st.body,
               "sources": [dict(line_payload(line), label=label) for label, line in st.sources]}
              for st in w.stages]
    return {"kind": "tour", "prompt": prompt, "header": w.header, "layer": w.layers[0],
            "head": w.head, "pair": w.pair, "position": w.position,
            "tokens": token_list(job.tok, w.token_ids), "stages": stages, "warnings": []}


# ----------------------------------------------------------------------------------
# The model's views
# ----------------------------------------------------------------------------------


def summary(job: Job) -> dict:
    s = job.compute("summary").data
    return {"kind": "summary", "name": s.name, "config": [list(r) for r in s.config],
            "params": s.params, "total_params": s.total_params, "tied": s.tied,
            "kv_bytes_per_token": s.kv_bytes_per_token, "kv_bytes_full": s.kv_bytes_full,
            "weight_bytes": {k: int(v) for k, v in s.weight_bytes.items()}, "loaded": s.loaded,
            "notes": list(s.notes), "max_seq_len": int(job.args.max_seq_len),
            "family": job.src.family.title, "warnings": []}


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


def architecture(job: Job) -> dict:
    """The forward pass of one block as boxes with real dimensions and hook names: the
    shapes are measured (a 3-token probe through llama.hooks.hook_shapes), not written
    down, so they are right for any model family."""
    from llama.hooks import hook_shapes

    from ._source import locate

    model, a = job.model, job.args
    device = model.tok_embeddings.weight.device
    try:
        shapes = hook_shapes(model, torch.zeros((1, 3), dtype=torch.long, device=device))
    finally:
        model.reset_cache()
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
    f = job.src.family
    dims = {"D": a.dim, "H": a.n_heads, "KV": a.n_kv_heads, "Hd": a.head_dim, "F": a.hidden_dim,
            "V": a.vocab_size, "L": a.n_layers, "max_seq_len": a.max_seq_len,
            "n_rep": a.n_heads // a.n_kv_heads}
    return {"kind": "architecture", "family": f.title, "norm": f.norm, "mlp": f.mlp,
            "positions": f.positions, "dims": dims, "boxes": boxes,
            "block_params": params, "top_params": top_params,
            "tied": model.output.weight is model.tok_embeddings.weight, "warnings": []}


def params(job: Job) -> dict:
    ps = job.compute("params").data  # computed once per engine (ViewSource.param_stats)
    L = ps.n_layers
    shown = sorted({0, L // 2, L - 1})
    kinds = ps.kinds
    hist = {k: {"edges": significant(ps.hist_edges[k]), "layers": shown,
                "counts": ints(ps.hist[k][shown])} for k in kinds}
    return {"kind": "params", "n_layers": L, "kinds": kinds, "matrices": list(ps.matrices),
            "vectors": list(ps.vectors), "norm": ps.norm,
            "short": {k: ps.labels.get(k) or k.rsplit(".", 1)[-1] for k in kinds},
            "stats": {k: {st: significant(v) for st, v in ps.stats[k].items()} for k in kinds},
            "hist": hist,
            "others": {k: {f: _finite(getattr(v, f)) for f in ("numel", "mean", "std", "norm", "absmax")}
                       for k, v in ps.others.items()},
            "warnings": []}


def rope(job: Job) -> dict:
    t = job.compute("rope", positions=job.opts["positions"]).data
    return {"kind": "rope", "head_dim": t.head_dim, "theta": t.theta,
            "inv_freq": significant(t.inv_freq, 5), "inv_freq_scaled": significant(t.inv_freq_scaled, 5),
            "wavelength": significant(t.wavelength, 5), "wavelength_scaled": significant(t.wavelength_scaled, 5),
            "scaling": {k: float(v) for k, v in t.scaling.items()},
            "scaling_is_models_own": bool(t.scaling_is_models_own),
            "positions": int(len(t.positions)), "cos": rounded(t.cos, 3), "sin": rounded(t.sin, 3),
            "warnings": []}


def positions(job: Job) -> dict:
    d = job.compute("positions", positions=job.opts["positions"]).data
    P = d.n_positions
    step = max(1, math.ceil(P / MAX_POSITION_MAP))
    shown = list(range(0, P, step))
    cos = d.cosine[shown][:, shown]  # (P', P')
    fit = pca(d.matrix, 3)  # each position's vector in the top 3 principal axes
    return {"kind": "positions", "n_positions": P, "n_learned": d.n_learned, "dim": int(d.matrix.shape[1]),
            "norms": significant(d.norms), "by_offset": rounded(d.by_offset, 4),
            "map_positions": shown, "cosine": pack_unit_u16((cos.clamp(-1, 1) + 1) / 2),
            "coords": rounded(fit.coords, 4), "variance": rounded(fit.explained_variance_ratio, 4),
            "warnings": [] if step == 1 else [f"the similarity map shows every {step}th of the {P} positions"]}


def _finite(x) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


TEXT_BUILDERS = {"attention": attention, "lens": lens, "residual": residual,
                 "embeddings": embeddings, "saliency": saliency, "tour": tour}
MODEL_BUILDERS = {"summary": summary, "architecture": architecture, "params": params,
                  "rope": rope, "positions": positions}

__all__ = ["Job", "TEXT_BUILDERS", "MODEL_BUILDERS", "MAX_ATTENTION_CELLS", "vocab_payload"]
