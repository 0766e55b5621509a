"""The view kinds: one registry that every front end reads.

A view kind is one way of looking at a model. Its entry says what it needs (a prompt run
through the model, the model alone, or only its configuration), which hook points its
numbers come from, which options it takes (with defaults and checks), and computes the
numbers. `llama-plot` builds its command line from this registry, the REPL's `:attn` and
`:pca` and the studio compute through it, and llama.plots has one renderer per kind.

    from llama.analysis import VIEW_KINDS, ViewSource, compute_view
    view = compute_view("attention", ViewSource.from_model(model, tok, ids), layer=3)
    view.data        # AttentionMaps: the numbers
    view.tokens      # Tokens: the label of every position they refer to
    view.hooks       # ['layers.3.attention.probs']: where they were read
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..family import Family, family_of
from .activations import activation_stats
from .attention import attention_maps
from .capture import n_layers_in, parse_stages, run_and_capture, stage_names
from .common import AnalysisError, check_index
from .embeddings import token_embeddings
from .lens import logit_lens
from .params import PARAM_VIEWS, param_stats
from .pca import PCA_VIEWS, pca_stages
from .positions import position_embeddings
from .rope import rope_table
from .saliency import saliency
from .summary import model_summary
from .tokens import Tokens, plain_tokens, token_text, tokens_from_tokenizer
from .topk import top_k

# What a kind needs besides the configuration.
PROMPT = "prompt"  # token ids run through the model (or a capture file of such a run)
MODEL = "model"  # the model itself, no prompt
CONFIG = "config"  # the configuration alone: no tensors are read

ATTENTION_VIEWS = ("head", "grid", "sink")


@dataclass(frozen=True)
class Option:
    """One option of a view kind: llama-plot's --NAME, the studio's control."""

    name: str
    type: type  # int, float, str or bool
    default: Any  # None: not given (the kind decides, e.g. attention's view from head)
    help: str
    choices: tuple = ()
    minimum: int | None = None

    def check(self, value: Any, kind: str, spell: Callable[[str], str] = str) -> Any:
        """The value, converted and validated (None: the default), or AnalysisError.

        spell(name) is how the front end names the option in messages ("--view").
        """
        if value is None:
            return self.default
        flag = spell(self.name)
        if self.type is bool:
            if not isinstance(value, bool):
                raise AnalysisError(f"{flag} is on or off (true or false), got {value!r}")
        elif self.type in (int, float):
            if isinstance(value, bool):
                raise AnalysisError(f"{flag} needs a number, got {value!r}")
            try:
                number = self.type(value)
            except (TypeError, ValueError):
                word = "a whole number" if self.type is int else "a number"
                raise AnalysisError(f"{flag} needs {word}, got {value!r}") from None
            if self.type is int and isinstance(value, float) and number != value:
                raise AnalysisError(f"{flag} needs a whole number, got {value!r}")
            value = number
        else:
            value = str(value)
        if self.choices and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise AnalysisError(f"{flag} for {kind} must be one of {allowed}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise AnalysisError(f"{flag} must be at least {self.minimum}, got {value}")
        return value


@dataclass
class View:
    """What a front end renders: the numbers of one view and everything to label them."""

    kind: str
    options: dict[str, Any]  # every option of the kind, resolved
    data: Any  # the analysis result (LogitLens, AttentionMaps, PCAResult, ...)
    tokens: Tokens | None  # the prompt's positions the numbers refer to (None: no prompt)
    labels: dict[int, str]  # text of every token id the data names (predictions, targets)
    hooks: list[str]  # the hook names the numbers were read from, globs resolved
    name: str  # the model's name, for titles
    prompt: str | None = None  # the text the tokens came from, when known


@dataclass
class ViewSource:
    """What views are computed from: a live model (with its tokenizer and a prompt), a
    capture file's tensors, or a configuration alone.

    `run(names)` captures intermediates from the model; by default one forward pass over
    `ids` (llama.session's Session passes one that holds the model's lock and keeps its
    KV cache record true). Captured tensors are kept in `cache` and reused by later views.
    """

    args: Any  # the model's configuration (model.args)
    model: torch.nn.Module | None = None
    tokenizer: Any = None
    ids: list[int] = field(default_factory=list)
    tokens: Tokens | None = None
    prompt: str | None = None
    name: str = "model"
    cache: dict[str, torch.Tensor] | None = None  # intermediates, from a file or captured
    run: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None = None
    param_stats: Any = None  # computed once, shared by the three params views

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer=None, ids: Sequence[int] = (),
                   prompt: str | None = None, name: str = "model", run=None) -> "ViewSource":
        ids = [int(i) for i in ids]
        toks = tokens_from_tokenizer(tokenizer, ids) if tokenizer is not None else plain_tokens(ids)
        return cls(model.args, model, tokenizer, ids, toks, prompt, name, run=run)

    @property
    def family(self) -> Family:
        """The model family (llama.family) of the model, or of the configuration alone."""
        return family_of(self.model if self.model is not None else self.args)

    @property
    def residual_input(self) -> str:
        """The hook holding the residual stream entering layers.0 (stage 0 of the views)."""
        return self.family.residual_input

    def token_tensor(self) -> torch.Tensor:
        device = self.model.tok_embeddings.weight.device
        return torch.tensor([self.ids], device=device)  # (1, T)

    def captured(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The intermediates `names` (globs): from the cache, else one capture of the model."""
        if self.cache is not None and (self.model is None or all(_have(self.cache, n) for n in names)):
            return self.cache
        if self.run is not None:
            fresh = self.run(list(names))
        else:
            fresh = run_and_capture(self.model, self.token_tensor(), names)
        self.cache = {**(self.cache or {}), **fresh}
        return self.cache

    def labels(self, ids) -> dict[int, str]:
        """id -> text for the given token ids (empty without a tokenizer)."""
        if self.tokenizer is None:
            return {}
        return {int(i): token_text(self.tokenizer, int(i)) for i in dict.fromkeys(int(i) for i in ids)}


