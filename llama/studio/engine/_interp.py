"""Attribution and interventions for the studio, as payloads over llama.interp.

    dla         llama.interp.attribution (the parts of one logit, heads split)
    intervene   one edit, the next-token table beside the clean run's: ablated_logits
                (a head, or every head of a block), steering_vector + steer, patched_logits;
                an MLP is knocked out with llama.hooks.intervene
    patching    llama.interp.patching with logit_diff_metric: a layer x position (or head) map
    ablation    llama.interp.head_ablation_sweep with logprob_metric: a layer x head map
    head_scores llama.interp.attention_head_scores and induction_scores

Each builder runs with the model's lock held (the engine takes it); llama.interp resets
the model's KV cache after its runs, and the sessions prefill again when they next need it.
"""

from __future__ import annotations

import re

import torch

from llama.generate import top_candidates
from llama.interp import (
    SITES,
    ablated_logits,
    attention_head_scores,
    attribution,
    head_ablation_sweep,
    logit_diff_metric,
    logprob_metric,
    patched_logits,
    patching,
    site_hooks,
    steer,
    steering_vector,
)
from llama.checks import check_index
from llama.interp.views import encode_like, induction_for

from ._clients import candidate_rows, non_finite_report
from ._json import Vocab, finite_or_none, rounded
from ._kinds import EngineError
from ._views import Job

HEAD_SITES = ("heads", "kv_heads")
MAX_SWEEP_RUNS = 4096  # patched or ablated runs one map may ask for


def _text_logits(job: Job, position: int = -1) -> torch.Tensor:
    """The text's logits at one position from a full run (captured once per text)."""
    logits = job.src.captured(["logits"])["logits"][0]  # (T, V)
    pos = check_index(position, logits.shape[0], "position", f"tokens in the text ({logits.shape[0]})",
                      error=EngineError)
    return logits[pos]


def _encode(job: Job, text: str, what: str) -> list[int]:
    ids = encode_like(job.tok, text, job.src.ids)  # with BOS where the text has it
    if not ids:
        raise EngineError(f"the {what} {text!r} encodes to no tokens")
    return ids


def _same_length(job: Job, other: list[int], what: str) -> None:
    n = len(job.src.ids)
    if len(other) != n:
        raise EngineError(f"{what} is {len(other)} tokens but the text is {n}; they must have the "
                          "same number of tokens (see the token chips; change a word for one that "
                          "is a single token too)")


_PART = re.compile(r"L(\d+)\.(H(\d+)|attn_bias|mlp|attn)$")


def _part(name: str, value: float) -> dict:
    m = _PART.match(name)
    if m is None:  # embed, pos_embed, norm.bias, output.bias
        group = "embed" if name in ("embed", "pos_embed") else "bias"
        return {"name": name, "group": group, "layer": None, "head": None, "value": finite_or_none(value, 5)}
    layer, what = int(m.group(1)), m.group(2)
    group = "head" if m.group(3) is not None else {"attn_bias": "bias", "mlp": "mlp", "attn": "attn"}[what]
    head = int(m.group(3)) if m.group(3) is not None else None
    return {"name": name, "group": group, "layer": layer, "head": head, "value": finite_or_none(value, 5)}


def dla(job: Job) -> dict:
    """Direct logit attribution of the target token (or the difference of two) at one position."""
    o, V = job.opts, job.args.vocab_size
    logits = _text_logits(job, o["position"])
    if not torch.isfinite(logits).all():
        raise EngineError("the logits at this position are not finite: nothing to attribute")
    target = int(logits.argmax()) if o["target"] is None else o["target"]
    for what, t in (("target", target), ("contrast", o["contrast"])):
        if t is not None and not 0 <= t < V:
            raise EngineError(f"{what} token id must be in 0..{V - 1}, got {t}")
    r = attribution(job.model, job.src.ids, target if o["contrast"] is None else (target, o["contrast"]),
                    position=o["position"])
    parts = [_part(name, v) for name, v in r.parts(heads=True).items()]
    vocab = Vocab(job.tok)
    vocab.add([target] + ([o["contrast"]] if o["contrast"] is not None else []))
    return {"kind": "dla", "position": r.position, "target": target, "contrast": o["contrast"],
            "logit": finite_or_none(r.logit, 5), "total": finite_or_none(r.total, 5),
            "norm_scale": finite_or_none(r.scale, 6), "norm_kind": r.norm_kind, "parts": parts,
            "heads": rounded(r.heads, 5), "attn": rounded(r.attn, 5), "mlp": rounded(r.mlp, 5),
            "vocab": vocab.payload(), "warnings": []}


