"""Attribution and interventions for the studio, written by hand with llama.hooks.

STOPGAP (issue 14): llama.interp will provide logit_attribution, head ablation, steering
and patching, tested against hand computations and transformers. When it lands, `dla`
calls `llama.interp.logit_attribution` and `intervene` the matching llama.interp helpers;
the payloads (docs/STUDIO.md) stay as they are. Until then these are the plain textbook
versions, checked by tests/test_studio_engine.py (the DLA parts sum to the logit; an
ablated head's output is really zero; a patch from the same prompt changes nothing).
"""

from __future__ import annotations

import torch

from ._json import Vocab, finite_or_none, rounded
from ._registry import EngineError
from ._state import ModelHandle, Sampling, topk_table
from ._views import _head, _layer, _need_ids, _position, capture


def _frozen_norm(model, x_final: torch.Tensor):
    """The final norm as a linear map with its scale frozen at the full residual's value.

    Returns (apply(part) -> normed part, bias or None). RMSNorm: part * rsqrt(mean(x^2)
    + eps) * weight. LayerNorm (GPT-2): (part - mean(part)) * rsqrt(var(x) + eps) * weight,
    and its bias is a part of its own.
    """
    norm = model.norm
    w = norm.weight.detach().float().cpu()
    x = x_final.double()
    if isinstance(norm, torch.nn.LayerNorm):
        scale = torch.rsqrt(x.var(unbiased=False) + norm.eps)
        bias = norm.bias.detach().float().cpu() if norm.bias is not None else None
        return (lambda p: ((p.double() - p.double().mean()) * scale).float() * w), bias, float(scale)
    eps = getattr(norm, "eps", 1e-6)
    scale = torch.rsqrt(x.pow(2).mean() + eps)
    return (lambda p: (p.double() * scale).float() * w), None, float(scale)


def dla(h: ModelHandle, ids, opts, memo=None) -> dict:
    """Direct logit attribution of the target token at one position."""
    _need_ids(ids)
    model, a = h.model, h.model.args
    L, H, Hd, V = a.n_layers, a.n_heads, a.head_dim, a.vocab_size
    pos = _position(opts["position"], len(ids))
    cache = capture(h, ids, ["tok_embeddings", "layers.*.attention.heads", "layers.*.attention.out",
                             "layers.*.feed_forward.out", "layers.*.resid_post"], memo)
    logits = cache["logits"][0, pos]
    if not torch.isfinite(logits).all():
        raise EngineError("the logits at this position are not finite: nothing to attribute")
    target = int(logits.argmax()) if opts["target"] is None else opts["target"]
    for what, t in (("target", target), ("contrast", opts["contrast"])):
        if t is not None and not 0 <= t < V:
            raise EngineError(f"{what} token id must be in 0..{V - 1}, got {t}")
    W = model.output.weight.detach().float().cpu()
    direction = W[target].clone()  # (D,)
    if opts["contrast"] is not None:
        direction -= W[opts["contrast"]]
    x_final = cache[f"layers.{L - 1}.resid_post"][0, pos]
    apply, bias, scale = _frozen_norm(model, x_final)

    def score(part: torch.Tensor) -> float:
        return float(apply(part) @ direction)

    parts = [{"name": "embed", "group": "embed", "layer": None, "head": None,
              "value": score(cache["tok_embeddings"][0, pos])}]
    heads = torch.zeros(L, H)
    attn, mlp = torch.zeros(L), torch.zeros(L)
    for i in range(L):
        wo = model.layers[i].attention.wo
        W_o = wo.weight.detach().float().cpu()  # (D, H * Hd)
        per_head = cache[f"layers.{i}.attention.heads"][0, pos]  # (H, Hd)
        for j in range(H):
            # Head j's share of attention.out: its Hd outputs times its slice of wo.
            share = W_o[:, j * Hd:(j + 1) * Hd] @ per_head[j]  # (D,)
            heads[i, j] = score(share)
            parts.append({"name": f"L{i}H{j}", "group": "head", "layer": i, "head": j,
                          "value": float(heads[i, j])})
        attn[i] = score(cache[f"layers.{i}.attention.out"][0, pos])
        if wo.bias is not None:
            parts.append({"name": f"L{i} attn bias", "group": "bias", "layer": i, "head": None,
                          "value": float(attn[i] - heads[i].sum())})
        mlp[i] = score(cache[f"layers.{i}.feed_forward.out"][0, pos])
        parts.append({"name": f"L{i} MLP", "group": "mlp", "layer": i, "head": None, "value": float(mlp[i])})
    if bias is not None:
        parts.append({"name": "final norm bias", "group": "bias", "layer": None, "head": None,
                      "value": float(bias @ direction)})
    out_bias = getattr(model.output, "bias", None)
    if out_bias is not None:
        b = out_bias.detach().float().cpu()
        parts.append({"name": "output bias", "group": "bias", "layer": None, "head": None,
                      "value": float(b[target] - (b[opts["contrast"]] if opts["contrast"] is not None else 0))})
    # Each attention output is its heads' shares (+ wo's bias): the parts are the embedding,
    # every head, every MLP and the biases, and they add up to the logit (float32 rounding).
    total = sum(p["value"] for p in parts)
    actual = float(logits[target] - (logits[opts["contrast"]] if opts["contrast"] is not None else 0))
    for p in parts:
        p["value"] = finite_or_none(p["value"], 5)
    vocab = Vocab(h.tok)
    vocab.add([target] + ([opts["contrast"]] if opts["contrast"] is not None else []))
    return {"kind": "dla", "position": pos, "target": target, "contrast": opts["contrast"],
            "logit": finite_or_none(actual, 5), "total": finite_or_none(total, 5),
            "norm_scale": finite_or_none(scale, 6), "parts": parts,
            "heads": rounded(heads, 5), "attn": rounded(attn, 5), "mlp": rounded(mlp, 5),
            "vocab": vocab.payload(), "stopgap": "hand-written with llama.hooks; llama.interp replaces it",
            "warnings": []}


