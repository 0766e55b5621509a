"""Hook points ("taps"): how a model's modules declare them, and their names in forward order.

A module whose intermediates can be looked at subclasses `Tappable` and passes each of them
through `self.tap(local_name, value)`, which returns the value untouched unless llama.hooks
has installed a hook on that module. A hook point's full name is the module's path plus the
local name: `layers.3.attention.probs`.

Each class also *declares* its hook points, so that the names and their order are known
from the class alone, without building a model: a capture file knows its model's class and
number of layers but holds no weights, and the docs' table is checked against the same list.

    class Attention(Tappable):
        # Its own taps, in the order forward computes them.
        tap_points = ("q", "k", "v", "q_rot", "k_rot", "scores", "probs", "heads", "out")

    class TransformerBlock(Tappable):
        # Own taps and children's, in forward order. Child("attention", Attention) stands for
        # every point of the submodule self.attention, prefixed "attention.".
        tap_order = ("attention_norm", Child("attention", Attention), "resid_mid",
                     "ffn_norm", Child("feed_forward", FeedForward), "resid_post")

    class Transformer(Tappable):
        # per_layer=True: self.layers is a ModuleList, one TransformerBlock per layer.
        tap_order = ("tok_embeddings", Child("layers", TransformerBlock, per_layer=True),
                     "norm", "logits")

`hook_order(Transformer, n_layers=2)` expands that into every full name in forward order
(tok_embeddings, layers.0.attention_norm, layers.0.attention.q, ..., logits), and
`model.hook_names()` is `hook_order(model)` for a built model. They are one function, so
the model, capture files and the documentation cannot disagree.

A new model family (GPT-2, llama/gpt2.py) plugs in the same way and changes nothing here:
its modules subclass Tappable; a module without tappable children lists `tap_points`; a
module with tappable children lists `tap_order`, its own tap names (strings) and a `Child`
for each tappable submodule, in the order its forward reaches them; the stack of blocks is
`Child("layers", Block, per_layer=True)`. `tap_points` of a class with a `tap_order` is
derived from it (the strings, in order). Give the root class a `family` name ("llama",
"gpt2"), which capture files record. The family's tests should check, as tests/test_taps.py
does for Llama, that a forward pass fires the taps in exactly this order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Union

import torch
from torch import nn


@dataclass(frozen=True)
class Child:
    """In a `tap_order`: every hook point of one tappable submodule, at this place.

    name: the attribute that holds it ("attention"; "layers" for the stack of blocks).
    cls: its class, so that the names are known without building the module.
    per_layer: the attribute is a ModuleList of `cls`, one per layer: its points are named
        layers.0.<...>, layers.1.<...>, ... (how many: the model's n_layers).
    """

    name: str
    cls: type
    per_layer: bool = False


TapEntry = Union[str, Child]


class TapDeclarationError(TypeError):
    """A Tappable class whose declared hook points do not make sense (a bug in the model)."""


class Tappable(nn.Module):
    """A module whose intermediates can be observed or replaced by llama.hooks."""

    # Local names of this module's own hook points, in the order forward computes them.
    tap_points: tuple[str, ...] = ()
    # Own hook points and tappable children in forward order (see the module docstring);
    # empty for a module without tappable children (then tap_points alone is the order).
    tap_order: tuple[TapEntry, ...] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "tap_order" in cls.__dict__:
            own = tuple(e for e in cls.tap_order if isinstance(e, str))
            if "tap_points" in cls.__dict__ and tuple(cls.tap_points) != own:
                raise TapDeclarationError(
                    f"{cls.__name__}.tap_points {cls.tap_points} disagrees with the names in "
                    f"its tap_order {own}: declare tap_order only (tap_points follows from it)"
                )
            cls.tap_points = own
        _check_declaration(cls)

    def __init__(self) -> None:
        super().__init__()
        # Set by llama.hooks while a capture or intervention is active: (local_name, value)
        # -> value. None means "no hooks here", the normal fast case.
        self._tap_fn: Callable[[str, torch.Tensor], torch.Tensor] | None = None

    def tap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self._tap_fn is None:
            return value
        return self._tap_fn(name, value)

    def hook_names(self) -> list[str]:
        """Every hook point of this module and its submodules, in forward order."""
        return hook_order(self)


def _check_declaration(cls: type) -> None:
    seen: set[str] = set()
    for entry in cls.tap_order or cls.tap_points:
        if isinstance(entry, Child):
            if not (isinstance(entry.cls, type) and issubclass(entry.cls, Tappable)):
                raise TapDeclarationError(
                    f"{cls.__name__}.tap_order: Child({entry.name!r}, ...) needs a Tappable "
                    f"class, got {entry.cls!r}"
                )
            key = entry.name
        elif isinstance(entry, str):
            key = entry
        else:
            raise TapDeclarationError(
                f"{cls.__name__}.tap_order holds {entry!r}: use tap names (str) and Child(...)"
            )
        if key in seen:
            raise TapDeclarationError(f"{cls.__name__} declares {key!r} twice")
        seen.add(key)


class HookPoint(NamedTuple):
    """One hook point: its full name, the class whose forward taps it, and the local name."""

    name: str  # "layers.3.attention.probs"
    owner: type  # Attention: the class whose `self.tap("probs", ...)` produces it
    local: str  # "probs"


def hook_points(root: Tappable | type, n_layers: int | None = None) -> Iterator[HookPoint]:
    """Every hook point under `root`, in forward order (see `hook_order`)."""
    yield from _expand(root, "", n_layers)


def hook_order(root: Tappable | type, n_layers: int | None = None) -> list[str]:
    """The full name of every hook point under `root`, in the order forward computes them.

    root: a built module (a model: model.hook_names() is hook_order(model)), or a Tappable
        class, e.g. hook_order(Transformer, n_layers=2) (what a capture file uses: it knows
        its model's class and n_layers, not its weights).
    n_layers: for a class, how many blocks a per_layer child holds (ignored for a module,
        whose ModuleList says it).
    """
    return [p.name for p in _expand(root, "", n_layers)]


def _expand(node: Tappable | type, prefix: str, n_layers: int | None) -> Iterator[HookPoint]:
    cls = node if isinstance(node, type) else type(node)
    if not (isinstance(cls, type) and issubclass(cls, Tappable)):
        raise TypeError(f"hook points exist on Tappable modules and classes, not {cls.__name__}")
    for entry in cls.tap_order or cls.tap_points:
        if isinstance(entry, str):
            yield HookPoint(f"{prefix}{entry}", cls, entry)
            continue
        path = f"{prefix}{entry.name}"
        for sub_prefix, sub in _children(node, entry, path, n_layers):
            yield from _expand(sub, sub_prefix, n_layers)


def _children(node, entry: Child, path: str, n_layers: int | None):
    """(prefix, child module or class) for one Child entry of `node`."""
    if isinstance(node, type):
        if not entry.per_layer:
            return [(f"{path}.", entry.cls)]
        if n_layers is None:
            raise TypeError(
                f"{node.__name__} has one {entry.cls.__name__} per layer: pass n_layers to "
                "list its hook names from the class"
            )
        return [(f"{path}.{i}.", entry.cls) for i in range(int(n_layers))]
    sub = getattr(node, entry.name, None)
    if entry.per_layer:
        if not isinstance(sub, nn.ModuleList):
            raise TapDeclarationError(
                f"{type(node).__name__}.{entry.name} should be a ModuleList of "
                f"{entry.cls.__name__} (its tap_order says per_layer=True)"
            )
        return [(f"{path}.{i}.", block) for i, block in enumerate(sub)]
    if not isinstance(sub, Tappable):
        raise TapDeclarationError(
            f"{type(node).__name__}.tap_order names the child {entry.name!r}, but "
            f"{type(node).__name__}.{entry.name} is {type(sub).__name__}, not a Tappable module"
        )
    return [(f"{path}.", sub)]


def hook_point(root: Tappable | type, name: str) -> HookPoint:
    """The HookPoint of one full name under `root` (a model or a model class).

    Raises KeyError, with the names nearby, when `root` has no such hook point.
    """
    layer = name.split(".")[1] if name.startswith("layers.") and name.count(".") >= 2 else ""
    n_layers = int(layer) + 1 if layer.isdigit() else 1
    for point in hook_points(root, n_layers):
        if point.name == name:
            return point
    cls = root if isinstance(root, type) else type(root)
    raise KeyError(f"{cls.__name__} has no hook point {name!r}; model.hook_names() lists them")


def model_class_name(model_or_cls: Tappable | type) -> str:
    """"module:QualName" of a model's class, as capture files record it."""
    cls = model_or_cls if isinstance(model_or_cls, type) else type(model_or_cls)
    return f"{cls.__module__}:{cls.__qualname__}"


def model_class(name: str) -> type:
    """The Tappable class that a "module:QualName" names (as capture files record it).

    A module already imported is used as it is; otherwise only modules of this project
    (llama.*) are imported: a file must not make us import anything else.
    """
    import sys

    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        if not (module_name == "llama" or module_name.startswith("llama.")) or not qualname:
            raise LookupError(f"{name!r} is not a model class of this project (llama.<module>:<Class>)")
        module = importlib.import_module(module_name)
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, Tappable)):
        raise LookupError(f"{module_name} has no Tappable class {qualname!r}")
    return obj


__all__ = [
    "Tappable",
    "Child",
    "HookPoint",
    "TapDeclarationError",
    "hook_order",
    "hook_points",
    "hook_point",
    "model_class_name",
    "model_class",
]
