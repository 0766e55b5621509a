"""attention: who looks at whom.

The numbers are the `layers.L.attention.probs` intermediates (B, H, T, S): each row is a
softmax, so it sums to 1, and the causal mask makes everything right of the diagonal 0.
The first-token share is the probability each head puts on position 0, averaged over the
queries (many heads park their attention on the first token when they have nothing to do:
an "attention sink").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capture import Cache, get, n_layers_in
from .common import AnalysisError, check_index


@dataclass
class AttentionMaps:
    probs: dict[int, np.ndarray]  # layer -> (H, T, S)
    n_layers: int

    @property
    def n_heads(self) -> int:
        return next(iter(self.probs.values())).shape[0]


def attention_maps(cache: Cache, layers: list[int] | None = None,
                   n_layers: int | None = None) -> AttentionMaps:
    """Attention probabilities of the given layers (all captured layers by default).

    n_layers: the model's depth, when the capture holds only some layers (default: as
    many as the capture covers).
    """
    L = n_layers if n_layers is not None else n_layers_in(cache)
    if L == 0:
        raise AnalysisError("attention needs layers.N.attention.probs; the capture has no layers")
    layers = list(range(L)) if layers is None else [check_index(i, L, "layer") for i in layers]
    probs = {i: get(cache, f"layers.{i}.attention.probs", "attention").numpy() for i in layers}
    return AttentionMaps(probs, L)


def first_token_share(maps: AttentionMaps, skip_first_query: bool = True) -> np.ndarray:
    """(layers, heads): mean over query positions of the probability put on position 0.

    The first query can only look at itself (share 1 by construction), so it is left out
    unless the prompt is a single token.
    """
    rows = []
    for i in sorted(maps.probs):
        p = maps.probs[i]  # (H, T, S)
        start = 1 if skip_first_query and p.shape[1] > 1 else 0
        rows.append(p[:, start:, 0].mean(axis=1))  # (H,)
    return np.stack(rows)


def head_map(maps: AttentionMaps, layer: int, head: int) -> np.ndarray:
    """The (T, S) probabilities of one head, with the indices checked."""
    layer = check_index(layer, maps.n_layers, "layer")
    if layer not in maps.probs:
        raise AnalysisError(f"layer {layer} was not captured")
    head = check_index(head, maps.n_heads, "head")
    return maps.probs[layer][head]


__all__ = ["AttentionMaps", "attention_maps", "first_token_share", "head_map"]
