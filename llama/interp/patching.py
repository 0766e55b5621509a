"""Activation patching: copy a clean run's value into a corrupted run, one place at a time.

Run a clean prompt ("The Eiffel Tower is in the city of") and a corrupted one that differs
in a word ("The Colosseum is in the city of"), with the same number of tokens. For each
location (a layer and a position, or a layer and a head), run the corrupted prompt again
with that one value replaced by the clean run's, and score the run with a metric: a
location whose clean value brings the clean answer back is where the information lives.

    from llama.interp import patch_sweep, logit_diff_metric
    metric = logit_diff_metric(model, clean, corrupt, " Paris", " Rome", tokenizer=tok)
    scores = patch_sweep(model, clean, corrupt, metric, site="resid_post")   # (n_layers, T)

Sites (what is patched; hook points of llama/model.py and llama/gpt2.py):

    resid_pre    the residual stream entering block L, at one position   (n_layers, T)
    resid_mid    the residual after block L's attention was added         (n_layers, T)
    resid_post   the residual after block L                               (n_layers, T)
    attn_out     block L's attention output (after wo), at one position   (n_layers, T)
    mlp_out      block L's MLP output, at one position                    (n_layers, T)
    heads        one query head's output (before wo), all positions or one (n_layers, H)
    kv_heads     one key/value head's keys and values                     (n_layers, KV)

Grouped-query attention: a kv head is read by n_heads / n_kv_heads query heads, so patching
it changes all of them at once; `PatchResult.query_heads` names them. `patching` returns
the scores with their labels (a PatchResult); `patch_sweep` returns the bare tensor.

Cost: the patched runs are stacked into batches (see llama/interp/runner.py), so a 30 x 12
residual sweep is a dozen forwards, not 360 (scripts/bench_patching.py measures both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..checks import check_index
from ..hooks import run_with_cache
from .common import (
    Dims,
    InterpError,
    Prompt,
    check_head,
    check_kv_head,
    check_layer,
    check_metric,
    check_position,
    dims,
    metric_value,
    query_heads_of,
    same_length_prompts,
    token_labels,
)
from .runner import Cell, CellEdit, edited_logits, run_cells

SITES = {
    "resid_pre": "residual stream entering the block (the embeddings for layer 0)",
    "resid_mid": "residual stream after the block's attention was added",
    "resid_post": "residual stream after the block",
    "attn_out": "attention output of the block (after wo)",
    "mlp_out": "MLP (feed-forward) output of the block",
    "heads": "one query head's output, before wo mixes the heads",
    "kv_heads": "one key/value head (its keys and values), shared by a group of query heads",
}
POSITION_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
KV_PARTS = ("kv", "k", "v")


def check_site(site: object) -> str:
    if site not in SITES:
        valid = ", ".join(SITES)
        raise InterpError(f"there is no patching site {site!r}; the sites are: {valid}")
    return str(site)


def site_hooks(site: str, layer: int, kv_part: str = "kv") -> list[str]:
    """The hook point(s) that patching `site` at `layer` edits."""
    site = check_site(site)
    p = f"layers.{layer}"
    if site == "resid_pre":
        # The residual entering block 0 is the embedding output; entering block L > 0 it is
        # what block L-1 returned. (GPT-2 adds position embeddings to the token embeddings:
        # both prompts have the same length, so they share those, and patching the token
        # embedding patches the sum.)
        return ["tok_embeddings" if layer == 0 else f"layers.{layer - 1}.resid_post"]
    if site == "kv_heads":
        if kv_part not in KV_PARTS:
            raise InterpError(f"kv_part must be one of {', '.join(KV_PARTS)}, got {kv_part!r}")
        # k before RoPE: the clean and corrupted runs rotate by the same positions, so this
        # equals patching the rotated keys, and it is the name every model family has.
        return [f"{p}.attention.{part}" for part in ("k", "v") if part in kv_part]
    return [
        {
            "resid_mid": f"{p}.resid_mid",
            "resid_post": f"{p}.resid_post",
            "attn_out": f"{p}.attention.out",
            "mlp_out": f"{p}.feed_forward.out",
            "heads": f"{p}.attention.heads",
        }[site]
    ]


@dataclass
class PatchResult:
    """A patching sweep: scores[layer, column] is the metric with that one place patched.

    columns are token positions (sites in POSITION_SITES), query heads ("heads") or
    key/value heads ("kv_heads"); column_labels name them. For "kv_heads", query_heads[g]
    lists the query heads that read kv head g (all of them change when it is patched).
    clean_score / corrupt_score: the metric on the unpatched clean and corrupted runs (1
    and 0 for the normalised logit difference).
    """

    site: str
    scores: torch.Tensor  # (n_layers, T) or (n_layers, H) or (n_layers, KV), float32, CPU
    column_kind: str  # "position", "head" or "kv_head"
    row_labels: list[str]
    column_labels: list[str]
    position: int | None  # heads / kv_heads: the one position patched (None: all)
    hooks: list[list[str]]  # the hook points edited, for each layer
    clean_ids: list[int]
    corrupt_ids: list[int]
    clean_score: float
    corrupt_score: float
    query_heads: list[list[int]] | None = None
    kv_part: str = "kv"
    metric_name: str = ""
    clean_labels: list[str] = field(default_factory=list)
    corrupt_labels: list[str] = field(default_factory=list)

    def cell(self, layer: int, column: int) -> float:
        layer = check_index_rows(layer, self.scores.shape[0])
        column = check_index_columns(column, self.scores.shape[1], self.column_kind)
        return float(self.scores[layer, column])

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        """The k cells with the highest scores: (layer, column, score), best first."""
        flat = self.scores.flatten()
        order = torch.argsort(flat, descending=True, stable=True)[: max(0, int(k))]
        n_cols = self.scores.shape[1]
        return [(int(i) // n_cols, int(i) % n_cols, float(flat[i])) for i in order]

    def describe(self) -> str:
        what = SITES[self.site]
        where = "" if self.position is None else f" at position {self.position}"
        return f"patching {self.site} ({what}){where}"


_COLUMNS_OF = {"position": None, "head": "query heads", "kv_head": "key/value heads"}


def check_index_rows(layer: int, n: int) -> int:
    return check_index(layer, n, "layer", "layers", error=InterpError)


def check_index_columns(column: int, n: int, kind: str) -> int:
    return check_index(column, n, kind.replace("_", " "), _COLUMNS_OF[kind], error=InterpError)


def _cells(site: str, d: Dims, T: int, position: int | None, sources, kv_part: str) -> list[Cell]:
    """One cell per (layer, column), row-major, each copying the clean value there."""
    cells: list[Cell] = []
    n_cols = T if site in POSITION_SITES else (d.n_heads if site == "heads" else d.n_kv_heads)
    for layer in range(d.n_layers):
        hooks = site_hooks(site, layer, kv_part)
        for col in range(n_cols):
            if site in POSITION_SITES:
                index: tuple = (col,)  # (T, D): one position
            elif position is None:
                index = (slice(None), col)  # (T, H, Hd): one head, every position
            else:
                index = (position, col)  # one head at one position
            cells.append(tuple(CellEdit(h, index, sources[h]) for h in hooks))
    return cells


def _clean_sources(model, clean: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, dict]:
    """The clean run's logits and its values at `names`, one run each (batch axis dropped),
    in the model's own dtype and device, so a patch copies them exactly."""
    logits, cache = run_with_cache(model, clean, names, to_cpu=False, dtype=None)
    return logits, {n: cache[n][0] for n in names}


