"""embeddings: the prompt's token vectors projected to 2-D or 3-D.

Each distinct token of the prompt is looked up in the token-embedding matrix (the
tok_embeddings hook holds exactly those rows), and the vectors are projected on their top
principal components (pca.pca). Unlike the pca view's stage 0, which is the residual stream
entering the first block (in GPT-2 that already includes the position vector), this shows
the token vectors alone: a token's embedding does not depend on where it stands, so a
repeated token is one point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .capture import Cache, get
from .common import AnalysisError
from .pca import PCA, pca


@dataclass
class TokenEmbeddings:
    ids: list[int]  # the distinct token ids shown, in order of first appearance
    positions: list[int]  # where each first appears in the prompt
    fit: PCA  # coords (N, dims), explained variance, axes
    dims: int
    norms: np.ndarray  # (N,) length of each token's vector


def token_embeddings(cache: Cache, ids: Sequence[int], dims: int = 3) -> TokenEmbeddings:
    """PCA of the distinct tokens' embedding vectors, read from cache["tok_embeddings"]."""
    if dims not in (2, 3):
        raise AnalysisError(f"dims must be 2 or 3, got {dims}")
    vectors = get(cache, "tok_embeddings", "embeddings").double()  # (T, D)
    if len(ids) != vectors.shape[0]:
        raise AnalysisError(f"embeddings: {len(ids)} token ids for {vectors.shape[0]} captured vectors")
    first: dict[int, int] = {}
    for pos, i in enumerate(int(i) for i in ids):
        first.setdefault(i, pos)
    if len(first) < 2:
        raise AnalysisError("embeddings needs at least 2 different tokens in the prompt")
    positions = list(first.values())
    picked = vectors[positions]  # (N, D)
    return TokenEmbeddings(list(first), positions, pca(picked, dims), dims,
                           picked.norm(dim=-1).numpy())


__all__ = ["TokenEmbeddings", "token_embeddings"]
