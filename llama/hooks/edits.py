"""Editing intermediates while the model runs: intervene(), and ready-made edits."""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from ..checks import check_index
from .dispatch import EXPLICIT_ONLY, HookSet, installed
from .names import HookError, resolve_names

EditFn = Callable[..., torch.Tensor]  # fn(value) or fn(value, name) -> replacement


def _wants_name(fn: Callable) -> bool:
    """Does fn take (value, name) rather than just (value)?"""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: call with value only
        return False
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    required = [p for p in positional if p.default is p.empty]
    return len(required) >= 2 or (len(positional) >= 2 and positional[1].name == "name")


class _Edits(HookSet):
    is_editor = True

    def __init__(self, fns: dict[str, tuple[EditFn, bool]]) -> None:
        self.fns = fns  # full name -> (fn, whether fn takes the name too)
        self.counts = {name: 0 for name in fns}  # how often each edit ran

    def edit(self, name: str, value: torch.Tensor) -> torch.Tensor:
        fn, takes_name = self.fns[name]
        try:
            new = fn(value, name) if takes_name else fn(value)
        except Exception as e:
            e.add_note(f"(raised by the intervention on hook point {name!r})")
            raise
        self.counts[name] += 1
        return _check_replacement(name, value, new)


def _check_replacement(name: str, value: torch.Tensor, new: Any) -> torch.Tensor:
    if new is None:
        raise HookError(
            f"the intervention on {name!r} returned None: return the tensor the model should "
            "continue with (for an in-place edit, `return value`)"
        )
    if not isinstance(new, torch.Tensor):
        raise HookError(
            f"the intervention on {name!r} returned {type(new).__name__}, not a tensor of "
            f"shape {tuple(value.shape)}"
        )
    if new.shape != value.shape:
        raise HookError(
            f"the intervention on {name!r} returned shape {tuple(new.shape)}, but the model "
            f"expects {tuple(value.shape)} there: return a tensor of the same shape"
        )
    # The model continues in its own dtype and device (e.g. a float32 patch into a bf16 model).
    return new.to(dtype=value.dtype, device=value.device)


@contextmanager
def intervene(
    model: torch.nn.Module,
    edits: Mapping[str, EditFn] | Iterable[tuple[str, EditFn]],
) -> Iterator[dict[str, int]]:
    """Replace intermediates with fn(value) (or fn(value, name)) inside the block.

        with intervene(model, {"layers.3.attention.heads": ablate_heads(5)}):
            logits = model(tokens)

    Keys are hook names or glob patterns ("layers.*.resid_post"); the same fn is then
    applied at every match. fn must return a tensor of the value's shape (it is cast to the
    value's dtype and device); it should not edit `value` in place unless it returns it.
    Yields {name: number of times it fired}, filled in as forwards run.
    """
    items = list(edits.items()) if isinstance(edits, Mapping) else list(edits)
    if not items:
        raise HookError("intervene() got no edits: pass {hook name: fn}")
    fns: dict[str, tuple[EditFn, bool]] = {}
    for pattern, fn in items:
        if not callable(fn):
            raise TypeError(
                f"the edit for {pattern!r} must be a function value -> tensor, got "
                f"{type(fn).__name__}; e.g. {{'{pattern}': lambda v: v * 0}}"
            )
        for name in resolve_names(model, pattern):
            if name in fns:
                raise HookError(
                    f"hook point {name!r} is edited twice in one intervene() (by {pattern!r} "
                    "and an earlier key): combine the two functions, or nest two contexts"
                )
            fns[name] = (fn, _wants_name(fn))
    hooks = _Edits(fns)
    with installed(model, hooks, fns):
        yield hooks.counts


# -- ready-made edits for the common experiments --------------------------------------


