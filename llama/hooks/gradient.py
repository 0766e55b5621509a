"""Gradients of a scalar of the logits with respect to named intermediates."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .dispatch import HookSet, installed
from .names import HookError, NameSpec, resolve_names
from .record import as_batch


class _GradRecorder(HookSet):
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
    tokens = as_batch(model, tokens)
    recorder = _GradRecorder(set(chosen))
    # tok_embeddings is always hooked: it is where the graph is started.
    try:
        with installed(model, recorder, set(chosen) | {"tok_embeddings"}), torch.enable_grad():
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


__all__ = ["gradients"]
