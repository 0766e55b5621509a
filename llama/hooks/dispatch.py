"""Installing and removing hooks: one dispatcher per tapped module, shared by every context.

Each Tappable module gets one `Dispatcher` as its `_tap_fn` while any context needs it. At a
tap it first applies every active *edit* (interventions, in the order their contexts were
entered), then hands the resulting value to every active *observer* (captures). So a capture
always records the value the model really went on with, whether the intervention context
was entered before or after the capture. When the last context using a module exits, its
`_tap_fn` goes back to what it was before.

Attention scores and probabilities exist as tensors only in the explicit attention path:
`installed` switches the layers whose `scores`/`probs` are hooked to
`attention.impl = "explicit"` and restores each layer's previous setting on exit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch

from ..taps import Tappable
from .names import full_name, tappable_modules

# Tap names (last component) that only the explicit attention path produces.
EXPLICIT_ONLY = ("scores", "probs")


class HookSet:
    """What one context wants done at its hook points.

    edit(full_name, value) -> value     (interventions, and gradients' bookkeeping)
    observe(full_name, value) -> None   (captures)
    """

    is_editor = False

    def edit(self, name: str, value: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        return value

    def observe(self, name: str, value: torch.Tensor) -> None:  # pragma: no cover
        pass


class Dispatcher:
    """The `_tap_fn` of one module while hooks are active: runs every context's hooks."""

    __slots__ = ("prefix", "prev", "editors", "observers")

    def __init__(self, prefix: str, prev: Callable | None) -> None:
        self.prefix = prefix
        self.prev = prev  # whatever _tap_fn was there before (restored when we are empty)
        # (hook set, {local name: full name}) in the order the contexts were entered
        self.editors: list[tuple[HookSet, dict[str, str]]] = []
        self.observers: list[tuple[HookSet, dict[str, str]]] = []

    def __call__(self, local: str, value: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            value = self.prev(local, value)
        for hooks, names in self.editors:
            full = names.get(local)
            if full is not None:
                value = hooks.edit(full, value)
        for hooks, names in self.observers:
            full = names.get(local)
            if full is not None:
                hooks.observe(full, value)
        return value

    def empty(self) -> bool:
        return not self.editors and not self.observers


@contextmanager
def installed(model: torch.nn.Module, hooks: HookSet, names: Iterable[str]) -> Iterator[None]:
    """Install `hooks` at `names` (and explicit attention where needed); always undo it."""
    wanted = set(names)
    touched: list[tuple[Tappable, Dispatcher, tuple, Callable | None]] = []
    switched: list[tuple[torch.nn.Module, str]] = []  # (attention module, previous impl)
    try:
        for prefix, module in tappable_modules(model):
            local_map = {
                local: full_name(prefix, local)
                for local in module.tap_points
                if full_name(prefix, local) in wanted
            }
            if not local_map:
                continue
            current = module._tap_fn
            if isinstance(current, Dispatcher):
                dispatcher, installed_here = current, None
            else:
                dispatcher = Dispatcher(prefix, current)
                installed_here = current
                module._tap_fn = dispatcher
            entry = (hooks, local_map)
            bucket = dispatcher.editors if hooks.is_editor else dispatcher.observers
            bucket.append(entry)
            touched.append((module, dispatcher, entry, installed_here))
            # Scores and probabilities are only computed by the explicit path.
            if any(local in EXPLICIT_ONLY for local in local_map) and hasattr(module, "impl"):
                switched.append((module, module.impl))
                module.impl = "explicit"
        yield
    finally:
        for module, previous in reversed(switched):
            module.impl = previous
        for module, dispatcher, entry, _ in reversed(touched):
            for bucket in (dispatcher.editors, dispatcher.observers):
                if any(e is entry for e in bucket):
                    bucket[:] = [e for e in bucket if e is not entry]
            if dispatcher.empty() and module._tap_fn is dispatcher:
                module._tap_fn = dispatcher.prev


def active_hooks(model: torch.nn.Module) -> list[str]:
    """Full names of the modules that currently have a hook installed ([] when clean)."""
    return [prefix or "<root>" for prefix, m in tappable_modules(model) if m._tap_fn is not None]


def tap_hooks(module: torch.nn.Module, local: str) -> tuple[bool, bool]:
    """(observed, edited): does an active context capture / edit tap `local` of `module`?

    For code that wraps a module's `tap` and wants to do extra work only for hooked points
    (llama.parallel all-gathers a head-split value only when something reads or edits it).
    When the module's `_tap_fn` is not a Dispatcher of ours, or chains another function,
    nobody can tell what it does with the value: the answer is then (True, True).
    """
    fn = getattr(module, "_tap_fn", None)
    if fn is None:
        return False, False
    if not isinstance(fn, Dispatcher) or fn.prev is not None:
        return True, True
    return (any(local in names for _, names in fn.observers),
            any(local in names for _, names in fn.editors))


__all__ = ["EXPLICIT_ONLY", "HookSet", "Dispatcher", "installed", "active_hooks", "tap_hooks"]