def _check_options(site: str, position: Any, kv_part: str, T: int) -> int | None:
    if kv_part not in KV_PARTS:
        raise InterpError(f"kv_part must be one of {', '.join(KV_PARTS)} (keys and values, keys, values), got {kv_part!r}")
    if kv_part != "kv" and site != "kv_heads":
        raise InterpError(f"kv_part= applies to site='kv_heads' only, not {site!r}")
    if position is None:
        return None
    if site in POSITION_SITES:
        raise InterpError(
            f"position= applies to the per-head sites (heads, kv_heads); site {site!r} already "
            "sweeps every position"
        )
    return check_position(position, T)


def patching(
    model: torch.nn.Module,
    clean_ids: Prompt,
    corrupt_ids: Prompt,
    metric: Callable[[torch.Tensor], Any],
    site: str = "resid_post",
    position: int | None = None,
    kv_part: str = "kv",
    batch_size: int | None = None,
    tokenizer: Any = None,
) -> PatchResult:
    """Patch the clean run's value into the corrupted run at each place of `site`.

    clean_ids, corrupt_ids: token-id lists or (1, T) tensors with the same T (text works
        with `tokenizer`).
    metric: logits (1, T, V) float32 of one patched run -> float (logit_diff_metric gives
        the usual normalised logit difference).
    site: one of SITES. position: for "heads" and "kv_heads", patch only this token
        position (default: all positions). kv_part: for "kv_heads", "kv" (both), "k" or "v".
    batch_size: patched runs per forward (None: as many as fit in about 256 MB; 1: one
        forward per cell, for comparison).
    Resets the model's KV cache.
    """
    site = check_site(site)
    check_metric(metric)
    d = dims(model)
    clean, corrupt = same_length_prompts(model, clean_ids, corrupt_ids, tokenizer)
    T = clean.shape[1]
    position = _check_options(site, position, kv_part, T)
    hooks = [site_hooks(site, layer, kv_part) for layer in range(d.n_layers)]
    names = [h for layer_hooks in hooks for h in layer_hooks]
    try:
        clean_logits, sources = _clean_sources(model, clean, names)
        clean_score = metric_value(metric, clean_logits)
        cells = _cells(site, d, T, position, sources, kv_part)
        # The last run is the corrupted prompt unpatched (a cell without edits).
        values = run_cells(model, corrupt, cells + [()], metric, batch_size)
    finally:
        model.reset_cache()
    corrupt_score = values.pop()
    scores = torch.tensor(values, dtype=torch.float32).reshape(d.n_layers, -1)
    if site in POSITION_SITES:
        kind, columns = "position", [f"{i}" for i in range(T)]
    elif site == "heads":
        kind, columns = "head", [f"H{h}" for h in range(d.n_heads)]
    else:
        kind, columns = "kv_head", [f"KV{g}" for g in range(d.n_kv_heads)]
    return PatchResult(
        site=site,
        scores=scores,
        column_kind=kind,
        row_labels=[f"L{i}" for i in range(d.n_layers)],
        column_labels=columns,
        position=position,
        hooks=hooks,
        clean_ids=clean[0].tolist(),
        corrupt_ids=corrupt[0].tolist(),
        clean_score=clean_score,
        corrupt_score=corrupt_score,
        query_heads=[query_heads_of(g, d) for g in range(d.n_kv_heads)] if site == "kv_heads" else None,
        kv_part=kv_part,
        metric_name=metric.describe() if hasattr(metric, "describe") else getattr(metric, "__name__", ""),
        clean_labels=token_labels(clean[0].tolist(), tokenizer),
        corrupt_labels=token_labels(corrupt[0].tolist(), tokenizer),
    )


