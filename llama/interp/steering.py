"""Steering: push the residual stream along a direction and watch the output move.

The direction is the difference between two prompts' residual streams after block L
(hook point layers.L.resid_post), e.g. "Love" minus "Hate": averaged over each prompt's
positions (how="mean", the prompts may differ in length) or taken at the last position
(how="last"). Adding scale * vector at the same layer, at every position, while the model
runs (prompt and generated tokens alike) steers what it writes.

    v = steering_vector(model, "Love", "Hate", layer=6, tokenizer=tok)
    with steer(model, v, scale=4.0):
        logits = model(tokens)                       # every forward in the block is steered
    cmp = steering_topk(model, "I think that you are", v, scale=4.0, tokenizer=tok)
    cmp.before, cmp.after                            # next-token tables without / with it
    out = steered_generation(model, "I think that you are", v, 4.0, 20, tokenizer=tok)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..generate import Candidate, generate, top_candidates
from ..hooks import add_vector, intervene, run_with_cache
from .common import InterpError, Prompt, as_prompt, check_layer, check_position, dims, token_label

HOW = ("mean", "last")


@dataclass
class SteeringVector:
    """vector (D,) = residual(prompt_a) - residual(prompt_b) at `hook` (layers.L.resid_post)."""

    vector: torch.Tensor  # (D,), float32, CPU
    layer: int
    hook: str
    how: str  # "mean" over positions, or the "last" position
    ids_a: list[int]
    ids_b: list[int]

    @property
    def norm(self) -> float:
        return float(self.vector.norm())


def _hook(layer: int) -> str:
    return f"layers.{layer}.resid_post"


def steering_vector(
    model: torch.nn.Module,
    prompt_a: Prompt,
    prompt_b: Prompt,
    layer: int,
    how: str = "mean",
    tokenizer: Any = None,
) -> SteeringVector:
    """The difference of two prompts' residual streams after block `layer`.

    how: "mean" (average over each prompt's positions; lengths may differ) or "last"
    (each prompt's last position). Resets the model's KV cache.
    """
    if how not in HOW:
        raise InterpError(f"how must be 'mean' (over positions) or 'last' (last position), got {how!r}")
    d = dims(model)
    layer = check_layer(layer, d)
    a = as_prompt(model, prompt_a, "first prompt", tokenizer)
    b = as_prompt(model, prompt_b, "second prompt", tokenizer)
    hook = _hook(layer)
    resid = []
    try:
        for tokens in (a, b):
            _, cache = run_with_cache(model, tokens, hook)
            r = cache[hook][0]  # (T, D) float32
            resid.append(r.mean(0) if how == "mean" else r[-1])
    finally:
        model.reset_cache()
    return SteeringVector(resid[0] - resid[1], layer, hook, how, a[0].tolist(), b[0].tolist())


def _as_steering(steering: SteeringVector | torch.Tensor, layer: int | None, model) -> tuple[str, torch.Tensor]:
    d = dims(model)
    if isinstance(steering, SteeringVector):
        if layer is not None and check_layer(layer, d) != steering.layer:
            raise InterpError(
                f"this steering vector was taken at layer {steering.layer}; adding it at layer "
                f"{layer} is not what it means (pass the bare tensor .vector to do that)"
            )
        return steering.hook, steering.vector
    if not isinstance(steering, torch.Tensor):
        raise InterpError(f"steering must be a SteeringVector or a (D,) tensor, got {type(steering).__name__}")
    if layer is None:
        raise InterpError("a bare steering tensor needs layer= (which residual stream to add it to)")
    if steering.shape != (d.dim,):
        raise InterpError(f"a steering vector must have shape ({d.dim},) for this model, got {tuple(steering.shape)}")
    return _hook(check_layer(layer, d)), steering


@contextmanager
def steer(
    model: torch.nn.Module,
    steering: SteeringVector | torch.Tensor,
    scale: float = 1.0,
    layer: int | None = None,
) -> Iterator[None]:
    """Inside the block, every forward adds scale * vector to the residual after its layer,
    at every position (a bare (D,) tensor needs layer=)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise InterpError(f"scale must be a number, got {scale!r}")
    hook, vector = _as_steering(steering, layer, model)
    with intervene(model, {hook: add_vector(vector, scale=float(scale))}):
        yield


@dataclass
class SteeringTopK:
    """The next-token table of one prompt without and with steering."""

    before: list[Candidate]
    after: list[Candidate]
    before_labels: list[str]
    after_labels: list[str]
    scale: float
    layer: int
    position: int

    def rows(self) -> list[tuple[str, float, str, float]]:
        """(label before, prob before, label after, prob after), rank by rank."""
        return [
            (lb, b.prob, la, a.prob)
            for b, lb, a, la in zip(self.before, self.before_labels, self.after, self.after_labels)
        ]


def steering_topk(
    model: torch.nn.Module,
    prompt: Prompt,
    steering: SteeringVector | torch.Tensor,
    scale: float = 1.0,
    k: int = 10,
    position: int = -1,
    layer: int | None = None,
    tokenizer: Any = None,
) -> SteeringTopK:
    """The k most probable next tokens at `position` before and after steering."""
    tokens = as_prompt(model, prompt, "prompt", tokenizer)
    pos = check_position(position, tokens.shape[1])
    hook, _ = _as_steering(steering, layer, model)
    try:
        with torch.no_grad():
            plain = model(tokens)[0, pos]  # (V,)
            with steer(model, steering, scale, layer):
                steered = model(tokens)[0, pos]  # (V,)
    finally:
        model.reset_cache()
    before, after = top_candidates(plain, k), top_candidates(steered, k)
    return SteeringTopK(
        before=before,
        after=after,
        before_labels=[token_label(c.id, tokenizer) for c in before],
        after_labels=[token_label(c.id, tokenizer) for c in after],
        scale=float(scale),
        layer=int(hook.split(".")[1]),
        position=pos,
    )


@dataclass
class SteeredGeneration:
    """Token ids generated with the steering applied (and their text, with a tokenizer)."""

    ids: list[int]
    text: str | None
    scale: float
    layer: int


def steered_generation(
    model: torch.nn.Module,
    prompt: Prompt,
    steering: SteeringVector | torch.Tensor,
    scale: float,
    max_new_tokens: int,
    layer: int | None = None,
    tokenizer: Any = None,
    **generate_options: Any,
) -> SteeredGeneration:
    """Generate max_new_tokens tokens with the steering vector added at every step.

    The prompt is prefilled with the vector added at each of its positions, then every
    decode step adds it at the new position (so the cached keys and values are the steered
    ones). generate_options go to llama.generate.generate (temperature, top_k, top_p, seed,
    stop_ids); the default is greedy. Scale 0 gives the unsteered continuation.
    """
    tokens = as_prompt(model, prompt, "prompt", tokenizer)
    hook, _ = _as_steering(steering, layer, model)
    if "context" in generate_options:
        raise InterpError("steered_generation runs its own cache: do not pass context=")
    try:
        with steer(model, steering, scale, layer):
            steps = list(
                generate(model, tokens[0].tolist(), max_new_tokens, tokenizer=tokenizer, **generate_options)
            )
    finally:
        model.reset_cache()  # the cache holds steered keys and values: never reuse them
    ids = [s.id for s in steps if s.id >= 0]
    text = "".join(s.text for s in steps) if tokenizer is not None else None
    return SteeredGeneration(ids=ids, text=text, scale=float(scale), layer=int(hook.split(".")[1]))


__all__ = [
    "HOW",
    "SteeringVector",
    "steering_vector",
    "steer",
    "SteeringTopK",
    "steering_topk",
    "SteeredGeneration",
    "steered_generation",
]
