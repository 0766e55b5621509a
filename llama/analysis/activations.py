"""activations: how big the numbers inside get, per token and per layer.

- residual norms: the L2 norm of the residual stream of every token at every stage
  (what enters block 0, after block 0, ...). It usually grows with depth, and a few tokens (often
  the first) grow far more than the rest ("massive activations").
- MLP activation magnitudes: the mean and the largest |value| over the F hidden units of
  each block's feed-forward, per token (layers.i.feed_forward.act: silu(gate) * up in a
  Llama, gelu(up) in GPT-2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capture import DEFAULT_RESIDUAL_INPUT, Cache, check_residual_input, get, n_layers_in, stage_names
from .common import AnalysisError


@dataclass
class ActivationStats:
    resid_norm: np.ndarray  # (L + 1, T): stage 0 = embeddings, stage i + 1 = after block i
    mlp_mean_abs: np.ndarray  # (L, T)
    mlp_max_abs: np.ndarray  # (L, T)
    input_label: str = "embeddings"  # what stage 0 is (llama.family: residual_input_label)


def activation_stats(cache: Cache, residual_input: str = DEFAULT_RESIDUAL_INPUT,
                     input_label: str = "embeddings") -> ActivationStats:
    """residual_input: the hook of stage 0 (llama.family.residual_input(model))."""
    L = n_layers_in(cache)
    if L == 0:
        raise AnalysisError("activations needs layers.N.resid_post and layers.N.feed_forward.act")
    check_residual_input(cache, residual_input, "activations")
    resid = np.stack([get(cache, n, "activations").norm(dim=-1).numpy()
                      for n in stage_names(L, residual_input)])
    acts = [get(cache, f"layers.{i}.feed_forward.act", "activations").abs() for i in range(L)]
    return ActivationStats(
        resid,
        np.stack([a.mean(-1).numpy() for a in acts]),
        np.stack([a.amax(-1).numpy() for a in acts]),
        input_label,
    )


__all__ = ["ActivationStats", "activation_stats"]
