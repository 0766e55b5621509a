"""The comparison: the same ids through both models, every hook point side by side, and
the first place where they part.

    ours  = run_ours(model, ids_list, names, intervene=None)     # our side, one SideRun
    theirs = run_reference(reference, ids_list, names, ...)      # transformers' side
    report = build_report(...)                                   # diffs, divergence, verdict

`compare()` does the three in one call with both models in memory. Running the sides
separately lets a caller load one model, run it, free it, and only then load the other
(scripts/parity.py does that when two copies do not fit).

How the first divergence is found. For every prompt and every hook point both sides have,
in forward order, Δ = max |ours - theirs|. A point is within tolerance when

    Δ <= allowed = MARGIN x tol x max|theirs at that point| / max|theirs' logits|

i.e. it must agree to about the relative precision that `tol` asks of the logits. MARGIN
(10) is there because an intermediate value carries the rounding of everything before it:
on the default model in float32 the worst healthy point came to 1.45x the bare rule (the
feed-forward activation of layer 14) while the logits stayed at 0.56 of `tol`; planted
faults (a weight scaled by 1%, a RoPE position off by one, a wrong norm eps) land at 270x
to 50,000x of `allowed`. The logits themselves are held to `tol` exactly. The first point
past its tolerance, earliest over all prompts, is the first divergence; its name inside
the layer says what computes it, and the family table turns that into a likely culprit. Its jump
(Δ/allowed there, over the largest Δ/allowed before it) tells a fault (a jump of orders
of magnitude at one place) from rounding that grew gradually to the limit.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..hooks import intervene as _intervene
from ..hooks import run_with_cache
from . import reference as ref_mod
from .families import Family, family_for_model
from .report import ConfigDiff, Divergence, ParityReport, PointDiff, Problem, PromptResult, TokenizerCheck

DEFAULT_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "def fib(n):\n    return n",
    "Grüße aus Köln! 你好 🙂 2024",
)
DEFAULT_TOL = {torch.float32: 1e-4}
MARGIN = 10.0  # intermediate points: how much more rounding than the logits' they may carry
JUMP = 10.0  # a first divergence whose Δ/allowed rose less than this: gradual, not one place


class ParityInputError(ValueError):
    """Input the run cannot use (missing path, empty prompt, ...): the CLI exits 2."""


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


def encode_prompts(tokenizer: Any, prompts: Sequence[str], vocab_size: int, max_seq_len: int) -> list[list[int]]:
    """Our tokenizer's ids for each prompt (BOS as the tokenizer adds it, special tokens
    parsed, as transformers' tokenizer does by default)."""
    if not prompts:
        raise ParityInputError("no prompts: give at least one with --prompt TEXT")
    out = []
    for text in prompts:
        if not isinstance(text, str):
            raise ParityInputError(f"a prompt must be text, got {type(text).__name__}")
        ids = list(tokenizer.encode(text, bos=True, allow_special=True))
        if not ids:
            raise ParityInputError(
                f"prompt {text!r} tokenizes to no tokens (this tokenizer adds no BOS): "
                "give a prompt with some text in it"
            )
        if len(ids) > max_seq_len:
            raise ParityInputError(f"prompt {text[:40]!r}... has {len(ids)} tokens, more than the model's {max_seq_len}")
        if max(ids) >= vocab_size:
            raise ParityInputError(
                f"prompt {text[:40]!r} gives token id {max(ids)}, but the model has only {vocab_size} "
                "embedding rows: the tokenizer does not belong to this checkpoint"
            )
        out.append(ids)
    return out


def comparable_names(model: torch.nn.Module, family: Family) -> list[str]:
    """Our hook names that the family table maps to a transformers value, in forward order."""
    n = model.args.n_layers
    return [name for name in model.hook_names() if family.source(name, n) is not None]


# ---------------------------------------------------------------------------------------
# Running one side
# ---------------------------------------------------------------------------------------


@dataclass
class SideRun:
    """What one side gave for each prompt (float32, CPU)."""

    traces: list[dict[str, torch.Tensor]] = field(default_factory=list)  # hook name -> value
    logits: list[torch.Tensor] = field(default_factory=list)  # full forward, (1, T, V)
    stepwise: list[torch.Tensor | None] = field(default_factory=list)  # one token at a time


def _attention_point(name: str) -> bool:
    return name.endswith((".scores", ".probs"))


