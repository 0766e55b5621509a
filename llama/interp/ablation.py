"""Head ablation: knock out one attention head and see what the model loses.

Zero ablation sets a head's output (layers.L.attention.heads[:, :, h], before wo) to 0 at
every position. Mean ablation sets it to its average output instead, so the head stops
carrying anything specific to this prompt while the rest of the network still receives a
typical input from it; the average is over every position of `reference_ids` (a prompt or
a batch of prompts; by default the prompt itself).

    sweep = head_ablation_sweep(model, ids, logprob_metric(model, " Paris", tokenizer=tok))
    sweep.scores        # (n_layers, H): the metric with each head ablated on its own
    sweep.baseline      # the metric without ablation
    logits = ablated_logits(model, ids, [(3, 5), (4, 0)], mode="mean")   # several at once
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from ..hooks import run_with_cache
from .common import (
    HeadMap,
    InterpError,
    Prompt,
    as_prompt,
    check_head,
    check_layer,
    check_metric,
    dims,
    token_labels,
)
from .runner import CellEdit, edited_logits, run_cells

MODES = ("zero", "mean")


def _heads_hook(layer: int) -> str:
    return f"layers.{layer}.attention.heads"


def _mean_sources(model, T: int, reference: torch.Tensor, layers: Iterable[int]) -> dict[str, torch.Tensor]:
    """Each layer's average head output over every position of the reference run(s),
    repeated over T positions: {hook: (T, H, Hd)}."""
    names = [_heads_hook(i) for i in sorted(set(layers))]
    try:
        _, cache = run_with_cache(model, reference, names, to_cpu=False, dtype=None)
    finally:
        model.reset_cache()
    out = {}
    for n in names:
        mean = cache[n].float().mean(dim=(0, 1))  # (B, T', H, Hd) -> (H, Hd)
        out[n] = mean.to(cache[n].dtype)[None].expand(T, -1, -1)  # (T, H, Hd)
    return out


def _sources(model, mode: str, ids: torch.Tensor, reference_ids: Prompt | None, layers, tokenizer):
    if mode not in MODES:
        raise InterpError(f"mode must be 'zero' or 'mean' (ablation by zeros or by the average), got {mode!r}")
    if mode == "zero":
        if reference_ids is not None:
            raise InterpError("reference_ids= is for mode='mean' (zero ablation needs no reference)")
        return {}
    ref = ids if reference_ids is None else as_prompt(
        model, reference_ids, "reference prompt", tokenizer, allow_batch=True
    )
    return _mean_sources(model, ids.shape[1], ref, layers)


def head_ablation_sweep(
    model: torch.nn.Module,
    ids: Prompt,
    metric: Callable[[torch.Tensor], Any],
    mode: str = "zero",
    reference_ids: Prompt | None = None,
    batch_size: int | None = None,
    tokenizer: Any = None,
) -> HeadMap:
    """The metric with each head ablated on its own: a (n_layers, H) HeadMap.

    metric: logits (1, T, V) float32 of one run -> float (logprob_metric, or a
    LogitDiffMetric for a clean/corrupted pair). mode: "zero" or "mean" (the head's
    average output over reference_ids, default the prompt). The runs are batched like the
    patching sweeps. baseline: the metric of the unablated run. Resets the KV cache.
    """
    check_metric(metric)
    d = dims(model)
    tokens = as_prompt(model, ids, "prompt", tokenizer)
    sources = _sources(model, mode, tokens, reference_ids, range(d.n_layers), tokenizer)
    cells = [
        (CellEdit(_heads_hook(i), (slice(None), h), sources.get(_heads_hook(i))),)
        for i in range(d.n_layers)
        for h in range(d.n_heads)
    ]
    values = run_cells(model, tokens, cells + [()], metric, batch_size)  # last: unablated
    baseline = values.pop()
    name = getattr(metric, "describe", lambda: "the metric")()
    return HeadMap(
        kind=f"{mode} ablation",
        scores=torch.tensor(values, dtype=torch.float32).reshape(d.n_layers, d.n_heads),
        description=f"{name} with each head {mode}-ablated (unablated: {baseline:.4g})",
        ids=tokens[0].tolist(),
        labels=token_labels(tokens[0].tolist(), tokenizer),
        baseline=baseline,
    )


def ablated_logits(
    model: torch.nn.Module,
    ids: Prompt,
    heads: Sequence[tuple[int, int]],
    mode: str = "zero",
    reference_ids: Prompt | None = None,
    tokenizer: Any = None,
) -> torch.Tensor:
    """Logits (1, T, V) with the given (layer, head) pairs ablated together.

    Layers and heads may be negative (Python-style); out of range is an error.
    """
    d = dims(model)
    tokens = as_prompt(model, ids, "prompt", tokenizer)
    pairs = list(heads)
    if not pairs:
        raise InterpError("give at least one (layer, head) pair to ablate")
    chosen = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise InterpError(f"heads must be (layer, head) pairs, got {pair!r}")
        chosen.append((check_layer(pair[0], d), check_head(pair[1], d)))
    sources = _sources(model, mode, tokens, reference_ids, [layer for layer, _ in chosen], tokenizer)
    cell = tuple(
        CellEdit(_heads_hook(layer), (slice(None), h), sources.get(_heads_hook(layer)))
        for layer, h in chosen
    )
    try:
        return edited_logits(model, tokens, [cell])
    finally:
        model.reset_cache()


__all__ = ["MODES", "head_ablation_sweep", "ablated_logits"]
