"""Recording intermediates: capture(), run_with_cache(), hook_shapes()."""

from __future__ import annotations

import difflib
import fnmatch
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from .dispatch import HookSet, installed
from .names import NameSpec, resolve_names


class ActivationCache(dict):
    """{full hook name: tensor}, in forward order, with an error that helps on a miss."""

    def __missing__(self, key: str) -> torch.Tensor:
        have = list(self)
        close = difflib.get_close_matches(str(key), have, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(have[:5]) + (f" ... ({len(have)} in all)" if len(have) > 5 else "")
        shown = shown or "nothing (did a forward run inside the capture?)"
        raise KeyError(
            f"{key!r} was not captured.{hint} Captured: {shown}. "
            "Capture it by naming it (or a pattern matching it) in names=."
        )

    def stack(self, pattern: str) -> torch.Tensor:
        """Stack the captured tensors whose names match a glob, in forward order.

        E.g. cache.stack("layers.*.resid_post") -> (n_layers, B, T, D).
        """
        hits = [k for k in self if fnmatch.fnmatchcase(k, pattern)]
        if not hits:
            raise KeyError(f"no captured name matches {pattern!r}; captured: {list(self)[:5]} ...")
        return torch.stack([self[k] for k in hits])


class _Capture(HookSet):
    def __init__(self, to_cpu: bool, dtype: torch.dtype | None, detach: bool) -> None:
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(
                f"dtype must be a torch.dtype (e.g. torch.float32) or None, got {dtype!r}"
            )
        self.to_cpu, self.dtype, self.detach = to_cpu, dtype, detach
        self.cache = ActivationCache()

    def observe(self, name: str, value: torch.Tensor) -> None:
        t = value.detach() if self.detach else value
        if self.dtype is not None:
            t = t.to(self.dtype)
        if self.to_cpu:
            t = t.to("cpu")
        if self.detach and t.untyped_storage().data_ptr() == value.untyped_storage().data_ptr():
            # No conversion happened: copy, so that later in-place edits of the model's
            # tensor (or of the returned logits) cannot change what was recorded.
            t = t.clone()
        # A later forward inside the same context overwrites: the cache holds the last call.
        self.cache[name] = t


@contextmanager
def capture(
    model: torch.nn.Module,
    names: NameSpec = None,
    to_cpu: bool = True,
    dtype: torch.dtype | None = torch.float32,
    detach: bool = True,
) -> Iterator[ActivationCache]:
    """Record the named intermediates of every forward run inside the block.

        with capture(model, "layers.*.attention.probs") as cache:
            model(tokens)
        cache["layers.0.attention.probs"]   # (B, H, T, S) float32 on the CPU

    names: None (all), a name, a glob, a list of them, or a callable name -> bool.
    to_cpu: move each tensor to the CPU as it is recorded (frees accelerator memory).
    dtype: cast to this dtype (default float32; None keeps the model's dtype, e.g. bf16).
    detach: cut the tensors from the autograd graph (default). With detach=False they stay
        in the graph, which is what `gradients` builds on.
    If a second forward runs inside the block, its values replace the first one's.
    """
    chosen = resolve_names(model, names)
    hooks = _Capture(to_cpu, dtype, detach)
    with installed(model, hooks, chosen):
        yield hooks.cache


def as_batch(model: torch.nn.Module, tokens: Any) -> torch.Tensor:
    """Accept (B, T) ids, a single (T,) sequence, or a list of ids (helpful for learners)."""
    if isinstance(tokens, (list, tuple)):
        if not tokens:
            raise ValueError("tokens is empty: give at least one token id")
        device = model.tok_embeddings.weight.device
        nested = isinstance(tokens[0], (list, tuple))
        tokens = torch.tensor(tokens if nested else [tokens], device=device)
    if isinstance(tokens, torch.Tensor) and tokens.dim() == 1:
        tokens = tokens[None]  # (T,) -> (1, T)
    return tokens


def run_with_cache(
    model: torch.nn.Module,
    tokens: Any,
    names: NameSpec = None,
    to_cpu: bool = True,
    dtype: torch.dtype | None = torch.float32,
    detach: bool = True,
    start_pos: int = 0,
) -> tuple[torch.Tensor, ActivationCache]:
    """One forward pass with a capture: (logits (B, T, V), cache).

    With detach=True (default) the pass runs under torch.no_grad(), as an inspection run
    needs no graph. The KV cache is left holding the prompt, so decoding may continue.
    """
    tokens = as_batch(model, tokens)
    with capture(model, names, to_cpu=to_cpu, dtype=dtype, detach=detach) as cache:
        if detach:
            with torch.no_grad():
                logits = model(tokens, start_pos=start_pos)
        else:
            logits = model(tokens, start_pos=start_pos)
    return logits, cache


class _Shapes(HookSet):
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def observe(self, name: str, value: torch.Tensor) -> None:
        self.shapes[name] = tuple(value.shape)


def hook_shapes(
    model: torch.nn.Module, tokens: Any, start_pos: int = 0
) -> dict[str, tuple[int, ...]]:
    """{hook name: shape} for this input, in forward order (records shapes, not values)."""
    tokens = as_batch(model, tokens)
    hooks = _Shapes()
    with installed(model, hooks, resolve_names(model, None)), torch.no_grad():
        model(tokens, start_pos=start_pos)
    return {n: hooks.shapes[n] for n in model.hook_names() if n in hooks.shapes}


__all__ = ["ActivationCache", "capture", "run_with_cache", "hook_shapes", "as_batch"]
