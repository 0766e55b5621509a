"""The result of a parity run: dataclasses, the table printed on stdout, and JSON.

Everything a run found is in a `ParityReport`; `report.table()` is what `llama-parity`
prints, `report.to_json()` what `--json FILE` writes, and `report.exit_code` its exit
status (0 everything within tolerance, 1 otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PointDiff:
    """One hook point of one prompt: our value against transformers'."""

    name: str  # our hook name, e.g. "layers.2.attention.k"
    layer: int | None  # None for tok_embeddings, norm, logits
    hook: str  # the name inside the layer ("attention.k"), or the top-level name
    source: str  # where transformers' value came from ("self_attn.k_proj output")
    max_abs_diff: float  # max |ours - theirs| over every element
    scale: float  # max |theirs|: the tensor's magnitude
    allowed: float  # the tolerance scaled to this tensor: tol * scale / scale of the logits
    shape_error: str | None = None  # the two shapes, when they differ

    @property
    def within(self) -> bool:
        return self.shape_error is None and self.max_abs_diff <= self.allowed

    @property
    def ratio(self) -> float:
        """max_abs_diff / allowed: below 1 is within tolerance."""
        if self.shape_error is not None:
            return math.inf
        return self.max_abs_diff / self.allowed if self.allowed > 0 else math.inf


@dataclass
class PromptResult:
    """One prompt through both models."""

    text: str
    ids: list[int]
    # Full forward: max |ours - theirs| over positions and vocabulary, and the positions
    # where both rank the same token first (None: no transformers model to compare with).
    logits_max_diff: float | None = None
    top1_agree: int | None = None
    # The same again token by token, each side through its own KV cache (None: not run).
    cached_max_diff: float | None = None
    cached_top1_agree: int | None = None
    # Ours token by token against ours in one forward (None: not run).
    cached_self_diff: float | None = None
    points: list[PointDiff] = field(default_factory=list)
    first_divergence: PointDiff | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


@dataclass
class TokenizerCase:
    text: str
    where: str  # "prompt" or "corpus"
    special: str  # "parsed" (special tokens matched) or "as text" (their characters)
    ours: list[int]
    theirs: list[int]
    first_difference: int | None = None  # index of the first id that differs
    note: str = ""  # e.g. "differs only in a leading BOS"

    @property
    def match(self) -> bool:
        return self.ours == self.theirs


@dataclass
class TokenizerCheck:
    available: bool  # False: transformers' tokenizer could not be loaded (see reason)
    reason: str = ""
    cases: list[TokenizerCase] = field(default_factory=list)

    @property
    def mismatches(self) -> list[TokenizerCase]:
        return [c for c in self.cases if not c.match]


@dataclass
class ConfigDiff:
    label: str
    ours: Any
    theirs: Any


@dataclass
class Divergence:
    """Where the two models first part: the earliest hook point, in forward order, whose
    difference is past its scaled tolerance (over all prompts)."""

    point: str
    layer: int | None
    hook: str
    prompt: str
    max_abs_diff: float
    allowed: float
    last_agreeing: str | None  # the hook point just before it that still agreed
    jump: float  # Δ/allowed here over the largest Δ/allowed before it in the same prompt
    culprit: str  # the likely cause, in words
    evidence: list[str] = field(default_factory=list)  # config differences that bear on it


@dataclass
class Problem:
    kind: str  # "tokenizer" | "model" | "cache" | "config" | "reference"
    message: str


@dataclass
class ParityReport:
    checkpoint: str
    format: str  # "hf" | "gguf" | "meta" | "" (models handed in)
    family: str
    dtype: str
    tol: float  # max |logit difference| allowed
    mode: str  # "together" | "one after the other" | "ours only"
    reference: str  # what the transformers side is, in words
    reference_error: str | None = None  # why transformers could not be compared, if so
    config_diffs: list[ConfigDiff] = field(default_factory=list)
    prompts: list[PromptResult] = field(default_factory=list)
    tokenizer: TokenizerCheck = field(default_factory=lambda: TokenizerCheck(False, "not run"))
    first_divergence: Divergence | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    margin: float = 10.0  # intermediate points may carry this much more rounding (compare.MARGIN)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def problem_kinds(self) -> list[str]:
        return sorted({p.kind for p in self.problems})

    @property
    def max_logits_diff(self) -> float | None:
        values = [p.logits_max_diff for p in self.prompts if p.logits_max_diff is not None]
        return max(values) if values else None

    @property
    def max_cached_diff(self) -> float | None:
        values = [p.cached_max_diff for p in self.prompts if p.cached_max_diff is not None]
        return max(values) if values else None

    # -- output ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        out["exit_code"] = self.exit_code
        out["max_logits_diff"] = self.max_logits_diff
        out["max_cached_diff"] = self.max_cached_diff
        out["tokenizer"]["mismatches"] = len(self.tokenizer.mismatches)
        for p, d in zip(self.prompts, out["prompts"]):
            d["n_tokens"] = p.n_tokens
            for point, pd in zip(p.points, d["points"]):
                pd["within"] = point.within
        return _finite(out)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def table(self) -> str:
        return format_table(self)


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def _e(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.1e}"


def _clip(text: str, width: int) -> str:
    r = repr(text)
    return r if len(r) <= width else r[: width - 4] + "...'"


