"""activations: how big the numbers inside get, per token and per layer.

- residual norms: the L2 norm of the residual stream of every token at every stage
  (embeddings, after block 0, ...). It usually grows with depth, and a few tokens (often
  the first) grow far more than the rest ("massive activations").
- MLP activation magnitudes: the mean and the largest |value| over the F hidden units of
  each block's feed-forward, per token (layers.i.feed_forward.act: silu(gate) * up in a
  Llama, gelu(up) in GPT-2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capture import Cache, get, n_layers_in, stage_names
from .common import AnalysisError


@dataclass
class ActivationStats:
    resid_norm: np.ndarray  # (L + 1, T): stage 0 = embeddings, stage i + 1 = after block i
    mlp_mean_abs: np.ndarray  # (L, T)
    mlp_max_abs: np.ndarray  # (L, T)


def activation_stats(cache: Cache) -> ActivationStats:
    L = n_layers_in(cache)
    if L == 0:
        raise AnalysisError("activations needs layers.N.resid_post and layers.N.feed_forward.act")
    resid = np.stack([get(cache, n, "activations").norm(dim=-1).numpy() for n in stage_names(L)])
    acts = [get(cache, f"layers.{i}.feed_forward.act", "activations").abs() for i in range(L)]
    return ActivationStats(
        resid,
        np.stack([a.mean(-1).numpy() for a in acts]),
        np.stack([a.amax(-1).numpy() for a in acts]),
    )


__all__ = ["ActivationStats", "activation_stats"]
