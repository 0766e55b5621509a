"""The studio's view kinds: name, what each needs, its options, the hook names it reads.

STOPGAP (issue 13): llama/analysis/ will own one registry of view kinds that llama-plot,
the REPL and the studio all read. Until it lands this table is the studio's; the server
and the page read it through `Engine.info()["views"]`, so switching to the library's
registry changes no caller.

Options arrive from the network as JSON (or query strings); `parse_options` turns them
into Python values or raises EngineError with a message that says what was wrong and
what would be right. The server answers such an error with HTTP 400 and that message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class ViewKind:
    name: str
    title: str
    needs: str  # "text": the session's tokens; "model": the model only
    hooks: tuple[str, ...]  # llama.hooks names / glob patterns the view reads
    options: tuple[Option, ...] = field(default_factory=tuple)
    help: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "needs": self.needs,
                "hooks": list(self.hooks), "options": [o.describe() for o in self.options],
                "help": self.help}


_POSITION = Option("position", "int", -1, "token position whose next-token prediction is "
                   "explained (-1 = the last)")
_LAYER = Option("layer", "int", 0, "block number, 0-based as in hook names (-1 = the last)")

VIEWS: dict[str, ViewKind] = {v.name: v for v in (
    ViewKind("topk", "Next token", "text", ("logits",), (
        Option("show", "int", 10, "rows of the table", 1, 100),
        Option("temperature", "float", 0.0, "sampling temperature (0 = greedy)", 0.0, 100.0),
        Option("top_k", "int_or_none", None, "sampling filter: keep the k likeliest (none = off)", 1),
        Option("top_p", "float", 1.0, "sampling filter: nucleus mass (1 = off)", 0.0, 1.0),
    ), "The most probable next tokens after the text, with the probabilities sampling "
       "would use under the chosen temperature, top-k and top-p."),
    ViewKind("attention", "Attention", "text", ("layers.*.attention.probs",), (
        Option("layer", "int_or_none", None, "only this layer (none = all, when they fit)"),
    ), "Every layer x head as a small heatmap (query rows, key columns), with the share "
       "of attention each head gives the first token; one head enlarged, token by token."),
    ViewKind("lens", "Logit lens", "text",
             ("tok_embeddings", "layers.*.resid_post", "norm", "logits"), (
        Option("k", "int", 10, "candidates kept per cell (shown on click)", 1, 50),
    ), "Each stage of the residual stream decoded with the model's own final norm and "
       "output matrix: the top token and its probability per layer and position."),
    ViewKind("residual", "Residual stream", "text",
             ("tok_embeddings", "layers.*.resid_post", "layers.*.feed_forward.act"), (
        Option("stages", "ints", None, "stages for the PCA panels: 0 = embeddings, i + 1 = "
               "after block i (none = six spread out)"),
        Option("skip_first", "bool", False, "leave the first token out of the PCA (its norm "
               "is often huge)"),
    ), "PCA of the token vectors at several depths (2-D and a rotatable 3-D view), each "
       "token's path across layers, and the size of the activations."),
    ViewKind("saliency", "Saliency", "text", ("tok_embeddings", "logits"), (
        _POSITION,
        Option("target", "int_or_none", None, "token id explained (none = the top prediction)", 0),
    ), "Input x gradient: how much each token pushed log p(target) up (blue) or down (red)."),
    ViewKind("dla", "Direct logit attribution", "text",
             ("tok_embeddings", "layers.*.attention.heads", "layers.*.attention.out",
              "layers.*.feed_forward.out", "layers.*.resid_post", "norm"), (
        _POSITION,
        Option("target", "int_or_none", None, "token id (none = the top prediction)", 0),
        Option("contrast", "int_or_none", None, "a second token id: attribute the logit "
               "difference target - contrast", 0),
    ), "The final residual split into the embedding, every head and every MLP, each "
       "projected through the final norm (its scale frozen) onto the target's logit."),
    ViewKind("intervene", "Interventions", "text",
             ("layers.*.attention.heads", "layers.*.attention.out", "layers.*.feed_forward.out",
              "layers.*.resid_post", "logits"), (
        Option("edit", "choice", "ablate_head", "what to change",
               choices=("ablate_head", "ablate_attn", "ablate_mlp", "steer", "patch")),
        _LAYER,
        Option("head", "int", 0, "query head (ablate_head)"),
        Option("mode", "choice", "zero", "ablation: zero, or the mean over positions",
               choices=("zero", "mean")),
        Option("prompt_a", "text", "", "steer: the vector is resid(A) - resid(B)"),
        Option("prompt_b", "text", "", "steer: the second prompt"),
        Option("scale", "float", 4.0, "steer: multiple of the vector added", -1000.0, 1000.0),
        Option("reduce", "choice", "mean", "steer: mean over positions, or the last position",
               choices=("mean", "last")),
        Option("source", "text", "", "patch: the prompt the value is taken from (same "
               "number of tokens)"),
        Option("site", "choice", "resid_post", "patch: which value",
               choices=("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")),
        Option("patch_position", "int", -1, "patch: token position (-1 = the last)"),
        Option("show", "int", 10, "rows of each table", 1, 50),
    ), "Change one part of the computation and compare the next-token table with the "
       "clean run."),
    ViewKind("summary", "Model summary", "model", (), (),
             "Configuration, parameters by component, tied embeddings, KV-cache size."),
    ViewKind("architecture", "Architecture", "model", (
        "tok_embeddings", "layers.*.attention_norm", "layers.*.attention.q",
        "layers.*.attention.k", "layers.*.attention.v", "layers.*.attention.probs",
        "layers.*.attention.heads", "layers.*.attention.out", "layers.*.resid_mid",
        "layers.*.ffn_norm", "layers.*.feed_forward.act", "layers.*.feed_forward.out",
        "layers.*.resid_post", "norm", "logits"), (),
        "The blocks of the model with this model's real dimensions and the hook names."),
    ViewKind("params", "Parameter statistics", "model", (), (),
             "Mean, std, norm and largest |value| of every weight matrix, layer by layer, "
             "and value histograms."),
    ViewKind("rope", "RoPE frequencies", "model", ("layers.*.attention.q_rot",), (
        Option("positions", "int", 128, "positions in the cos/sin table", 1, 4096),
    ), "How fast each pair of head dimensions turns with position, with and without "
       "Llama 3 scaling."),
    ViewKind("tour", "Guided tour", "text", ("*",), (
        _LAYER,
        Option("head", "int", 0, "query head shown"),
        Option("pair", "int", 0, "RoPE pair shown"),
        _POSITION,
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
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null", "off")
                         and opt.type in ("int_or_none", "ints")):
        if opt.type in ("int_or_none", "ints"):
            return None
        return opt.default
    t = opt.type
    if t == "int":
        return _number(kind, opt, value, True)
    if t == "float":
        return _number(kind, opt, value, False)
    if t == "int_or_none":
        return _number(kind, opt, value, True)
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
            raise _bad(kind, opt, value, "one of " + ", ".join(opt.choices))
        return value
    if t == "ints":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise _bad(kind, opt, value, "a list of integers")
        out = [_number(kind, opt, v, True) for v in items]
        if not out:
            return None
        return out
    raise AssertionError(f"unknown option type {t}")  # pragma: no cover


def parse_options(kind: str, raw: dict | None, label: str | None = None) -> dict:
    """Validated options of a view kind; unknown names are an error (a typo must not be
    silently ignored). `label` names the options in messages (default: the kind)."""
    if kind not in VIEWS:
        raise EngineError(f"unknown view {kind!r}; views: {', '.join(VIEWS)}")
    raw = dict(raw or {})
    spec = {o.name: o for o in VIEWS[kind].options}
    unknown = [k for k in raw if k not in spec]
    label = label or kind
    if unknown:
        known = ", ".join(spec) or "none"
        raise EngineError(f"{label}: unknown option {unknown[0]!r} (options: {known})")
    return {name: parse_option(label, o, raw.get(name, o.default)) for name, o in spec.items()}


__all__ = ["EngineError", "Option", "ViewKind", "VIEWS", "parse_options", "parse_option"]
