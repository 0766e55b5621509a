"""The studio's view kinds: what the page shows, with the options it accepts from the network.

A studio kind is a way of *showing* something; its numbers come from the library:
llama.analysis (the registry `VIEW_KINDS`: attention, lens, pca, activations, embeddings,
saliency, summary, params, rope, positions), llama.interp (attribution, ablation,
steering, patching, head scores), llama.explain (the tour) and llama.session (the
next-token table). Several studio kinds put two library kinds on one page (the residual
stream is `pca` in 2-D and 3-D plus `activations`); which ones is in `library`, and a kind
applies to a model family when every library kind it shows does (`ViewKind.applies_to`).

Options arrive as JSON (or query strings). `parse_options` turns them into Python values
or raises EngineError with a message that says what was wrong and what would be right;
the server answers it with HTTP 400. Options that are the library's own are built from the
library's `Option` (name, help, default, choices, minimum) by `lib_option`, with the
studio's limits added where a payload must stay small; the library checks them again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from llama.analysis import RESIDUAL_INPUT, VIEW_KINDS
from llama.interp import SITES


class EngineError(ValueError):
    """A request the engine cannot serve as asked (bad option, no text yet, ...).

    Its message is meant for the user as it is (the server sends it with HTTP 400)."""


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # int | float | bool | str | choice | int_or_none | ints | text
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()

    def describe(self) -> dict:
        d = {"name": self.name, "type": self.type, "default": self.default, "help": self.help}
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        if self.choices:
            d["choices"] = list(self.choices)
        return d


def lib_option(kind: str, name: str, **studio) -> Option:
    """The library's option `name` of view kind `kind` (llama.analysis), as a studio option;
    keyword arguments override what the studio needs otherwise (a default, a maximum)."""
    o = VIEW_KINDS[kind].option(name)
    if o.choices and o.type is not bool:
        typ = "choice"
    elif o.type is int:
        typ = "int_or_none" if o.default is None else "int"
    else:
        typ = {float: "float", bool: "bool", str: "str"}[o.type]
    return replace(Option(o.name, typ, o.default, o.help, o.minimum, None, tuple(o.choices)), **studio)


@dataclass(frozen=True)
class StudioKind:
    name: str
    title: str
    needs: str  # "text": the client's tokens; "model": the model only
    hooks: tuple[str, ...]  # hook-name patterns it reads (RESIDUAL_INPUT: the family's stage 0)
    options: tuple[Option, ...] = field(default_factory=tuple)
    help: str = ""
    library: tuple[str, ...] = ()  # the llama.analysis kinds its numbers come from

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def hook_patterns(self, residual_input: str) -> list[str]:
        return [residual_input if h == RESIDUAL_INPUT else h for h in self.hooks]

    def describe(self, residual_input: str) -> dict:
        return {"name": self.name, "title": self.title, "needs": self.needs,
                "hooks": self.hook_patterns(residual_input),
                "options": [o.describe() for o in self.options], "help": self.help,
                "library": list(self.library)}


_TARGET = Option("target", "int_or_none", None, "token id explained (none = the top prediction)", 0)
_LAYER = Option("layer", "int", 0, "block number, 0-based as in hook names (-1 = the last)")
_EXPLAINED = Option("position", "int", -1, "token position whose next-token prediction is "
                    "explained (-1 = the last)")
_RESIDUAL = (RESIDUAL_INPUT, "layers.*.resid_post")

KINDS: dict[str, StudioKind] = {k.name: k for k in (
    StudioKind("topk", "Next token", "text", ("logits",), (
        Option("show", "int", 10, "rows of the table", 1, 100),
        Option("temperature", "float", 0.0, "sampling temperature (0 = greedy)", 0.0, 100.0),
        Option("top_k", "int_or_none", None, "sampling filter: keep the k likeliest (none = off)", 1),
        Option("top_p", "float", 1.0, "sampling filter: nucleus mass (1 = off)", 0.0, 1.0),
    ), "The most probable next tokens after the text, with the probabilities sampling "
       "would use under the chosen temperature, top-k and top-p."),
    StudioKind("attention", "Attention", "text", ("layers.*.attention.probs",), (
        Option("layer", "int_or_none", None, "only this layer (none = all, when they fit)"),
    ), "Every layer x head as a small heatmap (query rows, key columns), with the share "
       "of attention each head gives the first token; one head enlarged, token by token.",
       ("attention",)),
    StudioKind("head_scores", "Head scores", "text", ("layers.*.attention.probs",), (
        Option("induction", "bool", True, "also score induction on random tokens repeated twice"),
        Option("length", "int", 20, "induction: random tokens per copy", 2, 256),
    ), "What kind of head each one is, from its attention pattern: how much it attends to "
       "the previous token, to the first token (a sink), and, on random tokens repeated "
       "twice, to the token after the earlier copy (induction)."),
    StudioKind("lens", "Logit lens", "text", _RESIDUAL + ("norm", "logits"), (
        lib_option("lens", "k", default=10, max=50),
    ), "Each stage of the residual stream decoded with the model's own final norm and "
       "output matrix: the top token and its probability per layer and position.", ("lens",)),
    StudioKind("residual", "Residual stream", "text", _RESIDUAL + ("layers.*.feed_forward.act",), (
        Option("stages", "ints", None, "stages for the PCA panels: 0 = embeddings, i + 1 = "
               "after block i (none = six spread out)"),
        lib_option("pca", "skip_first"),
    ), "PCA of the token vectors at several depths (2-D and a rotatable 3-D view), each "
       "token's path across layers, and the size of the activations.", ("pca", "activations")),
    StudioKind("embeddings", "Token embeddings", "text", ("tok_embeddings",), (
        lib_option("embeddings", "dims"),
    ), "The text's distinct tokens as vectors of the embedding matrix, in their top three "
       "principal components (drag to rotate): which tokens the model starts out treating "
       "as alike, before any layer has run.", ("embeddings",)),
    StudioKind("saliency", "Saliency", "text", ("tok_embeddings", "logits"), (
        lib_option("saliency", "position"), replace(lib_option("saliency", "target"), min=0),
    ), "Input x gradient: how much each token pushed log p(target) up (blue) or down (red).",
       ("saliency",)),
    StudioKind("dla", "Direct logit attribution", "text",
               ("tok_embeddings", "layers.*.attention.heads", "layers.*.attention.out",
                "layers.*.feed_forward.out", "layers.*.resid_post", "norm"), (
        _EXPLAINED, _TARGET,
        Option("contrast", "int_or_none", None, "a second token id: attribute the logit "
               "difference target - contrast", 0),
    ), "The final residual split into the embedding, every head and every MLP, each "
       "projected through the final norm (its scale frozen) onto the target's logit "
       "(llama.interp.attribution)."),
    StudioKind("intervene", "Interventions", "text",
               ("layers.*.attention.heads", "layers.*.feed_forward.out", "layers.*.resid_post",
                "logits"), (
        Option("edit", "choice", "ablate_head", "what to change",
               choices=("ablate_head", "ablate_attn", "ablate_mlp", "steer", "patch")),
        _LAYER,
        Option("head", "int", 0, "query head (ablate_head; patch at site heads), or key/value "
               "head (patch at site kv_heads)"),
        Option("mode", "choice", "zero", "ablation: zero, or the mean over positions",
               choices=("zero", "mean")),
        Option("prompt_a", "text", "", "steer: the vector is resid(A) - resid(B)"),
        Option("prompt_b", "text", "", "steer: the second prompt"),
        Option("scale", "float", 4.0, "steer: multiple of the vector added", -1000.0, 1000.0),
        Option("reduce", "choice", "mean", "steer: mean over positions, or the last position",
               choices=("mean", "last")),
        Option("source", "text", "", "patch: the prompt the value is taken from (same "
               "number of tokens)"),
        Option("site", "choice", "resid_post", "patch: which value", choices=tuple(SITES)),
        Option("patch_position", "int_or_none", -1, "patch: token position (-1 = the last; "
               "none = every position)"),
        Option("show", "int", 10, "rows of each table", 1, 50),
    ), "Change one part of the computation and compare the next-token table with the "
       "clean run (llama.interp: ablated_logits, steer, patched_logits)."),
    StudioKind("patching", "Patching map", "text",
               ("layers.*.resid_post", "logits"), (
        Option("corrupt", "text", "", "the second prompt, with the same number of tokens: "
               "the text's values are copied into its run one place at a time"),
        Option("site", "choice", "resid_post", "which values are patched", choices=tuple(SITES)),
        Option("answer", "int_or_none", None, "token id the text should predict (none = its "
               "top prediction)", 0),
        Option("wrong", "int_or_none", None, "token id the second prompt predicts instead "
               "(none = its top prediction)", 0),
        Option("position", "int_or_none", None, "sites heads and kv_heads: patch only this "
               "position (none = all)"),
    ), "Activation patching: run the second prompt, copy one value from the text's run "
       "(a layer and position, or a head), and score how much of the text's answer comes "
       "back: 1 = all of it, 0 = none (normalised logit difference; llama.interp.patching)."),
    StudioKind("ablation", "Head ablation map", "text",
               ("layers.*.attention.heads", "logits"), (
        Option("mode", "choice", "zero", "zero each head's output, or replace it by its mean "
               "over positions", choices=("zero", "mean")),
        _TARGET,
    ), "Every head knocked out on its own, one run each: how much the log-probability of the "
       "target token falls (red) or rises (blue) (llama.interp.head_ablation_sweep)."),
    StudioKind("summary", "Model summary", "model", (), (),
               "Configuration, parameters by component, tied embeddings, KV-cache size.",
               ("summary",)),
    StudioKind("architecture", "Architecture", "model", (), (),
               "The blocks of the model with this model's real dimensions and the hook names."),
    StudioKind("params", "Parameter statistics", "model", (), (),
               "Mean, std, norm and largest |value| of every weight matrix, layer by layer, "
               "and value histograms.", ("params",)),
    StudioKind("rope", "RoPE frequencies", "model", ("layers.*.attention.q_rot",), (
        lib_option("rope", "positions", default=128, max=4096),
    ), "How fast each pair of head dimensions turns with position, with and without "
       "Llama 3 scaling.", ("rope",)),
    StudioKind("positions", "Position embeddings", "model", ("pos_embeddings",), (
        lib_option("positions", "positions"),
    ), "The vector a model with learned positions (GPT-2) adds for each position: their "
       "sizes, how alike positions are (by pair and by distance), and their path in 3-D.",
       ("positions",)),
    StudioKind("tour", "Guided tour", "text", ("*",), (
        _LAYER,
        Option("head", "int", 0, "query head shown"),
        Option("pair", "int", 0, "RoPE pair shown (a model without RoPE has none)"),
        _EXPLAINED,
    ), "One forward pass of your text, stage by stage, with the real tensors, their "
       "shapes and the source line of each (llama-explain)."),
)}


def _bad(kind: str, opt: Option, value: Any, want: str) -> EngineError:
    return EngineError(f"{kind}: option {opt.name!r} must be {want}, got {value!r}")


def _number(kind: str, opt: Option, value: Any, integer: bool):
    if isinstance(value, str):
        s = value.strip()
        try:
            value = int(s) if integer else float(s)
        except ValueError:
            raise _bad(kind, opt, value, "an integer" if integer else "a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(kind, opt, value, "an integer" if integer else "a number")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise _bad(kind, opt, value, "an integer")
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise _bad(kind, opt, value, "a finite number")
    if opt.min is not None and value < opt.min or opt.max is not None and value > opt.max:
        lo = "" if opt.min is None else f">= {opt.min:g}"
        hi = "" if opt.max is None else f"<= {opt.max:g}"
        raise _bad(kind, opt, value, " and ".join(x for x in (lo, hi) if x))
    return value


def parse_option(kind: str, opt: Option, value: Any) -> Any:
    nullable = opt.type in ("int_or_none", "ints")
    if value is None or (isinstance(value, str) and nullable
                         and value.strip().lower() in ("", "none", "null", "off")):
        return None if nullable else opt.default
    t = opt.type
    if t in ("int", "int_or_none"):
        return _number(kind, opt, value, True)
    if t == "float":
        return _number(kind, opt, value, False)
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise _bad(kind, opt, value, "true or false")
    if t in ("str", "text"):
        if not isinstance(value, str):
            raise _bad(kind, opt, value, "a string")
        if len(value) > 100_000:
            raise _bad(kind, opt, value[:20] + "...", "at most 100,000 characters")
        return value
    if t == "choice":
        if value not in opt.choices:
            raise _bad(kind, opt, value, "one of " + ", ".join(map(str, opt.choices)))
        return value
    if t == "ints":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise _bad(kind, opt, value, "a list of integers")
        out = [_number(kind, opt, v, True) for v in items]
        return out or None
    raise AssertionError(f"unknown option type {t}")  # pragma: no cover


def parse_options(kind: str, raw: dict | None, label: str | None = None) -> dict:
    """Validated options of a view kind; unknown names are an error (a typo must not be
    silently ignored). `label` names the options in messages (default: the kind)."""
    if kind not in KINDS:
        raise EngineError(f"unknown view {kind!r}; views: {', '.join(KINDS)}")
    raw = dict(raw or {})
    spec = {o.name: o for o in KINDS[kind].options}
    unknown = [k for k in raw if k not in spec]
    label = label or kind
    if unknown:
        known = ", ".join(spec) or "none"
        raise EngineError(f"{label}: unknown option {unknown[0]!r} (options: {known})")
    return {name: parse_option(label, o, raw.get(name, o.default)) for name, o in spec.items()}


__all__ = ["EngineError", "Option", "StudioKind", "KINDS", "lib_option", "parse_options", "parse_option"]