def _edits(h: ModelHandle, ids, opts):
    """{hook: fn} for the chosen intervention, and a sentence saying what it does."""
    from llama.hooks import ablate_heads, add_vector, patch_from, run_with_cache

    a = h.model.args
    edit = opts["edit"]
    layer = _layer(opts["layer"], a.n_layers)
    if edit == "ablate_head":
        head = _head(opts["head"], a.n_heads)
        name = f"layers.{layer}.attention.heads"
        if opts["mode"] == "zero":
            return {name: ablate_heads(head)}, f"head {head} of layer {layer} zeroed ({name})"

        def mean_head(v: torch.Tensor) -> torch.Tensor:  # (B, T, H, Hd)
            out = v.clone()
            out[:, :, head] = v[:, :, head].mean(1, keepdim=True)
            return out
        return {name: mean_head}, f"head {head} of layer {layer} replaced by its mean over positions ({name})"
    if edit in ("ablate_attn", "ablate_mlp"):
        name = f"layers.{layer}.attention.out" if edit == "ablate_attn" else f"layers.{layer}.feed_forward.out"
        what = "attention" if edit == "ablate_attn" else "MLP"
        if opts["mode"] == "zero":
            return {name: lambda v: torch.zeros_like(v)}, f"the {what} output of layer {layer} zeroed ({name})"
        return ({name: lambda v: v.mean(1, keepdim=True).expand_as(v).clone()},
                f"the {what} output of layer {layer} replaced by its mean over positions ({name})")
    if edit == "steer":
        if not opts["prompt_a"] or not opts["prompt_b"]:
            raise EngineError("steer needs two prompts: prompt_a and prompt_b (the vector is "
                              "resid(A) - resid(B) at the chosen layer)")
        name = f"layers.{layer}.resid_post"
        vecs = []
        for p in (opts["prompt_a"], opts["prompt_b"]):
            pid = list(h.tok.encode(p))
            if not pid:
                raise EngineError(f"the steering prompt {p!r} encodes to no tokens")
            if len(pid) > h.max_len:
                raise EngineError(f"the steering prompt is {len(pid)} tokens, more than the context {h.max_len}")
            with h.dirty_run():
                _, c = run_with_cache(h.model, h.tensor(pid), names=[name], to_cpu=True, dtype=torch.float32)
            r = c[name][0]  # (T, D)
            vecs.append(r.mean(0) if opts["reduce"] == "mean" else r[-1])
        vec = vecs[0] - vecs[1]
        return ({name: add_vector(vec, scale=opts["scale"])},
                f"{opts['scale']:g} x (resid(A) - resid(B)) added at {name} (|vector| = {float(vec.norm()):.3g}, "
                f"{opts['reduce']} over positions)")
    if edit == "patch":
        if not opts["source"]:
            raise EngineError("patch needs a source prompt with the same number of tokens as the text")
        src = list(h.tok.encode(opts["source"]))
        if len(src) != len(ids):
            raise EngineError(f"patch: the source prompt is {len(src)} tokens but the text is {len(ids)}; "
                              "they must have the same number of tokens (see the token chips)")
        pos = _position(opts["patch_position"], len(ids))
        site = opts["site"]
        if site == "resid_pre":
            name = "tok_embeddings" if layer == 0 else f"layers.{layer - 1}.resid_post"
        else:
            name = {"resid_mid": f"layers.{layer}.resid_mid", "resid_post": f"layers.{layer}.resid_post",
                    "attn_out": f"layers.{layer}.attention.out", "mlp_out": f"layers.{layer}.feed_forward.out"}[site]
        with h.dirty_run():
            _, c = run_with_cache(h.model, h.tensor(src), names=[name], to_cpu=True, dtype=torch.float32)
        return ({name: patch_from(dict(c), positions=[pos])},
                f"{name} at position {pos} taken from the source prompt ({site} of layer {layer})")
    raise EngineError(f"unknown edit {edit!r}")  # pragma: no cover - parse_options checks


