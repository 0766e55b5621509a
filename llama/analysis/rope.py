"""rope: how fast each pair of head dimensions rotates, with and without Llama 3 scaling.

RoPE reads a head vector as Hd/2 complex numbers and turns pair j by position * inv_freq[j].
Fast pairs (small j) tell neighbouring positions apart; slow pairs (large j) change little
over thousands of tokens. Llama 3.1+ slows the slow pairs down further by a factor, so they
do not wrap around within the longer context; the fast pairs keep their speed.

`rope_table(args)` returns the numbers (using llama.model.rope_inv_freq, the model's own
function); llama.plots.plot_rope draws wavelengths per pair and the cos/sin tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..family import ROPE, family_of
from ..model import rope_inv_freq
from .common import AnalysisError

# For a model without scaling, the "with scaling" curve uses Llama 3.1's constants, so the
# reader sees what scaling would do (and the figure says it is illustrative).
ILLUSTRATIVE_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_seq_len": 8192}


@dataclass
class RopeTable:
    head_dim: int
    theta: float
    inv_freq: np.ndarray  # (Hd/2,) radians per position, unscaled
    inv_freq_scaled: np.ndarray  # (Hd/2,) with Llama 3 scaling
    scaling: dict[str, float]
    scaling_is_models_own: bool  # False: illustrative constants, the model does not scale
    positions: np.ndarray  # (P,)
    cos: np.ndarray  # (P, Hd/2) cos(position * inv_freq) of the model's own frequencies
    sin: np.ndarray  # (P, Hd/2)

    @property
    def wavelength(self) -> np.ndarray:
        """Tokens per full turn of each pair: 2 pi / inv_freq."""
        return 2 * math.pi / self.inv_freq

    @property
    def wavelength_scaled(self) -> np.ndarray:
        return 2 * math.pi / self.inv_freq_scaled


def rope_table(args, positions: int = 256) -> RopeTable:
    """RoPE frequencies of a configuration and cos/sin for positions 0..positions-1."""
    if positions < 1:
        raise AnalysisError(f"positions must be >= 1, got {positions}")
    family = family_of(args)
    if family.positions != ROPE:
        raise AnalysisError(
            f"{family.title} has no rotary position embedding (RoPE) to show: it learns one "
            f"vector per position ({args.max_seq_len:,} of them, pos_embeddings) and adds it to "
            "the token embedding before the first block. The 'positions' view shows them and "
            "how similar they are (llama-plot positions)."
        )
    own = args.use_scaled_rope
    scaling = (
        {"factor": args.rope_scaling_factor, "low_freq_factor": args.rope_low_freq_factor,
         "high_freq_factor": args.rope_high_freq_factor,
         "original_max_seq_len": args.rope_original_max_seq_len}
        if own else dict(ILLUSTRATIVE_SCALING)
    )
    plain = rope_inv_freq(args.head_dim, args.rope_theta, None).numpy()
    scaled = rope_inv_freq(args.head_dim, args.rope_theta, scaling).numpy()
    model_freq = scaled if own else plain  # what the model actually uses
    pos = np.arange(positions)
    angles = np.outer(pos, model_freq)  # (P, Hd/2)
    return RopeTable(args.head_dim, args.rope_theta, plain, scaled, scaling, own, pos,
                     np.cos(angles), np.sin(angles))


__all__ = ["RopeTable", "rope_table", "ILLUSTRATIVE_SCALING"]