def _have(cache: Mapping[str, Any], pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(k, pattern) for k in cache)


@dataclass(frozen=True)
class ViewKind:
    """One registered view kind (see the module docstring)."""

    name: str
    title: str
    needs: str  # PROMPT, MODEL or CONFIG
    reads: tuple[str, ...]  # hook-name patterns its numbers come from
    captures: bool  # True: `reads` are captured in one forward pass (a capture file can hold them)
    from_capture: bool  # can be computed from a capture file (no live model)
    uses_weights: bool  # reads the model's weights too (from a capture file: give the model)
    options: tuple[Option, ...]
    compute: Callable[["ViewKind", ViewSource, dict], View] = field(repr=False, compare=False)
    doc: str = ""
    # The model families (llama.family names) it shows something for; () = every family.
    # rope is Llama's (GPT-2 has no RoPE), positions GPT-2's (Llama learns no positions):
    # on another family they raise an AnalysisError saying so and naming the other view.
    families: tuple[str, ...] = ()

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def applies_to(self, model_or_args: Any) -> bool:
        """Whether this kind shows something for that model (or configuration, or family)."""
        return not self.families or family_of(model_or_args).name in self.families

    def hook_names(self, src: ViewSource) -> tuple[str, ...]:
        """`reads` for this source's model: RESIDUAL_INPUT becomes its family's hook for
        the residual stream entering layers.0 (tok_embeddings, or GPT-2's embeddings)."""
        return tuple(src.residual_input if r == RESIDUAL_INPUT else r for r in self.reads)

    def resolve(self, values: Mapping[str, Any] | None = None, spell: Callable[[str], str] = str) -> dict[str, Any]:
        """Every option of this kind: given values checked, the others at their defaults.

        A value for an option this kind does not have is an error (None counts as not
        given), naming the kinds that do have it.
        """
        values = dict(values or {})
        for name, value in values.items():
            if value is not None and self.option(name) is None:
                others = [k.name for k in VIEW_KINDS.values() if k.option(name) is not None]
                only = f" (only to {', '.join(others)})" if others else ""
                raise AnalysisError(f"{spell(name)} does not apply to {self.name}{only}")
        return {o.name: o.check(values.get(o.name), self.name, spell) for o in self.options}

    def view(self, src: ViewSource, data: Any, options: dict, hooks: Sequence[str] = (),
             label_ids=()) -> View:
        prompt = self.needs == PROMPT
        return View(self.name, options, data, src.tokens if prompt else None,
                    src.labels(label_ids), list(hooks), src.name, src.prompt if prompt else None)


# ----------------------------------------------------------------------------------
# The compute function of each kind: ViewSource + resolved options -> View
# ----------------------------------------------------------------------------------


def _n_layers(src: ViewSource, cache) -> int:
    # A live model knows its depth; a capture file covers the layers it holds.
    return src.args.n_layers if src.model is not None else (n_layers_in(cache) or src.args.n_layers)


def _summary(k: ViewKind, src: ViewSource, o: dict) -> View:
    return k.view(src, model_summary(src.model if src.model is not None else src.args, src.name), o)


def _tokens(k: ViewKind, src: ViewSource, o: dict) -> View:
    return k.view(src, src.tokens, o)