def ablate_heads(*heads: int) -> EditFn:
    """Zero some heads' outputs. Use on `layers.i.attention.heads` (B, T, H, Hd)
    (also works on q / q_rot (B, T, H, Hd) and k / k_rot / v (B, T, KV, Hd)).

        with intervene(model, {"layers.3.attention.heads": ablate_heads(0, 5)}): ...
    """
    if len(heads) == 1 and isinstance(heads[0], (list, tuple)):  # ablate_heads([0, 5])
        heads = tuple(heads[0])
    flat = [int(h) for h in heads]
    if not flat:
        raise HookError("ablate_heads() needs at least one head index")

    def ablate(value: torch.Tensor, name: str) -> torch.Tensor:
        if name.rsplit(".", 1)[-1] not in ("heads", "q", "q_rot", "k", "k_rot", "v"):
            raise HookError(
                f"ablate_heads() works on per-head hook points (…attention.heads, q, k, v), "
                f"not {name!r}"
            )
        n = value.shape[2]  # (B, T, H or KV, Hd)
        chosen = [check_index(h, n, "head", f"heads at {name!r}", error=HookError) for h in flat]
        out = value.clone()
        out[:, :, chosen] = 0
        return out

    return ablate


def _position_index(positions: int | Sequence[int] | slice) -> slice | torch.Tensor:
    """Token positions as an index for the T axis (a slice, or a 1-D tensor of ints)."""
    if isinstance(positions, slice):
        return positions
    return torch.as_tensor(positions, dtype=torch.long).reshape(-1)


def patch_from(
    source: Mapping[str, torch.Tensor], positions: int | Sequence[int] | slice | None = None
) -> EditFn:
    """Replace the value by the same hook point's value from another run's capture.

        _, clean = run_with_cache(model, clean_tokens, "layers.*.resid_post")
        with intervene(model, {"layers.4.resid_post": patch_from(clean, positions=[-1])}):
            corrupted_logits = model(corrupted_tokens)

    positions: only these token positions (axis T) are patched; None = all (the two runs
    must then have the same shape).
    """

    def patch(value: torch.Tensor, name: str) -> torch.Tensor:
        if name not in source:
            raise HookError(
                f"patch_from(): the source capture has no {name!r}; capture it in the source "
                "run (e.g. names=['" + name + "'])"
            )
        src = source[name].to(dtype=value.dtype, device=value.device)
        t_axis = 2 if name.rsplit(".", 1)[-1] in EXPLICIT_ONLY else 1  # (B, H, T, S) vs (B, T, ...)
        if positions is None:
            if src.shape != value.shape:
                raise HookError(
                    f"patch_from(): source {name!r} has shape {tuple(src.shape)} but this run's "
                    f"is {tuple(value.shape)}; for prompts of different lengths pass positions="
                )
            return src.clone()
        index = _position_index(positions)
        where = (slice(None),) * t_axis + (index,)  # value[where]: the chosen positions
        src_part = src[where]
        dst_view_shape = value[where].shape
        if src_part.shape != dst_view_shape:
            raise HookError(
                f"patch_from(): positions {positions!r} select shape {tuple(src_part.shape)} in "
                f"the source but {tuple(dst_view_shape)} in this run for {name!r}"
            )
        out = value.clone()
        out[where] = src_part
        return out

    return patch


def add_vector(
    vector: torch.Tensor, scale: float = 1.0, positions: int | Sequence[int] | slice | None = None
) -> EditFn:
    """Add scale * vector (D,) to a (B, T, D) value: a steering vector on the residual.

        steer = cache_a["layers.6.resid_post"][0, -1] - cache_b["layers.6.resid_post"][0, -1]
        with intervene(model, {"layers.6.resid_post": add_vector(steer, scale=4.0)}): ...

    positions: only at these token positions (axis T); None = every position.
    """
    if not isinstance(vector, torch.Tensor) or vector.dim() != 1:
        raise HookError(
            f"add_vector() needs a 1-D tensor (D,), got "
            f"{tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__}"
        )

    def add(value: torch.Tensor, name: str) -> torch.Tensor:
        if value.dim() != 3 or value.shape[-1] != vector.shape[0]:
            raise HookError(
                f"add_vector(): a vector of size {vector.shape[0]} cannot be added to "
                f"{name!r} of shape {tuple(value.shape)}; use a (B, T, D) point such as "
                "layers.i.resid_post with a vector of size D"
            )
        delta = scale * vector.to(dtype=value.dtype, device=value.device)  # (D,)
        if positions is None:
            return value + delta  # broadcast over (B, T)
        out = value.clone()
        index = _position_index(positions)
        out[:, index] = out[:, index] + delta
        return out

    return add


__all__ = ["EditFn", "intervene", "ablate_heads", "patch_from", "add_vector"]
