"""Hook names: which hook points a `names=` argument selects, and what a typo gets told.

A selection is None (all), an exact name, a glob pattern ("layers.*.resid_post"), a list of
those, or a callable name -> bool. The names and their order are the model's own
(`model.hook_names()`, declared on each module class: see llama/taps.py).
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Iterator, Sequence, Union

import torch

from ..taps import Tappable

NameSpec = Union[None, str, Sequence[str], Callable[[str], bool]]


class HookError(ValueError):
    """A hook request that cannot be honoured (unknown name, bad replacement, bad file)."""


# ----------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------


def check_model(model: Any) -> None:
    """A model of this project (a Tappable root with .args), or a TypeError that says so."""
    if not (isinstance(model, Tappable) and hasattr(model, "args")):
        raise TypeError(
            f"expected a llama.model.Transformer (e.g. from weights.load_model), got "
            f"{type(model).__name__}: hooks only exist on this project's model"
        )


def resolve_names(model: torch.nn.Module, names: NameSpec) -> list[str]:
    """The full hook names `names` selects, in forward order.

    None = all. A string is an exact name or a glob pattern; a list may mix both; a
    callable gets each name and returns True to select it. A name or pattern that selects
    nothing is an error (a typo must not quietly capture nothing).
    """
    check_model(model)
    all_names = model.hook_names()
    if names is None:
        return all_names
    if callable(names) and not isinstance(names, str):
        chosen = [n for n in all_names if names(n)]
        if not chosen:
            raise HookError(
                "the names callable selected no hook point; model.hook_names() lists them "
                f"(first few: {', '.join(all_names[:4])} ...)"
            )
        return chosen
    if isinstance(names, str):
        patterns = [names]
    else:
        try:
            patterns = list(names)
        except TypeError:
            raise TypeError(
                "names must be None, a name or glob pattern, a list of them, or a callable "
                f"name -> bool; got {type(names).__name__}"
            ) from None
    selected: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"hook names must be strings, got {pattern!r}")
        if pattern in all_names:
            selected.add(pattern)
            continue
        hits = fnmatch.filter(all_names, pattern)
        if not hits:
            raise HookError(_unknown_name_message(pattern, all_names, model))
        selected.update(hits)
    return [n for n in all_names if n in selected]


def _unknown_name_message(pattern: str, all_names: list[str], model: torch.nn.Module) -> str:
    close = difflib.get_close_matches(pattern, all_names, n=3, cutoff=0.6)
    n_layers = model.args.n_layers
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"no hook point is named or matches {pattern!r}.{hint} This model has "
        f"{len(all_names)} hook points in {n_layers} layers (0..{n_layers - 1}), e.g. "
        "'tok_embeddings', 'layers.0.attention.probs', 'layers.*.resid_post', 'logits'; "
        "model.hook_names() lists them all."
    )


def tappable_modules(model: torch.nn.Module) -> Iterator[tuple[str, Tappable]]:
    """(path, module) of every Tappable module of the model ("" for the model itself)."""
    for prefix, module in model.named_modules():
        if isinstance(module, Tappable):
            yield prefix, module


def full_name(prefix: str, local: str) -> str:
    """A module's path plus a tap's local name: ("layers.3.attention", "probs") -> the hook name."""
    return f"{prefix}.{local}" if prefix else local


__all__ = ["HookError", "NameSpec", "resolve_names", "check_model", "tappable_modules", "full_name"]