def _pca(k: ViewKind, src: ViewSource, o: dict) -> View:
    cache = src.captured(k.hook_names(src))
    L = _n_layers(src, cache)
    # A trajectory reads best with every stage; a grid with a handful of panels.
    if o["view"] == "trajectory" and o["layers"] is None:
        stages = list(range(L + 1))
    else:
        stages = parse_stages(o["layers"], L)
    f = src.family
    data = pca_stages(cache, stages, dims=o["dims"], view=o["view"], skip_first=o["skip_first"],
                      residual_input=f.residual_input, input_label=f.residual_input_label)
    names = stage_names(L, f.residual_input)
    return k.view(src, data, o, [names[s] for s in stages])


def _attention(k: ViewKind, src: ViewSource, o: dict) -> View:
    o = dict(o, view=o["view"] or ("head" if o["head"] is not None else "grid"))
    if o["view"] == "sink":
        cache = src.captured(k.hook_names(src))
        L = _n_layers(src, cache)
        maps = attention_maps(cache, n_layers=L)
        return k.view(src, maps, o, [f"layers.{i}.attention.probs" for i in sorted(maps.probs)])
    L = _n_layers(src, src.cache or {})
    layer = check_index(o["layer"] if o["layer"] is not None else 0, L, "layer")
    name = f"layers.{layer}.attention.probs"
    maps = attention_maps(src.captured([name]), [layer], n_layers=L)  # only the layer shown
    o["layer"] = layer
    if o["view"] == "head":
        o["head"] = check_index(o["head"] if o["head"] is not None else 0, maps.n_heads, "head")
    return k.view(src, maps, o, [name])


def _activations(k: ViewKind, src: ViewSource, o: dict) -> View:
    cache = src.captured(k.hook_names(src))
    L = n_layers_in(cache)
    f = src.family
    hooks = stage_names(L, f.residual_input) + [f"layers.{i}.feed_forward.act" for i in range(L)]
    data = activation_stats(cache, f.residual_input, f.residual_input_label)
    return k.view(src, data, o, hooks)


def _lens(k: ViewKind, src: ViewSource, o: dict) -> View:
    if src.model is None:
        raise AnalysisError("lens applies the model's final norm and output matrix: it needs "
                            "the model, not only a capture")
    cache = src.captured(k.hook_names(src))
    lens = logit_lens(src.model, cache, k=o["k"])
    hooks = [stage_names(n_layers_in(cache), lens.residual_input)[s] for s in lens.stages]
    return k.view(src, lens, o, hooks, lens.ranked_ids.ravel())


def _topk(k: ViewKind, src: ViewSource, o: dict) -> View:
    cache = src.captured(k.hook_names(src))
    if "logits" not in cache:
        raise AnalysisError("topk needs the 'logits' intermediate, which this export lacks")
    r = top_k(cache["logits"], k=o["k"], position=o["position"])
    return k.view(src, r, o, ["logits"], r.ids)


def _saliency(k: ViewKind, src: ViewSource, o: dict) -> View:
    s = saliency(src.model, src.token_tensor(), position=o["position"], target=o["target"])
    return k.view(src, s, o, ["tok_embeddings", "logits"], [s.target_id])


def _params(k: ViewKind, src: ViewSource, o: dict) -> View:
    if src.param_stats is None:
        src.param_stats = param_stats(src.model)
    return k.view(src, src.param_stats, o)


def _rope(k: ViewKind, src: ViewSource, o: dict) -> View:
    return k.view(src, rope_table(src.args, positions=o["positions"]), o)


def _architecture(k: ViewKind, src: ViewSource, o: dict) -> View:
    return k.view(src, src.args, o)


def _positions(k: ViewKind, src: ViewSource, o: dict) -> View:
    return k.view(src, position_embeddings(src.model, o["positions"]), o, ["pos_embeddings"])


def _embeddings(k: ViewKind, src: ViewSource, o: dict) -> View:
    data = token_embeddings(src.captured(k.hook_names(src)), src.ids, dims=o["dims"])
    return k.view(src, data, o, ["tok_embeddings"], data.ids)


def _position(help_: str) -> Option:
    return Option("position", int, -1, help_)


# In `reads`: the family's hook for the residual stream entering layers.0 (ViewKind.hook_names).
RESIDUAL_INPUT = "{residual_input}"
RESIDUAL = (RESIDUAL_INPUT, "layers.*.resid_post")

