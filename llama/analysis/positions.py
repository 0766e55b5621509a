"""positions: the learned position-embedding matrix and its similarity structure.

GPT-2 learns one vector per position (pos_embeddings, Hugging Face's wpe) and adds it to the
token's vector before the first block, where Llama rotates q and k by fixed angles inside
every attention layer (RoPE: the rope view). `position_embeddings(model)` returns the matrix
(P, D), each position's norm, the cosine similarity of every pair of positions, and that
similarity averaged by distance. Trained GPT-2 position vectors lie on a smooth curve:
neighbours are alike and similarity falls with distance, a bright band along the diagonal
of the cosine matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..family import LEARNED, family_of
from .common import AnalysisError


@dataclass
class PositionEmbeddings:
    matrix: torch.Tensor  # (P, D) float32: row p is the vector added at position p
    norms: torch.Tensor  # (P,) length of each position's vector
    cosine: torch.Tensor  # (P, P) cosine similarity of positions i and j (1 on the diagonal)
    by_offset: torch.Tensor  # (P,) mean cosine of positions i and i+k, for k = 0 .. P-1
    n_learned: int  # how many positions the model learned (P may show fewer)

    @property
    def n_positions(self) -> int:
        return self.matrix.shape[0]


def position_embeddings(model: torch.nn.Module, positions: int | None = None) -> PositionEmbeddings:
    """The learned position matrix of a model and its similarity structure.

    positions: look at the first `positions` positions only (default: all it learned).
    """
    family = family_of(model)
    table = getattr(model, "pos_embeddings", None)
    if family.positions != LEARNED or not isinstance(table, torch.nn.Embedding):
        raise AnalysisError(
            f"{family.title} has no learned position embeddings: it encodes positions by "
            "rotating q and k in every attention layer (RoPE); the 'rope' view shows the "
            "rotation speeds."
        )
    P = table.num_embeddings
    if positions is None:
        positions = P
    if isinstance(positions, bool) or not isinstance(positions, int) or not 1 <= positions <= P:
        raise AnalysisError(
            f"positions must be a whole number in 1..{P} (this model learned {P}), got {positions!r}"
        )
    with torch.no_grad():
        matrix = table.weight[:positions].detach().float().cpu()  # (P, D)
        norms = matrix.norm(dim=-1)  # (P,)
        unit = matrix / norms.clamp_min(1e-12)[:, None]  # (P, D), rows of length 1
        cosine = unit @ unit.T  # (P, D) @ (D, P) -> (P, P)
        # Average along each diagonal k of the upper triangle: similarity at distance k.
        by_offset = torch.stack([cosine.diagonal(k).mean() for k in range(positions)])  # (P,)
    return PositionEmbeddings(matrix, norms, cosine, by_offset, P)


__all__ = ["PositionEmbeddings", "position_embeddings"]
