"""topk: the k most likely next tokens after a position (one row of a model's logits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..generate import top_candidates
from .common import AnalysisError, check_index


@dataclass
class TopK:
    position: int
    ids: np.ndarray  # (k,)
    probs: np.ndarray  # (k,)
    logits: np.ndarray  # (k,)


def top_k(logits: torch.Tensor, k: int = 10, position: int = -1) -> TopK:
    """Top-k of softmax(logits[position]); logits (T, V) or (1, T, V)."""
    if logits.dim() == 3:
        logits = logits[0]
    if logits.dim() != 2:
        raise AnalysisError(f"logits must be (T, V) or (1, T, V), got {tuple(logits.shape)}")
    T, V = logits.shape
    pos = check_index(position, T, "position")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= V:
        raise AnalysisError(f"k must be between 1 and the vocabulary size {V}, got {k!r}")
    rows = top_candidates(logits[pos], k)  # the project's one ranking (llama.generate)
    return TopK(
        pos,
        np.array([c.id for c in rows], dtype=np.int64),
        np.array([c.prob for c in rows], dtype=np.float32),
        np.array([c.logit for c in rows], dtype=np.float32),
    )


__all__ = ["TopK", "top_k"]