_KINDS = (
    ViewKind("summary", "model summary", MODEL, (), False, True, False, (), _summary,
             "configuration, parameter counts by component, tied embeddings, KV-cache and "
             "weight memory"),
    ViewKind("tokens", "tokens", PROMPT, (), False, True, False, (), _tokens,
             "the prompt as the model sees it: each token's text, id and position"),
    ViewKind("pca", "PCA of the residual stream", PROMPT, RESIDUAL, True, True, False, (
        Option("layers", str, None, "stages to show, e.g. emb,0,5,-1 (default: 6 spread out)"),
        Option("view", str, "grid", "grid: one PCA per stage; trajectory: each token's path",
               choices=PCA_VIEWS),
        Option("dims", int, 2, "2-D or 3-D", choices=(2, 3)),
        Option("skip_first", bool, False, "leave out the first token (often far from the rest)"),
    ), _pca, "token vectors in their top principal components, per stage or as paths"),
    ViewKind("attention", "attention", PROMPT, ("layers.*.attention.probs",), True, True, False, (
        Option("layer", int, None, "layer index (negative from the end; default 0)"),
        Option("head", int, None, "head index (gives the single-head view)"),
        Option("view", str, None, "head: one head; grid: all heads of a layer; sink: the share "
               "of attention on the first token, every layer and head", choices=ATTENTION_VIEWS),
    ), _attention, "who attends to whom: one head, a layer's heads, or the first-token share"),
    ViewKind("activations", "activation magnitudes", PROMPT,
             RESIDUAL + ("layers.*.feed_forward.act",), True, True, False, (), _activations,
             "residual-stream norms and MLP activation sizes per token and layer"),
    ViewKind("lens", "logit lens", PROMPT, RESIDUAL, True, True, True, (
        Option("k", int, 1, "candidates kept per cell", minimum=1),
    ), _lens, "each layer's best guess for the next token, through the final norm and output"),
    ViewKind("topk", "next-token candidates", PROMPT, ("logits",), True, True, False, (
        Option("k", int, 10, "how many tokens", minimum=1),
        _position("position whose next token is shown (default -1, the last)"),
    ), _topk, "the k most likely next tokens after a position"),
    ViewKind("saliency", "saliency", PROMPT, ("tok_embeddings", "logits"), False, False, True, (
        _position("position whose prediction is explained (default -1, the last)"),
        Option("target", int, None, "token id to explain (default: the top prediction)"),
    ), _saliency, "input x gradient: which prompt tokens made the prediction likely"),
    ViewKind("params", "weight statistics", MODEL, (), False, False, True, (
        Option("view", str, "stats", "stats: lines across layers; hist: value histograms; "
               "heatmap: row norms", choices=PARAM_VIEWS),
    ), _params, "mean, spread, norms and histograms of every weight, layer by layer"),
    ViewKind("rope", "RoPE frequencies", CONFIG, (), False, True, False, (
        Option("positions", int, 256, "positions in the cos/sin tables", minimum=1),
    ), _rope, "rotation speed of each pair of head dimensions, with and without scaling",
       families=("llama",)),
    ViewKind("architecture", "architecture", CONFIG, (), False, True, False, (), _architecture,
             "the block structure with this model's real dimensions and its hook names"),
    ViewKind("positions", "learned position embeddings", MODEL, (), False, False, True, (
        Option("positions", int, None, "positions to show (default: every learned one)",
               minimum=1),
    ), _positions, "the learned position vectors (GPT-2): the matrix, their norms and how "
       "similar positions are, by pair and by distance", families=("gpt2",)),
    ViewKind("embeddings", "token embeddings", PROMPT, ("tok_embeddings",), True, True, False, (
        Option("dims", int, 3, "2-D or 3-D", choices=(2, 3)),
    ), _embeddings, "the prompt's distinct token vectors in their top principal components"),
)

VIEW_KINDS: dict[str, ViewKind] = {k.name: k for k in _KINDS}


def view_kind(name: str) -> ViewKind:
    """The registered kind called `name`, or an AnalysisError listing the kinds."""
    kind = VIEW_KINDS.get(name)
    if kind is None:
        raise AnalysisError(f"unknown view kind {name!r}; the kinds are {', '.join(VIEW_KINDS)}")
    return kind


def option_names() -> list[str]:
    """Every option any kind has, in registry order (a command line offers them all)."""
    return list(dict.fromkeys(o.name for k in VIEW_KINDS.values() for o in k.options))


def compute_view(kind: str, src: ViewSource, options: Mapping[str, Any] | None = None,
                 spell: Callable[[str], str] = str, **more: Any) -> View:
    """The numbers of one view, checked and labelled, ready for any front end to render.

    options (or keyword arguments): the kind's options; unset ones take their defaults.
    spell: how the front end names an option in error messages (llama-plot: "--view").
    """
    k = view_kind(kind)
    opts = k.resolve({**(options or {}), **more}, spell)
    if k.needs == PROMPT and not src.ids:
        raise AnalysisError(f"{kind} needs a prompt: give some text or token ids")
    if src.model is None and not k.from_capture:
        raise AnalysisError(f"{kind} needs the model itself (gradients or weights), which a "
                            "capture file does not hold")
    return k.compute(k, src, opts)


__all__ = ["PROMPT", "MODEL", "CONFIG", "ATTENTION_VIEWS", "RESIDUAL_INPUT", "Option", "View", "ViewSource",
           "ViewKind", "VIEW_KINDS", "view_kind", "option_names", "compute_view"]