def run_ours(
    model: torch.nn.Module,
    ids_list: Sequence[Sequence[int]],
    names: Sequence[str],
    intervene: Mapping[str, Callable] | None = None,
    stepwise: bool = True,
) -> SideRun:
    """Our model on every prompt: the logits of a plain forward, the hook points `names`,
    and (stepwise) the logits of feeding the prompt token by token through our KV cache.

    `intervene` ({hook name or pattern: fn}, as llama.hooks.intervene takes) is applied to
    every forward: it edits our side only, which is how tests plant known faults.
    Scores and probabilities exist only in the explicit attention path, so they are
    captured in a second forward; the logits and everything else come from the default path.
    """
    run = SideRun()
    plain = [n for n in names if not _attention_point(n)]
    attn = [n for n in names if _attention_point(n)]
    device = model.tok_embeddings.weight.device
    edits = _intervene(model, intervene) if intervene else contextlib.nullcontext()
    with edits, torch.no_grad():
        for ids in ids_list:
            tokens = torch.tensor([list(ids)], device=device)
            model.reset_cache()
            logits, cache = run_with_cache(model, tokens, names=plain)
            trace = dict(cache)
            if attn:
                model.reset_cache()
                _, cache = run_with_cache(model, tokens, names=attn)
                trace.update(cache)
            run.traces.append(trace)
            run.logits.append(logits.float().cpu())
            if stepwise:
                model.reset_cache()
                steps = [model(tokens[:, t : t + 1], start_pos=t).float().cpu() for t in range(tokens.shape[1])]
                run.stepwise.append(torch.cat(steps, dim=1))
            else:
                run.stepwise.append(None)
            model.reset_cache()
    return run


def run_reference(
    reference: ref_mod.Reference,
    ids_list: Sequence[Sequence[int]],
    names: Sequence[str],
    n_layers: int,
    head_dim: int,
    stepwise: bool = True,
) -> SideRun:
    """transformers' side: the same ids, its values at our hook points, its cached decode."""
    run = SideRun()
    device = next(reference.model.parameters()).device
    for ids in ids_list:
        tokens = torch.tensor([list(ids)], device=device)
        trace = ref_mod.trace(reference, tokens, list(names), n_layers, head_dim)
        run.traces.append(trace)
        run.logits.append(trace["logits"] if "logits" in trace else None)
        run.stepwise.append(ref_mod.stepwise_logits(reference, tokens) if stepwise else None)
    return run


# ---------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------


