"""Many edited runs of one prompt, several per forward pass.

Patching, ablation and the sweeps all do the same thing: run one prompt many times, each
time with a different small edit (copy a clean value into one position, zero one head),
and score each run. One forward per edit would pay for every weight read once per cell;
stacking the runs into a batch pays for it once per batch. Row b of the batch is the
prompt again with only cell b's edits, so the rows are independent runs (attention never
mixes batch rows) and each row's logits are what that run alone would give, up to
float32 rounding of the batched matrix products.

A cell is a tuple of `CellEdit`s (usually one; patching a kv head edits k and v):

    CellEdit("layers.3.resid_post", (5,), clean_resid)        # value[row, 5] = clean[5]
    CellEdit("layers.3.attention.heads", (slice(None), 2))    # value[row, :, 2] = 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..hooks import intervene
from .common import dims, metric_value

# How much memory one batch of edited runs may use (logits, KV cache, activations).
DEFAULT_BATCH_BYTES = 256 * 2**20
MAX_BATCH = 64


@dataclass(frozen=True)
class CellEdit:
    """Set value[row][index] to source[index] (or to 0 when source is None) at one hook.

    index addresses one run's value, without the batch axis: (position,) on a (B, T, D)
    point, (slice(None), head) or (position, head) on a (B, T, H, Hd) point.
    source: one run's value at that hook (the batch axis dropped), e.g. the clean run's.
    """

    hook: str
    index: tuple
    source: torch.Tensor | None = None


Cell = Sequence[CellEdit]


def auto_batch_size(model: torch.nn.Module, n_tokens: int, budget_bytes: int = DEFAULT_BATCH_BYTES) -> int:
    """How many runs of n_tokens to stack in one forward so a batch stays near budget_bytes.

    Per run: the float32 logits (T x V), the KV cache (each layer keeps k and v for at
    least 256 positions, see llama.model.KVCache) and a few activations of width D or F.
    """
    d = dims(model)
    elem = model.tok_embeddings.weight.element_size()
    hidden = int(getattr(model.args, "hidden_dim", 4 * d.dim))
    logits = n_tokens * d.vocab_size * 4
    kv_cache = 2 * d.n_layers * d.n_kv_heads * d.head_dim * max(n_tokens, 256) * elem
    activations = 8 * n_tokens * max(d.dim, hidden) * 4
    per_run = logits + kv_cache + activations
    return max(1, min(MAX_BATCH, budget_bytes // per_run))


def _editor(todo: list[tuple[int, CellEdit]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The intervention for one hook point: apply each row's edit to a copy of the value."""

    def edit(value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        for row, e in todo:
            if e.source is None:
                out[(row, *e.index)] = 0
            else:
                out[(row, *e.index)] = e.source[e.index]
        return out

    return edit


def edited_logits(model: torch.nn.Module, ids: torch.Tensor, cells: Sequence[Cell]) -> torch.Tensor:
    """One forward over len(cells) copies of ids (1, T), row b edited by cells[b]: (B, T, V).

    A cell with no edits is the unedited run. The KV cache is left holding this batch
    (callers reset it).
    """
    by_hook: dict[str, list[tuple[int, CellEdit]]] = {}
    for row, cell in enumerate(cells):
        for e in cell:
            by_hook.setdefault(e.hook, []).append((row, e))
    batch = ids.expand(len(cells), -1)  # (1, T) -> (B, T): the same prompt in every row
    with torch.no_grad():
        if not by_hook:
            return model(batch)
        with intervene(model, {hook: _editor(todo) for hook, todo in by_hook.items()}):
            return model(batch)


def run_cells(
    model: torch.nn.Module,
    ids: torch.Tensor,
    cells: Sequence[Cell],
    metric: Callable[[torch.Tensor], Any],
    batch_size: int | None = None,
) -> list[float]:
    """metric(logits) of each edited run, in the order of `cells`.

    The runs go batch_size at a time (None: as many as fit DEFAULT_BATCH_BYTES); the metric
    still sees one run at a time, as a (1, T, V) float32 tensor. The model's KV cache is
    reset afterwards (it would hold the last batch of edited runs, not a prompt).
    """
    if batch_size is None:
        batch_size = auto_batch_size(model, ids.shape[1])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (or None), got {batch_size!r}")
    scores: list[float] = []
    try:
        for start in range(0, len(cells), batch_size):
            chunk = cells[start : start + batch_size]
            logits = edited_logits(model, ids, chunk)  # (B, T, V)
            for row in range(len(chunk)):
                scores.append(metric_value(metric, logits[row : row + 1]))  # (1, T, V)
    finally:
        model.reset_cache()
    return scores


__all__ = ["CellEdit", "Cell", "auto_batch_size", "edited_logits", "run_cells", "DEFAULT_BATCH_BYTES"]
