"""Model families: the few facts generic code needs about a model beyond the model protocol.

Hooks, analysis, plots, the session and the walkthrough work on any model of this project
through the protocol (model.args, tok_embeddings, layers[i].attention ..., the shared hook
names). A few views must still know what kind of model they show: which hook holds the
residual stream entering the first block, whether positions are rotations (RoPE) or
learned vectors, which norm and MLP to draw. Those facts live here, in one table, as data:

    family      model class              config class           residual input  positions
    "llama"     llama.model:Transformer  llama.config:ModelArgs tok_embeddings  rope
    "gpt2"      llama.gpt2:GPT2          llama.gpt2:GPT2Config  embeddings      learned

`family_of(x)` finds the entry for a model, a model class, a configuration (model.args),
a capture file's context, or a family name, so a view computed from a configuration alone
or from a capture file (no model) gets the same answer as one computed from the model.
Code that needs more than these facts keeps its own small table keyed by `Family.name`
(llama/explain: the stages of the walkthrough; llama/plots/architecture.py: the drawing),
never an `if gpt2` in the middle of generic code.

A new family adds a row here, and its model class sets `family = "<name>"` (llama/taps.py).
Nothing in this module imports a model at import time: classes are resolved by name
(llama.taps.model_class), so llama.model and llama.gpt2 stay independent of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# How a family tells positions apart.
ROPE = "rope"  # q and k rotated by position inside every attention layer (llama/model.py)
LEARNED = "learned"  # one learned vector per position, added to the token embedding once


class FamilyError(LookupError):
    """An object that belongs to no model family of this project."""


@dataclass(frozen=True)
class Family:
    """What generic code may ask about a model family (see the module docstring)."""

    name: str  # the model class's `family`, recorded in capture files: "llama", "gpt2"
    title: str  # for people: "Llama", "GPT-2"
    model_class: str  # "module:Class" of the root module (llama.taps.model_class resolves it)
    config_class: str  # "module:Class" of its configuration (model.args)
    # The hook point holding the residual stream as it enters layers.0: stage 0 of the
    # logit lens, the PCA and the activation norms (stage i + 1 is layers.i.resid_post).
    residual_input: str
    residual_input_label: str  # what stage 0 is, for axis labels: "embeddings", ...
    positions: str  # ROPE or LEARNED
    norm: str  # the normalisation's class name in the model file: "RMSNorm", "LayerNorm"
    mlp: str  # what the feed-forward computes, for labels: "SwiGLU", "GELU"

    def model(self) -> type:
        """The root model class (imported on first use)."""
        from .taps import model_class

        return model_class(self.model_class)

    def config_type(self) -> type:
        return _resolve(self.config_class)

    def config(self, fields: Mapping[str, Any]) -> Any:
        """The configuration from its to_dict() fields (what capture files store)."""
        return self.config_type()(**dict(fields))

    @property
    def source(self) -> str:
        """The model's source file as a learner opens it: "llama/model.py", "llama/gpt2.py"."""
        return self.model_class.split(":")[0].replace(".", "/") + ".py"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", "Llama", "llama.model:Transformer", "llama.config:ModelArgs",
               residual_input="tok_embeddings", residual_input_label="embeddings",
               positions=ROPE, norm="RMSNorm", mlp="SwiGLU"),
        Family("gpt2", "GPT-2", "llama.gpt2:GPT2", "llama.gpt2:GPT2Config",
               residual_input="embeddings", residual_input_label="token + position",
               positions=LEARNED, norm="LayerNorm", mlp="GELU"),
    )
}
# Capture files written before they recorded a family came from a Llama model.
DEFAULT_FAMILY = "llama"


def family_of(obj: Any) -> Family:
    """The Family of a model, a model class, a configuration, a capture context or a name.

    A model (or class) is known by its `family` attribute; a configuration by its class;
    a capture file's context by its "family" or "model_class" field (neither: a Llama
    model's, as load_capture reads such files).
    """
    if isinstance(obj, Family):
        return obj
    if isinstance(obj, str):
        return _by_name(obj)
    if isinstance(obj, Mapping):  # a capture context
        if obj.get("family"):
            return _by_name(obj["family"])
        for f in FAMILIES.values():
            if obj.get("model_class") == f.model_class:
                return f
        return FAMILIES[DEFAULT_FAMILY]
    cls = obj if isinstance(obj, type) else type(obj)
    name = getattr(cls, "family", None)
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    paths = {f"{c.__module__}:{c.__qualname__}" for c in cls.__mro__}
    for f in FAMILIES.values():
        if f.config_class in paths or f.model_class in paths:
            return f
    args = getattr(obj, "args", None)  # a wrapper around a model answers for its config
    if args is not None and not isinstance(obj, type):
        return family_of(args)
    raise FamilyError(
        f"{cls.__name__} belongs to no model family of this project (known: "
        f"{', '.join(FAMILIES)}); give a model loaded with weights.load_model or its .args"
    )


def residual_input(obj: Any) -> str:
    """The hook name of the residual stream entering layers.0 for `obj` (see family_of)."""
    return family_of(obj).residual_input


def config_from_dict(fields: Mapping[str, Any], family: Any = DEFAULT_FAMILY) -> Any:
    """A configuration rebuilt from its to_dict() fields (a capture file's "config"), in
    the family's own class: ModelArgs for Llama, GPT2Config for GPT-2."""
    return family_of(family).config(fields)


def _by_name(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise FamilyError(f"unknown model family {name!r}: expected one of {', '.join(FAMILIES)}") from None


def _resolve(path: str) -> type:
    import importlib

    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = ["Family", "FamilyError", "FAMILIES", "DEFAULT_FAMILY", "ROPE", "LEARNED",
           "family_of", "residual_input", "config_from_dict"]