def intervene(h: ModelHandle, ids, opts, memo=None) -> dict:
    """The next-token table after one edit, beside the clean run's."""
    _need_ids(ids)
    from llama.hooks import intervene as hooks_intervene

    edits, description = _edits(h, ids, opts)
    cache = capture(h, ids, ["logits"], memo)
    clean = cache["logits"][0, -1]
    with h.dirty_run(), torch.no_grad(), hooks_intervene(h.model, edits) as fired:
        edited = h.model(h.tensor(ids))[0, -1].float().cpu()
    if not any(fired.values()):  # pragma: no cover - every edit above names a real hook
        raise EngineError(f"the edit never fired ({', '.join(edits)})")
    greedy = Sampling()
    show = opts["show"]
    ct = topk_table(h.tok, clean, greedy, show)
    et = topk_table(h.tok, edited, greedy, show)
    out = {"kind": "intervene", "edit": opts["edit"], "description": description,
           "reads": list(edits) + ["logits"],
           "hooks_edited": list(edits), "clean": ct["candidates"], "edited": et["candidates"],
           "non_finite": et["non_finite"] or ct["non_finite"],
           "stopgap": "hand-written with llama.hooks.intervene; llama.interp replaces it", "warnings": []}
    if out["non_finite"] is None:
        p, q = torch.log_softmax(clean, -1), torch.log_softmax(edited, -1)
        for row in out["edited"]:  # what the clean run gave the same token, for the arrows
            row["clean_prob"] = finite_or_none(float(p[row["id"]].exp()))
        kl = float((p.exp() * (p - q)).sum())
        top = int(clean.argmax())
        vocab = Vocab(h.tok)
        vocab.add([top, int(edited.argmax())])
        out.update({"kl": finite_or_none(kl, 6), "clean_top": top, "edited_top": int(edited.argmax()),
                    "top_changed": top != int(edited.argmax()),
                    "clean_top_prob": finite_or_none(float(p[top].exp()), 5),
                    "edited_top_prob": finite_or_none(float(q[top].exp()), 5),
                    "max_abs_logit_change": finite_or_none(float((edited - clean).abs().max()), 5),
                    "vocab": vocab.payload()})
    return out
