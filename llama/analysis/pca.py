"""pca: token vectors projected to 2-D or 3-D, at chosen points of the residual stream.

Two views:
- grid: one PCA per stage (embeddings, after block i, ...): how the tokens of the prompt
  spread out at that depth.
- trajectory: one PCA fitted on all stages together, giving each token's path from the
  embeddings to the last stage. Residual norms grow a lot with depth, so for this view each
  vector is first divided by its root-mean-square (what the next RMSNorm does, before its
  weight): otherwise the last layers alone would decide the axes.

PCA here is the plain textbook kind: centre the (N, D) points, take the SVD, project on the
top right-singular vectors; explained_variance_ratio = s_k^2 / sum(s^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .capture import DEFAULT_RESIDUAL_INPUT, Cache, residual_stages
from .common import AnalysisError

PCA_VIEWS = ("grid", "trajectory")


@dataclass
class PCA:
    coords: np.ndarray  # (N, k) the points in the top-k principal axes
    explained_variance_ratio: np.ndarray  # (k,) share of the total variance per axis
    components: np.ndarray  # (k, D) the axes (unit vectors)
    mean: np.ndarray  # (D,)


def pca(x: torch.Tensor | np.ndarray, k: int = 2) -> PCA:
    """Top-k principal components of the rows of x (N, D)."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))  # small (tokens x width): float64 is cheap
    if x.dim() != 2:
        raise AnalysisError(f"pca needs a (points, features) matrix, got shape {tuple(x.shape)}")
    n, d = x.shape
    if n < 2:
        raise AnalysisError("pca needs at least 2 tokens (the prompt has fewer)")
    k = min(k, n, d)
    mean = x.mean(0)
    _u, s, vh = torch.linalg.svd(x - mean, full_matrices=False)  # centred = U S Vh
    total = float((s**2).sum())
    ratio = (s[:k] ** 2 / total).numpy() if total > 0 else np.zeros(k)
    coords = ((x - mean) @ vh[:k].T).numpy()  # (N, D) @ (D, k) -> (N, k)
    return PCA(coords, ratio, vh[:k].numpy(), mean.numpy())


@dataclass
class PCAResult:
    view: str  # "grid" or "trajectory"
    stages: list[int]  # 0 = embeddings, i + 1 = after block i
    positions: list[int]  # token positions included
    per_stage: list[PCA]  # grid: one PCA per stage; trajectory: one shared PCA ...
    coords: list[np.ndarray]  # ... and here each stage's (T, k) points either way
    dims: int
    input_label: str = "embeddings"  # what stage 0 is (llama.family: residual_input_label)


def pca_stages(
    cache: Cache,
    stages: Sequence[int],
    dims: int = 2,
    view: str = "grid",
    skip_first: bool = False,
    residual_input: str = DEFAULT_RESIDUAL_INPUT,
    input_label: str = "embeddings",
) -> PCAResult:
    """PCA of the residual vectors at `stages` (see capture.parse_stages).

    residual_input: the hook of stage 0 (llama.family.residual_input(model)); input_label
    names it in figures.
    """
    if dims not in (2, 3):
        raise AnalysisError(f"dims must be 2 or 3, got {dims}")
    if view not in PCA_VIEWS:
        raise AnalysisError(f"pca view must be 'grid' or 'trajectory', got {view!r}")
    vecs = residual_stages(cache, stages, "pca", residual_input)  # each (T, D)
    T = vecs[0].shape[0]
    positions = list(range(1 if skip_first else 0, T))
    if len(positions) < 2:
        raise AnalysisError(f"pca needs at least 2 tokens, the prompt has {len(positions)} to show")
    vecs = [v[positions].double() for v in vecs]
    if view == "grid":
        fits = [pca(v, dims) for v in vecs]
        return PCAResult(view, list(stages), positions, fits, [f.coords for f in fits], dims,
                         input_label)
    # Trajectory: RMS-normalise each vector, fit once on all of them, split back per stage.
    normed = [v / v.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12) for v in vecs]
    fit = pca(torch.cat(normed), dims)
    n = len(positions)
    coords = [fit.coords[i * n : (i + 1) * n] for i in range(len(stages))]
    return PCAResult(view, list(stages), positions, [fit], coords, dims, input_label)


__all__ = ["PCA", "pca", "PCAResult", "pca_stages", "PCA_VIEWS"]