def patch_sweep(
    model: torch.nn.Module,
    clean_ids: Prompt,
    corrupt_ids: Prompt,
    metric: Callable[[torch.Tensor], Any],
    site: str = "resid_post",
    **options: Any,
) -> torch.Tensor:
    """The scores of `patching` as a bare tensor: (n_layers, T) for the residual, attention
    and MLP sites, (n_layers, H) for "heads", (n_layers, KV) for "kv_heads".

        scores = patch_sweep(model, clean_ids, corrupt_ids, metric, site="resid_post")

    Options as for `patching` (position, kv_part, batch_size, tokenizer).
    """
    return patching(model, clean_ids, corrupt_ids, metric, site=site, **options).scores


def patched_logits(
    model: torch.nn.Module,
    clean_ids: Prompt,
    corrupt_ids: Prompt,
    site: str,
    layer: int,
    position: int | None = None,
    head: int | None = None,
    kv_part: str = "kv",
    tokenizer: Any = None,
) -> torch.Tensor:
    """The corrupted run's logits (1, T, V) with one place patched from the clean run.

    Position sites: position=None patches every position of that layer, an int one
    position. "heads" / "kv_heads": `head` (a query head or a kv head) is required;
    position=None patches it at every position. Resets the model's KV cache.
    """
    site = check_site(site)
    d = dims(model)
    clean, corrupt = same_length_prompts(model, clean_ids, corrupt_ids, tokenizer)
    T = clean.shape[1]
    layer = check_layer(layer, d)
    _check_options(site, None, kv_part, T)
    pos = None if position is None else check_position(position, T)
    if site in POSITION_SITES:
        if head is not None:
            raise InterpError(f"head= applies to the per-head sites (heads, kv_heads), not {site!r}")
        index: tuple = (slice(None),) if pos is None else (pos,)
    else:
        if head is None:
            raise InterpError(f"site {site!r} patches one head: give head=")
        h = check_head(head, d) if site == "heads" else check_kv_head(head, d)
        index = (slice(None), h) if pos is None else (pos, h)
    names = site_hooks(site, layer, kv_part)
    try:
        _, sources = _clean_sources(model, clean, names)
        cell = tuple(CellEdit(n, index, sources[n]) for n in names)
        return edited_logits(model, corrupt, [cell])
    finally:
        model.reset_cache()


__all__ = [
    "SITES",
    "POSITION_SITES",
    "KV_PARTS",
    "check_site",
    "site_hooks",
    "PatchResult",
    "patching",
    "patch_sweep",
    "patched_logits",
]