# ----------------------------------------------------------------------------------
# One edit
# ----------------------------------------------------------------------------------


def _mlp_ablated_logits(job: Job, layer: int, mode: str) -> torch.Tensor:
    """The text's logits (1, T, V) with block `layer`'s MLP output zeroed or replaced by its
    mean over positions (llama.hooks.intervene; llama.interp ablates heads only)."""
    from llama.hooks import intervene

    name = f"layers.{layer}.feed_forward.out"

    def edit(v: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return torch.zeros_like(v) if mode == "zero" else v.mean(1, keepdim=True).expand_as(v).clone()

    tokens = job.src.token_tensor()
    try:
        with torch.no_grad(), intervene(job.model, {name: edit}):
            return job.model(tokens).float().cpu()
    finally:
        job.model.reset_cache()


def _edited(job: Job) -> tuple[torch.Tensor, list[str], str]:
    """(logits (V,) of the edited run at the last position, hooks edited, a sentence)."""
    o, a, ids, tok = job.opts, job.args, job.src.ids, job.tok
    edit = o["edit"]
    layer = check_index(o["layer"], a.n_layers, "layer", "layers", error=EngineError)
    by = "zeroed" if o["mode"] == "zero" else "replaced by its mean over positions"
    if edit == "ablate_head":
        head = check_index(o["head"], a.n_heads, "head", "query heads per layer", error=EngineError)
        logits = ablated_logits(job.model, ids, [(layer, head)], mode=o["mode"])
        name = f"layers.{layer}.attention.heads"
        return logits[0, -1], [name], f"head {head} of layer {layer} {by} ({name})"
    if edit == "ablate_attn":
        logits = ablated_logits(job.model, ids, [(layer, h) for h in range(a.n_heads)], mode=o["mode"])
        name = f"layers.{layer}.attention.heads"
        return logits[0, -1], [name], (f"every head of layer {layer} {by}: the block's attention "
                                       f"output is wo's bias alone, if it has one ({name})")
    if edit == "ablate_mlp":
        logits = _mlp_ablated_logits(job, layer, o["mode"])
        name = f"layers.{layer}.feed_forward.out"
        return logits[0, -1], [name], f"the MLP output of layer {layer} {by} ({name})"
    if edit == "steer":
        if not o["prompt_a"] or not o["prompt_b"]:
            raise EngineError("steer needs two prompts: prompt_a and prompt_b (the vector is "
                              "resid(A) - resid(B) at the chosen layer)")
        v = steering_vector(job.model, _encode(job, o["prompt_a"], "steering prompt A"),
                            _encode(job, o["prompt_b"], "steering prompt B"), layer, how=o["reduce"])
        try:
            with torch.no_grad(), steer(job.model, v, scale=o["scale"]):
                logits = job.model(job.src.token_tensor()).float().cpu()
        finally:
            job.model.reset_cache()
        return logits[0, -1], [v.hook], (f"{o['scale']:g} x (resid(A) - resid(B)) added at {v.hook} "
                                         f"(|vector| = {v.norm:.3g}, {o['reduce']} over positions)")
    if edit == "patch":
        if not o["source"]:
            raise EngineError("patch needs a source prompt with the same number of tokens as the text")
        src = _encode(job, o["source"], "source prompt")
        _same_length(job, src, "patch: the source prompt")
        site, pos = o["site"], o["patch_position"]
        head = None
        if site in HEAD_SITES:
            n = a.n_heads if site == "heads" else a.n_kv_heads
            head = check_index(o["head"], n, "head" if site == "heads" else "key/value head",
                               "query heads per layer" if site == "heads" else "key/value heads per layer",
                               error=EngineError)
        if pos is not None:
            pos = check_index(pos, len(ids), "position", f"tokens in the text ({len(ids)})", error=EngineError)
        logits = patched_logits(job.model, src, ids, site, layer, position=pos, head=head)
        names = site_hooks(site, layer)
        where = "every position" if pos is None else f"position {pos}"
        which = f" {'head' if site == 'heads' else 'kv head'} {head}" if head is not None else ""
        return logits[0, -1], names, (f"{', '.join(names)}{which} at {where} taken from the source "
                                      f"prompt ({site} of layer {layer})")
    raise EngineError(f"unknown edit {edit!r}")  # pragma: no cover - parse_options checks


def intervene(job: Job) -> dict:
    """The next-token table after one edit, beside the clean run's."""
    edited, hooks, description = _edited(job)
    clean = _text_logits(job)
    edited = edited.float().cpu()
    show = job.opts["show"]
    bad = non_finite_report(edited) or non_finite_report(clean)
    out = {"kind": "intervene", "edit": job.opts["edit"], "description": description,
           "reads": hooks + ["logits"], "hooks_edited": hooks,
           "clean": [] if bad else candidate_rows(job.tok, top_candidates(clean, show)),
           "edited": [] if bad else candidate_rows(job.tok, top_candidates(edited, show)),
           "non_finite": bad, "warnings": []}
    if bad is None:
        p, q = torch.log_softmax(clean, -1), torch.log_softmax(edited, -1)
        for row in out["edited"]:  # what the clean run gave the same token, for the arrows
            row["clean_prob"] = finite_or_none(float(p[row["id"]].exp()))
        top, etop = int(clean.argmax()), int(edited.argmax())
        vocab = Vocab(job.tok)
        vocab.add([top, etop])
        out.update({"kl": finite_or_none(float((p.exp() * (p - q)).sum()), 6), "clean_top": top,
                    "edited_top": etop, "top_changed": top != etop,
                    "clean_top_prob": finite_or_none(float(p[top].exp()), 5),
                    "edited_top_prob": finite_or_none(float(q[top].exp()), 5),
                    "max_abs_logit_change": finite_or_none(float((edited - clean).abs().max()), 5),
                    "vocab": vocab.payload()})
    return out


# ----------------------------------------------------------------------------------
# Maps: patching, head ablation, head scores
# ----------------------------------------------------------------------------------


def _check_runs(n: int, what: str, hint: str) -> None:
    if n > MAX_SWEEP_RUNS:
        raise EngineError(f"{what} would take {n:,} runs of the model (at most {MAX_SWEEP_RUNS:,} "
                          f"here): {hint}")


def _map_payload(scores: torch.Tensor) -> dict:
    return {"scores": rounded(scores, 5), "min": finite_or_none(float(scores.min()), 5),
            "max": finite_or_none(float(scores.max()), 5)}


def patching_map(job: Job) -> dict:
    o, a, ids = job.opts, job.args, job.src.ids
    if not o["corrupt"]:
        raise EngineError("the patching map needs a second prompt (corrupt) with the same number of "
                          "tokens as the text, e.g. the text with one word changed")
    corrupt = _encode(job, o["corrupt"], "second prompt")
    _same_length(job, corrupt, "the second prompt")
    site = o["site"]
    columns = {"heads": a.n_heads, "kv_heads": a.n_kv_heads}.get(site, len(ids))
    _check_runs(a.n_layers * columns, f"patching {site} at every layer",
                "shorten the text, or choose the heads site")
    if o["position"] is not None and site not in HEAD_SITES:
        raise EngineError(f"position applies to the per-head sites (heads, kv_heads), not {site!r}: "
                          "the residual and block-output sites patch every position in turn")
    clean = _text_logits(job)
    answer = int(clean.argmax()) if o["answer"] is None else o["answer"]
    wrong = o["wrong"]
    if wrong is None:  # the second prompt's own prediction (its runner-up if it is the same)
        with torch.no_grad():
            row = job.model(torch.tensor([corrupt], device=job.src.token_tensor().device))[0, -1].float()
        job.model.reset_cache()
        order = torch.sort(row, descending=True, stable=True).indices
        wrong = int(order[0]) if int(order[0]) != answer else int(order[1])
    metric = logit_diff_metric(job.model, ids, corrupt, answer, wrong, tokenizer=job.tok)
    res = patching(job.model, ids, corrupt, metric, site=site, position=o["position"])
    vocab = Vocab(job.tok)
    vocab.add([answer, wrong])
    hooks = [h for layer in res.hooks for h in layer]
    return {"kind": "patching", "site": site, "column_kind": res.column_kind,
            "row_labels": res.row_labels, "column_labels": res.column_labels,
            "position": res.position, "query_heads": res.query_heads, "cell_hooks": res.hooks,
            **_map_payload(res.scores),
            "clean_score": finite_or_none(res.clean_score, 5), "corrupt_score": finite_or_none(res.corrupt_score, 5),
            "clean_diff": finite_or_none(metric.clean_diff, 5), "corrupt_diff": finite_or_none(metric.corrupt_diff, 5),
            "answer": answer, "wrong": wrong, "metric": metric.describe(),
            "corrupt_tokens": [{"id": i, "text": vocab.text(i)} for i in corrupt],
            "differ": [i for i, (x, y) in enumerate(zip(ids, corrupt)) if x != y],
            "top": [list(t) for t in res.top(5)], "vocab": vocab.payload(),
            "warnings": [] if ids != corrupt else ["the two prompts are the same: every patch restores nothing"],
            "reads": hooks + ["logits"]}


def ablation_map(job: Job) -> dict:
    o, a, ids = job.opts, job.args, job.src.ids
    _check_runs(a.n_layers * a.n_heads, "ablating every head", "this model has too many heads for one map")
    clean = _text_logits(job)
    target = int(clean.argmax()) if o["target"] is None else o["target"]
    if not 0 <= target < a.vocab_size:
        raise EngineError(f"target token id must be in 0..{a.vocab_size - 1}, got {target}")
    metric = logprob_metric(job.model, target)
    hm = head_ablation_sweep(job.model, ids, metric, mode=o["mode"])
    delta = hm.scores - hm.baseline
    vocab = Vocab(job.tok)
    vocab.add([target])
    return {"kind": "ablation", "mode": o["mode"], "target": target, "metric": metric.describe(),
            "baseline": finite_or_none(hm.baseline, 5), "description": hm.description,
            "logprob": rounded(hm.scores, 5), **_map_payload(delta),
            "top": [[l, h, finite_or_none(s - hm.baseline, 5)] for l, h, s in hm.top(5, largest=False)],
            "vocab": vocab.payload(), "warnings": [],
            "reads": ["layers.*.attention.heads", "logits"]}


def head_scores(job: Job) -> dict:
    o, a = job.opts, job.args
    maps = attention_head_scores(job.model, job.src.ids)
    out = [{"name": name, "description": m.description, **_map_payload(m.scores),
            "top": [list(t) for t in m.top(5)]} for name, m in maps.items()]
    if o["induction"]:
        m = induction_for(job.model, job.src.ids, job.tok, o["length"])  # as llama-plot heads
        out.append({"name": m.kind, "description": m.description, **_map_payload(m.scores),
                    "top": [list(t) for t in m.top(5)]})
    return {"kind": "head_scores", "maps": out, "n_layers": a.n_layers, "n_heads": a.n_heads,
            "warnings": [], "reads": ["layers.*.attention.probs"]}


BUILDERS = {"dla": dla, "intervene": intervene, "patching": patching_map, "ablation": ablation_map,
            "head_scores": head_scores}

__all__ = ["BUILDERS", "SITES", "MAX_SWEEP_RUNS"]
