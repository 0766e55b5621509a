"""Named intermediates: capture them, export them, edit them, differentiate through them.

Every intermediate of the forward pass goes through a "tap" (see llama/model.py):
`self.tap("probs", probs)` returns the value untouched unless this module installed a
hook there. A hook point's full name is the module's path plus the tap's local name:

    tok_embeddings                               (B, T, D)
    layers.i.attention_norm                      (B, T, D)
    layers.i.attention.q / q_rot                 (B, T, H, Hd)   before / after RoPE
    layers.i.attention.k / k_rot / v             (B, T, KV, Hd)
    layers.i.attention.scores                    (B, H, T, S)    pre-softmax, masked (-inf)
    layers.i.attention.probs                     (B, H, T, S)
    layers.i.attention.heads                     (B, T, H, Hd)   each head's output, before wo
    layers.i.attention.out                       (B, T, D)       after wo
    layers.i.resid_mid                           (B, T, D)       residual after attention
    layers.i.ffn_norm                            (B, T, D)
    layers.i.feed_forward.gate / up / act        (B, T, F)       w1 x, w3 x, silu(w1 x) * w3 x
    layers.i.feed_forward.out                    (B, T, D)       after w2
    layers.i.resid_post                          (B, T, D)       residual after the block
    norm                                         (B, T, D)       final RMSNorm
    logits                                       (B, T, V)       float32

`model.hook_names()` lists them in forward order; `hook_shapes(model, tokens)` gives each
one's shape for an input.

What this module offers (all of it scoped: whatever a context installs, it removes on
exit, also when the forward raises):

    with capture(model, names) as cache: model(tokens)      # record intermediates
    logits, cache = run_with_cache(model, tokens, names)     # the same in one call
    with intervene(model, {name: fn}): model(tokens)         # replace / edit intermediates
    grads = gradients(model, tokens, scalar_fn, names)       # d scalar / d intermediate
    save_capture(path, cache, ...); load_capture(path)       # one .safetensors file

Names may be given as an exact name, a glob pattern ("layers.*.resid_post",
"layers.3.attention.*"), a list of those, or a callable name -> bool.

How hooks compose. Each Tappable module gets one `_Dispatcher` as its `_tap_fn` while any
context needs it. At a tap it first applies every active *edit* (interventions, in the
order their contexts were entered), then hands the resulting value to every active
*observer* (captures). So a capture always records the value the model really went on
with, whether the intervention context was entered before or after the capture. When the
last context using a module exits, its `_tap_fn` goes back to what it was before.

Attention scores and probabilities exist as tensors only in the explicit attention path:
a context that names any `scores`/`probs` switches just those layers to
`attention.impl = "explicit"` and restores each layer's previous setting on exit. All
other captures keep the fused (sdpa) path.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch

from .model import Attention, FeedForward, Tappable

NameSpec = Union[None, str, Sequence[str], Callable[[str], bool]]
EditFn = Callable[..., torch.Tensor]  # fn(value) or fn(value, name) -> replacement

# Tap names (last component) that only the explicit attention path produces.
EXPLICIT_ONLY = ("scores", "probs")

CAPTURE_FORMAT = "llama-from-scratch/capture"
CAPTURE_VERSION = "1"


class HookError(ValueError):
    """A hook request that cannot be honoured (unknown name, bad replacement, bad file)."""


# ----------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------


def _check_model(model: Any) -> None:
    if not (isinstance(model, Tappable) and hasattr(model, "hook_names")):
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
    _check_model(model)
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


def _tappable_modules(model: torch.nn.Module) -> Iterator[tuple[str, Tappable]]:
    for prefix, module in model.named_modules():
        if isinstance(module, Tappable):
            yield prefix, module


def _full_name(prefix: str, local: str) -> str:
    return f"{prefix}.{local}" if prefix else local


# ----------------------------------------------------------------------------------
# Installing and removing hooks
# ----------------------------------------------------------------------------------


class _HookSet:
    """What one context wants done at its hook points.

    edit(full_name, value) -> value     (interventions, and gradients' bookkeeping)
    observe(full_name, value) -> None   (captures)
    """

    is_editor = False

    def edit(self, name: str, value: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        return value

    def observe(self, name: str, value: torch.Tensor) -> None:  # pragma: no cover
        pass


class _Dispatcher:
    """The `_tap_fn` of one module while hooks are active: runs every context's hooks."""

    __slots__ = ("prefix", "prev", "editors", "observers")

    def __init__(self, prefix: str, prev: Callable | None) -> None:
        self.prefix = prefix
        self.prev = prev  # whatever _tap_fn was there before (restored when we are empty)
        # (hook set, {local name: full name}) in the order the contexts were entered
        self.editors: list[tuple[_HookSet, dict[str, str]]] = []
        self.observers: list[tuple[_HookSet, dict[str, str]]] = []

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
def _installed(model: torch.nn.Module, hooks: _HookSet, names: Iterable[str]) -> Iterator[None]:
    """Install `hooks` at `names` (and explicit attention where needed); always undo it."""
    wanted = set(names)
    touched: list[tuple[Tappable, _Dispatcher, tuple, Callable | None]] = []
    switched: list[tuple[torch.nn.Module, str]] = []  # (attention module, previous impl)
    try:
        for prefix, module in _tappable_modules(model):
            local_map = {
                local: _full_name(prefix, local)
                for local in module.tap_points
                if _full_name(prefix, local) in wanted
            }
            if not local_map:
                continue
            current = module._tap_fn
            if isinstance(current, _Dispatcher):
                dispatcher, installed_here = current, None
            else:
                dispatcher = _Dispatcher(prefix, current)
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
    return [prefix or "<root>" for prefix, m in _tappable_modules(model) if m._tap_fn is not None]


# ----------------------------------------------------------------------------------
# Capture
# ----------------------------------------------------------------------------------


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


class _Capture(_HookSet):
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
    with _installed(model, hooks, chosen):
        yield hooks.cache


def _as_batch(model: torch.nn.Module, tokens: Any) -> torch.Tensor:
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
    tokens = _as_batch(model, tokens)
    with capture(model, names, to_cpu=to_cpu, dtype=dtype, detach=detach) as cache:
        if detach:
            with torch.no_grad():
                logits = model(tokens, start_pos=start_pos)
        else:
            logits = model(tokens, start_pos=start_pos)
    return logits, cache


class _Shapes(_HookSet):
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def observe(self, name: str, value: torch.Tensor) -> None:
        self.shapes[name] = tuple(value.shape)


def hook_shapes(
    model: torch.nn.Module, tokens: Any, start_pos: int = 0
) -> dict[str, tuple[int, ...]]:
    """{hook name: shape} for this input, in forward order (records shapes, not values)."""
    tokens = _as_batch(model, tokens)
    hooks = _Shapes()
    with _installed(model, hooks, resolve_names(model, None)), torch.no_grad():
        model(tokens, start_pos=start_pos)
    return {n: hooks.shapes[n] for n in model.hook_names() if n in hooks.shapes}


# ----------------------------------------------------------------------------------
# Interventions
# ----------------------------------------------------------------------------------


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


class _Edits(_HookSet):
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
    with _installed(model, hooks, fns):
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
        bad = [h for h in flat if not -n <= h < n]
        if bad:
            raise HookError(
                f"head index {bad[0]} is out of range for {name!r}, which has {n} heads"
            )
        out = value.clone()
        out[:, :, flat] = 0
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


# ----------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------


class _GradRecorder(_HookSet):
    """Keeps the (non-detached) values, and makes the embeddings a leaf so a graph exists
    even when the parameters do not require grad (loaders hand out frozen models)."""

    is_editor = True

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.values: dict[str, torch.Tensor] = {}

    def edit(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name == "tok_embeddings" and not value.requires_grad:
            # A fresh leaf with the same numbers: everything downstream now carries a graph.
            value = value.detach().requires_grad_(True)
        if name in self.wanted:
            self.values[name] = value
        return value


def gradients(
    model: torch.nn.Module,
    tokens: Any,
    scalar_fn: Callable[[torch.Tensor], torch.Tensor],
    names: NameSpec = "tok_embeddings",
    start_pos: int = 0,
) -> dict[str, torch.Tensor]:
    """d scalar_fn(logits) / d each named intermediate, from one forward and one backward.

        target = tok.encode(" Paris", bos=False)[0]
        grads = gradients(model, tokens, lambda lg: lg[0, -1].log_softmax(-1)[target],
                          ["tok_embeddings", "layers.*.resid_post"])

    scalar_fn gets the float32 logits (B, T, V) and returns a single number. "tok_embeddings"
    gives the gradient with respect to the input embeddings (saliency: sum over D of
    embedding * gradient). Works whether or not the parameters require grad, and inside
    torch.no_grad(); parameter .grad fields are not touched. Active interventions apply.
    The gradients have each value's shape, dtype and device. The KV cache is reset after
    (it would otherwise hold tensors of this graph).
    """
    chosen = resolve_names(model, names)
    if not callable(scalar_fn):
        raise TypeError("scalar_fn must be a function logits (B, T, V) -> scalar tensor")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradients() cannot run inside torch.inference_mode(): call it outside that block"
        )
    tokens = _as_batch(model, tokens)
    recorder = _GradRecorder(set(chosen))
    # tok_embeddings is always hooked: it is where the graph is started.
    try:
        with _installed(model, recorder, set(chosen) | {"tok_embeddings"}), torch.enable_grad():
            logits = model(tokens, start_pos=start_pos)
            scalar = scalar_fn(logits)
            if not isinstance(scalar, torch.Tensor) or scalar.numel() != 1:
                shape = (
                    tuple(scalar.shape) if isinstance(scalar, torch.Tensor)
                    else type(scalar).__name__
                )
                raise HookError(
                    f"scalar_fn must return one number (a tensor with a single element), got "
                    f"{shape}; e.g. logits[0, -1].log_softmax(-1)[target], or .sum() over a batch"
                )
            if not scalar.requires_grad:
                raise HookError(
                    "scalar_fn's result does not depend on the logits it was given (no graph): "
                    "compute it from the logits argument"
                )
            missing = [n for n in chosen if n not in recorder.values]
            if missing:  # pragma: no cover - every tap fires in a forward
                raise HookError(f"hook points never ran in the forward: {missing}")
            tensors = [recorder.values[n] for n in chosen]
            grads = torch.autograd.grad(scalar.reshape(()), tensors, allow_unused=True)
    finally:
        model.reset_cache()
    return {
        n: (g if g is not None else torch.zeros_like(t)).detach()
        for n, t, g in zip(chosen, tensors, grads)
    }


# ----------------------------------------------------------------------------------
# Export: one .safetensors file with the context as JSON metadata
# ----------------------------------------------------------------------------------


@dataclass
class Capture:
    """A capture read back from disk: the tensors and the context they were taken in.

    context keys: prompt, token_ids (list[int] for one sequence, list of lists for a
    batch), pieces, config (ModelArgs as a dict), checkpoint, dtype (the model's dtype
    when captured, e.g. "bfloat16"), format, version; plus anything passed as extra.
    """

    tensors: dict[str, torch.Tensor]
    context: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        return ActivationCache(self.tensors)[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def keys(self):
        return self.tensors.keys()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_capture(
    path: str | Path,
    cache: Mapping[str, torch.Tensor],
    tokens: Any = None,
    pieces: Sequence[str] | None = None,
    prompt: str | None = None,
    model: torch.nn.Module | None = None,
    checkpoint: str | None = None,
    dtype: str | torch.dtype | None = None,
    config: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a capture and its context to one .safetensors file; returns the path.

    Tensors are stored as captured (float32 stays float32, bfloat16 stays bfloat16). The
    context goes in the file's metadata as JSON under the key "context". `model` supplies
    config (model.args) and dtype when they are not given; `tokenizer` supplies pieces.
    """
    from safetensors.torch import save_file

    if not isinstance(cache, Mapping) or not cache:
        raise HookError("save_capture() needs a non-empty {name: tensor} capture")
    token_ids: Any = None
    if tokens is not None:
        t = torch.as_tensor(tokens)
        token_ids = t.reshape(-1).tolist() if t.dim() <= 1 or t.shape[0] == 1 else t.tolist()
    if pieces is None and tokenizer is not None and token_ids and isinstance(token_ids[0], int):
        pieces = [tokenizer.id_to_piece(i) for i in token_ids]
    if model is not None:
        _check_model(model)
        if config is None:
            config = model.args.to_dict()
        if dtype is None:
            dtype = model.tok_embeddings.weight.dtype
    if isinstance(dtype, torch.dtype):
        dtype = _dtype_name(dtype)
    context = {
        "format": CAPTURE_FORMAT,
        "version": CAPTURE_VERSION,
        "prompt": prompt,
        "token_ids": token_ids,
        "pieces": list(pieces) if pieces is not None else None,
        "config": dict(config) if config is not None else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "dtype": dtype,
    }
    for key, value in (extra or {}).items():
        if key in context:
            raise HookError(f"extra key {key!r} clashes with a context field; rename it")
        context[key] = value
    try:
        context_json = json.dumps(context)
    except TypeError as e:
        raise HookError(f"the capture's context must be JSON-serialisable: {e}") from None

    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, value in cache.items():
        if not isinstance(value, torch.Tensor):
            raise HookError(f"capture entry {name!r} is {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen_storage:  # safetensors refuses tensors that share memory
            t = t.clone()
        seen_storage.add(t.untyped_storage().data_ptr())
        tensors[str(name)] = t
    path = Path(path)
    if path.suffix != ".safetensors":
        raise HookError(f"capture files end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": CAPTURE_FORMAT, "context": context_json})
    return path


def load_capture(path: str | Path, device: str | torch.device = "cpu") -> Capture:
    """Read a file written by save_capture: Capture(tensors, context)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"capture file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise HookError(
            f"{str(path)!r} is not a safetensors file ({e}); captures are written by "
            "llama.hooks.save_capture"
        ) from None
    if metadata.get("format") != CAPTURE_FORMAT or "context" not in metadata:
        raise HookError(
            f"{str(path)!r} is a safetensors file but not a capture (no "
            f"format={CAPTURE_FORMAT!r} metadata): was it written by save_capture?"
        )
    context = json.loads(metadata["context"])
    tensors = load_file(str(path), device=str(device))
    # Keep forward order when the names are hook names (safetensors sorts them by name).
    order = _forward_order(list(tensors), context.get("config"))
    return Capture({k: tensors[k] for k in order}, context)


def _forward_order(names: list[str], config: Mapping[str, Any] | None) -> list[str]:
    n_layers = int(config.get("n_layers", 0)) if config else 0
    if not n_layers:
        parts = [n.split(".") for n in names]
        n_layers = 1 + max(
            (int(p[1]) for p in parts if p[0] == "layers" and len(p) > 1 and p[1].isdigit()),
            default=-1,
        )
    order = ["tok_embeddings"]
    for i in range(n_layers):
        p = f"layers.{i}"
        order.append(f"{p}.attention_norm")
        order += [f"{p}.attention.{n}" for n in Attention.tap_points]
        order += [f"{p}.resid_mid", f"{p}.ffn_norm"]
        order += [f"{p}.feed_forward.{n}" for n in FeedForward.tap_points]
        order.append(f"{p}.resid_post")
    order += ["norm", "logits"]
    rank = {n: i for i, n in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


__all__ = [
    "HookError",
    "NameSpec",
    "resolve_names",
    "active_hooks",
    "ActivationCache",
    "capture",
    "run_with_cache",
    "hook_shapes",
    "intervene",
    "ablate_heads",
    "patch_from",
    "add_vector",
    "gradients",
    "Capture",
    "save_capture",
    "load_capture",
]