def _max_abs(x: torch.Tensor) -> float:
    finite = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    return float(finite.abs().max()) if x.numel() else 0.0


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|, counting equal infinities (masked scores) as equal and NaN as infinite."""
    if a.numel() == 0:
        return 0.0
    same_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    d = torch.where(same_inf, torch.zeros_like(a), (a - b).abs())
    d = torch.nan_to_num(d, nan=math.inf)
    return float(d.max())


def point_diff(name: str, layer: int | None, hook: str, source: str, ours: torch.Tensor,
               theirs: torch.Tensor, rel_tol: float) -> PointDiff:
    scale = _max_abs(theirs)
    allowed = rel_tol * scale if scale > 0 else rel_tol
    if ours.shape != theirs.shape:
        return PointDiff(name, layer, hook, source, math.inf, scale, allowed,
                         shape_error=f"ours {tuple(ours.shape)}, transformers {tuple(theirs.shape)}")
    return PointDiff(name, layer, hook, source, _diff(ours, theirs), scale, allowed)


def config_diffs(family: Family, args: Any, hf_config: Any, ours_tied: bool | None = None,
                 theirs_tied: bool | None = None) -> list[ConfigDiff]:
    """The family's config values that differ between our model and transformers'."""
    out = []
    for label, mine, theirs in family.config_pairs:
        try:
            a, b = mine(args), theirs(hf_config)
        except (AttributeError, KeyError, TypeError):
            continue  # a config that does not have the field: nothing to compare
        same = math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) and isinstance(b, (int, float)) else a == b
        if not same:
            out.append(ConfigDiff(label, a, b))
    if ours_tied is not None and theirs_tied is not None and ours_tied != theirs_tied:
        out.append(ConfigDiff("output matrix is the embedding matrix (as loaded)", ours_tied, theirs_tied))
    return out


def _top1(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.argmax(-1) == b.argmax(-1)).sum())


def build_report(
    *,
    ours: SideRun,
    theirs: SideRun | None,
    prompts: Sequence[str],
    ids_list: Sequence[Sequence[int]],
    family: Family,
    names: Sequence[str],
    n_layers: int,
    tol: float,
    checkpoint: str = "",
    format: str = "",
    dtype: str = "float32",
    mode: str = "together",
    reference: str = "",
    reference_error: str | None = None,
    configs: Sequence[ConfigDiff] = (),
    tokenizer: TokenizerCheck | None = None,
    memory: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> ParityReport:
    report = ParityReport(
        checkpoint=checkpoint, format=format, family=family.name, dtype=dtype, tol=tol, mode=mode,
        reference=reference, reference_error=reference_error, config_diffs=list(configs),
        tokenizer=tokenizer or TokenizerCheck(False, "not run"), memory=dict(memory or {}), notes=list(notes),
        margin=MARGIN,
    )
    order = {name: k for k, name in enumerate(names)}
    first: tuple[int, PointDiff, str, str | None, float] | None = None  # order, point, prompt, last agreeing, jump
    for k, (text, ids) in enumerate(zip(prompts, ids_list)):
        mine_logits = ours.logits[k]
        result = PromptResult(text=text, ids=list(ids))
        if ours.stepwise[k] is not None:
            result.cached_self_diff = _diff(ours.stepwise[k], mine_logits)
        if theirs is not None:
            ref_logits = theirs.logits[k]
            result.logits_max_diff = _diff(mine_logits, ref_logits)
            result.top1_agree = _top1(mine_logits, ref_logits)
            if ours.stepwise[k] is not None and theirs.stepwise[k] is not None:
                result.cached_max_diff = _diff(ours.stepwise[k], theirs.stepwise[k])
                result.cached_top1_agree = _top1(ours.stepwise[k], theirs.stepwise[k])
            logit_scale = _max_abs(ref_logits)
            rel_tol = MARGIN * tol / logit_scale if logit_scale > 0 else tol
            previous, worst_before = None, 0.0
            for name in names:
                if name not in ours.traces[k] or name not in theirs.traces[k]:
                    continue
                layer, hook, src = family.source(name, n_layers)
                d = point_diff(name, layer, hook, src.describe(layer, n_layers), ours.traces[k][name],
                               theirs.traces[k][name], rel_tol)
                if name == "logits":
                    d.allowed = tol  # the logits' tolerance is the user's, exactly
                result.points.append(d)
                if result.first_divergence is None and not d.within:
                    result.first_divergence = d
                    jump = d.ratio / worst_before if worst_before > 0 else math.inf
                    if first is None or order[name] < first[0]:
                        first = (order[name], d, text, previous, jump)
                if d.within and result.first_divergence is None:
                    previous, worst_before = name, max(worst_before, d.ratio)
        report.prompts.append(result)

    if first is not None:
        _, d, text, previous, jump = first
        relevant = family.evidence.get(d.hook, ())
        culprit = family.culprits.get(d.hook, f"whatever computes {d.hook}")
        if jump < JUMP:
            culprit = (f"no single place: Δ/allowed rose only {jump:.1f}x here over the points before, so the "
                       "difference grew gradually, as rounding does (a different dtype or order of "
                       f"summation); if it is a fault, it is near {d.name}: {culprit}")
        report.first_divergence = Divergence(
            point=d.name, layer=d.layer, hook=d.hook, prompt=text, max_abs_diff=d.max_abs_diff,
            allowed=d.allowed, last_agreeing=previous, jump=jump, culprit=culprit,
            evidence=[f"{c.label}: ours {c.ours!r}, transformers {c.theirs!r}" for c in report.config_diffs
                      if c.label in relevant or c.label.startswith("output matrix") and d.hook == "logits"],
        )
    report.problems = _problems(report)
    return report


def _problems(r: ParityReport) -> list[Problem]:
    out: list[Problem] = []
    if r.reference_error:
        out.append(Problem("reference", f"no transformers model to compare with: {r.reference_error}"))
    for c in r.config_diffs:
        out.append(Problem("config", f"{c.label} differs: ours {c.ours!r}, transformers {c.theirs!r}"))
    for p in r.prompts:
        if p.logits_max_diff is not None and not p.logits_max_diff <= r.tol:
            out.append(Problem("model", f"prompt {p.text[:40]!r}: max |logit difference| {p.logits_max_diff:.2e} > {r.tol:g}"))
        elif p.cached_max_diff is not None and not p.cached_max_diff <= r.tol:
            out.append(Problem("cache", f"prompt {p.text[:40]!r}, token by token through the KV caches: "
                                        f"max |logit difference| {p.cached_max_diff:.2e} > {r.tol:g}"))
        if p.cached_self_diff is not None and not p.cached_self_diff <= r.tol:
            out.append(Problem("cache", f"prompt {p.text[:40]!r}: our model token by token through its KV cache "
                                        f"differs from its own full forward by {p.cached_self_diff:.2e} > {r.tol:g}"))
    d = r.first_divergence
    if d is not None:
        where = f"layer {d.layer}, {d.hook}" if d.layer is not None else d.hook
        out.append(Problem("model", f"first divergence at {d.point} ({where}): Δ {d.max_abs_diff:.2e} > allowed "
                                    f"{d.allowed:.2e}; likely culprit: {d.culprit}"))
    t = r.tokenizer
    if not t.available:
        out.append(Problem("reference", f"tokenizer not compared: {t.reason}"))
    elif t.mismatches:
        c = t.mismatches[0]
        out.append(Problem(
            "tokenizer",
            f"{len(t.mismatches)} of {len(t.cases)} texts tokenize differently from transformers' tokenizer "
            f"(first: {c.text[:40]!r}, {c.special}{'; ' + c.note if c.note else ''}). The models were fed "
            "our ids on both sides, so the model comparison is not affected by this.",
        ))
    return out


# ---------------------------------------------------------------------------------------
# One call with both models in memory
# ---------------------------------------------------------------------------------------


def compare(
    ours: torch.nn.Module,
    tokenizer: Any,
    reference: ref_mod.Reference,
    prompts: Sequence[str] | None = None,
    *,
    tol: float | None = None,
    intervene: Mapping[str, Callable] | None = None,
    reference_tokenizer: Any = None,
    tokenizer_check: TokenizerCheck | None = None,
    corpus: Sequence[str] | None = None,
    stepwise: bool = True,
    checkpoint: str = "",
    format: str = "",
    mode: str = "together",
    memory: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> ParityReport:
    """Compare our loaded model with a transformers `Reference` on `prompts`.

    tokenizer: ours (its ids go to both models). reference_tokenizer: transformers' (for
    the tokenizer check), or tokenizer_check: that check already done (or why it could
    not be: TokenizerCheck(False, reason)).
    intervene: {hook: fn} applied to our side only (see llama.hooks.intervene).
    """
    from .tokens import CORPUS, compare_tokenizers

    prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
    dtype = ours.tok_embeddings.weight.dtype
    tol = default_tol(dtype) if tol is None else tol
    ids_list = encode_prompts(tokenizer, prompts, ours.args.vocab_size, ours.args.max_seq_len)
    family = reference.family
    mine_family = family_for_model(ours)
    if mine_family.name != family.name:
        raise ParityInputError(
            f"our model is a {mine_family.name} model and transformers' a {family.name} one "
            f"({type(reference.model).__name__}): they were not loaded from the same checkpoint"
        )
    names = comparable_names(ours, family)
    mine = run_ours(ours, ids_list, names, intervene=intervene, stepwise=stepwise)
    theirs = run_reference(reference, ids_list, names, ours.args.n_layers, ours.args.head_dim, stepwise=stepwise)
    if tokenizer_check is not None:
        tok_check = tokenizer_check
    elif reference_tokenizer is not None:
        tok_check = compare_tokenizers(tokenizer, reference_tokenizer, prompts, CORPUS if corpus is None else corpus)
    else:
        tok_check = TokenizerCheck(False, "no transformers tokenizer was given")
    configs = config_diffs(family, ours.args, reference.config,
                           ours.output.weight is ours.tok_embeddings.weight, ref_mod.tied(reference))
    return build_report(
        ours=mine, theirs=theirs, prompts=prompts, ids_list=ids_list, family=family, names=names,
        n_layers=ours.args.n_layers, tol=tol, checkpoint=checkpoint, format=format,
        dtype=str(dtype).removeprefix("torch."), mode=mode, reference=reference.description,
        configs=configs, tokenizer=tok_check, memory=memory, notes=notes,
    )


def default_tol(dtype: torch.dtype) -> float:
    """1e-4 on the float32 logits (the project's standard); see docs/PARITY.md for 16-bit."""
    return DEFAULT_TOL.get(dtype, BF16_TOL)


# bfloat16 (and float16): both sides round every product to 8 (11) bits of mantissa, each
# in its own order, so logits differ by far more than float32 rounding. On the default
# model in bfloat16 the measured max |logit difference| was 0.53-1.3 for a full forward and
# up to 1.4 token by token (logits up to ~36; docs/PARITY.md); 2.0 holds that with margin.
BF16_TOL = 2.0


__all__ = [
    "DEFAULT_PROMPTS",
    "ParityInputError",
    "SideRun",
    "encode_prompts",
    "comparable_names",
    "run_ours",
    "run_reference",
    "point_diff",
    "config_diffs",
    "build_report",
    "compare",
    "default_tol",
]