def _layer_rows(report: ParityReport) -> list[str]:
    """One row per layer (and for the embeddings, final norm and logits): the largest
    difference over the prompts at resid_post and at the attention probabilities, and the
    point of that layer nearest its tolerance."""
    rows: dict[Any, dict[str, PointDiff]] = {}  # layer number or top-level name -> slot -> worst
    first_rows: list[str] = []  # top-level points before the first layer (embeddings), in order

    def keep(row: dict[str, PointDiff], slot: str, d: PointDiff) -> None:
        if slot not in row or d.ratio > row[slot].ratio:
            row[slot] = d

    for p in report.prompts:
        for d in p.points:
            if d.layer is None and not any(isinstance(k, int) for k in rows) and d.hook not in first_rows:
                first_rows.append(d.hook)
            row = rows.setdefault(d.hook if d.layer is None else d.layer, {})
            keep(row, "worst", d)
            if d.hook == "resid_post":
                keep(row, "resid", d)
            elif d.hook == "attention.probs":
                keep(row, "probs", d)
    lines = [
        f"{'layer':<15} {'resid_post Δ':>12} {'allowed':>8} {'probs Δ':>9} {'allowed':>8}   nearest its tolerance (Δ/allowed)"
    ]
    layers = sorted(k for k in rows if isinstance(k, int))
    others = [k for k in rows if not isinstance(k, int)]
    for key in [k for k in others if k in first_rows] + layers + [k for k in others if k not in first_rows]:
        row = rows[key]
        w = row["worst"]
        nearest = f"{w.hook} {w.ratio:.2f}" if math.isfinite(w.ratio) else f"{w.hook} ({w.shape_error})"
        if not isinstance(key, int):  # tok_embeddings, norm, logits: one value each
            lines.append(f"{key:<15} {_e(w.max_abs_diff):>12} {_e(w.allowed):>8} {'':>9} {'':>8}   {nearest}")
            continue
        r, pr = row.get("resid"), row.get("probs")
        lines.append(
            f"{key:<15} {_e(r.max_abs_diff if r else None):>12} {_e(r.allowed if r else None):>8} "
            f"{_e(pr.max_abs_diff if pr else None):>9} {_e(pr.allowed if pr else None):>8}   {nearest}"
        )
    return lines


def format_table(report: ParityReport) -> str:
    r = report
    lines = [
        f"llama-parity: {r.checkpoint}",
        f"  format {r.format or '-'}, family {r.family}, {r.dtype}, tolerance {r.tol:g} on the logits",
        f"  reference: {r.reference}",
        f"  mode: {r.mode}" + (f" ({r.memory['summary']})" if r.memory.get("summary") else ""),
    ]
    if r.reference_error:
        lines.append(f"  transformers could not be compared: {r.reference_error}")
    if r.prompts:
        lines += ["", f"{'prompt':<34} {'tokens':>6} {'max|Δlogit|':>11} {'top-1':>7} {'cached Δ':>9} {'top-1':>7}  first divergence"]
        for p in r.prompts:
            n = p.n_tokens
            cached_top1 = "-" if p.cached_top1_agree is None else f"{p.cached_top1_agree}/{n}"
            first = p.first_divergence.name if p.first_divergence else "-"
            top1 = "-" if p.top1_agree is None else f"{p.top1_agree}/{n}"
            lines.append(
                f"{_clip(p.text, 34):<34} {n:>6} {_e(p.logits_max_diff):>11} {top1:>7} "
                f"{_e(p.cached_max_diff):>9} {cached_top1:>7}  {first}"
            )
        if any(p.points for p in r.prompts):
            lines += ["", "layer by layer (largest Δ = max|ours - theirs| over the prompts; "
                      f"allowed = {r.margin:g} x tol x max|tensor| / max|logits|)"]
            lines += _layer_rows(r)
    lines.append("")
    if r.first_divergence:
        d = r.first_divergence
        lines.append(f"first divergence: {d.point}  (prompt {_clip(d.prompt, 40)})")
        lines.append(f"  Δ {_e(d.max_abs_diff)} > allowed {_e(d.allowed)}; last point that agreed: {d.last_agreeing or '-'}")
        lines.append(f"  likely culprit: {d.culprit}")
        for ev in d.evidence:
            lines.append(f"  config: {ev}")
    else:
        lines.append("first divergence: none" + (" (no comparison)" if r.reference_error else ""))
    t = r.tokenizer
    if not t.available:
        lines.append(f"tokenizer: not compared ({t.reason})")
    else:
        bad = t.mismatches
        lines.append(f"tokenizer: {len(t.cases) - len(bad)}/{len(t.cases)} texts give the same ids as transformers' tokenizer")
        for c in bad[:5]:
            k = c.first_difference
            ours = c.ours[max(0, (k or 0) - 1): (k or 0) + 3]
            theirs = c.theirs[max(0, (k or 0) - 1): (k or 0) + 3]
            lines.append(f"  {_clip(c.text, 40)} ({c.special}): ours ...{ours} theirs ...{theirs} from id #{k}" + (f"; {c.note}" if c.note else ""))
        if len(bad) > 5:
            lines.append(f"  ... {len(bad) - 5} more")
    if r.config_diffs:
        for c in r.config_diffs:
            lines.append(f"config differs: {c.label}: ours {c.ours!r}, transformers {c.theirs!r}")
    else:
        lines.append("config: the compared values agree")
    for n in r.notes:
        lines.append(f"note: {n}")
    lines.append("")
    if r.ok:
        lines.append("PASS: everything within tolerance (exit 0)")
    else:
        lines.append("FAIL (exit 1):")
        for p in r.problems:
            lines.append(f"  [{p.kind}] {p.message}")
    return "\n".join(lines)


__all__ = [
    "PointDiff",
    "PromptResult",
    "TokenizerCase",
    "TokenizerCheck",
    "ConfigDiff",
    "Divergence",
    "Problem",
    "ParityReport",
    "format_table",
]
