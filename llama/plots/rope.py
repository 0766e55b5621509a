"""rope: how fast each pair of head dimensions rotates, with and without Llama 3 scaling.

RoPE reads a head vector as Hd/2 complex numbers and turns pair j by position * inv_freq[j].
Fast pairs (small j) tell neighbouring positions apart; slow pairs (large j) change little
over thousands of tokens. Llama 3.1+ slows the slow pairs down further by a factor, so they
do not wrap around within the longer context; the fast pairs keep their speed.

`rope_table(args)` returns the numbers (using llama.model.rope_inv_freq, the model's own
function); `plot_rope(table)` draws wavelengths per pair and the cos/sin tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import ModelArgs
from ..model import rope_inv_freq
from ._common import Figure, new_figure

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


def rope_table(args: ModelArgs, positions: int = 256) -> RopeTable:
    """RoPE frequencies of a configuration and cos/sin for positions 0..positions-1."""
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
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


def plot_rope(t: RopeTable, name: str = "model") -> Figure:
    fig = new_figure(14, 8.5)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1])
    ax_w = fig.add_subplot(grid[0, :])
    ax_c = fig.add_subplot(grid[1, 0])
    ax_s = fig.add_subplot(grid[1, 1])

    pairs = np.arange(len(t.inv_freq))
    sc = t.scaling
    own = "the model's" if t.scaling_is_models_own else "illustrative, Llama 3.1's constants;"
    ax_w.semilogy(pairs, t.wavelength, "o-", ms=3, label="no scaling"
                  + ("" if t.scaling_is_models_own else " (this model)"))
    ax_w.semilogy(pairs, t.wavelength_scaled, "s-", ms=3,
                  label=f"Llama 3 scaling ({own} factor {sc['factor']:g})"
                  + (" (this model)" if t.scaling_is_models_own else ""))
    old = sc["original_max_seq_len"]
    ax_w.axhline(old, color="k", ls=":", lw=1)
    ax_w.text(0, old * 1.25, f"original context {old:,}", fontsize=9)
    ax_w.axhline(old / sc["high_freq_factor"], color="gray", ls="--", lw=0.8)
    ax_w.axhline(old / sc["low_freq_factor"], color="gray", ls="--", lw=0.8)
    ax_w.text(len(pairs) - 1, old / sc["high_freq_factor"] / 1.6,
              "shorter than this: unchanged", ha="right", fontsize=8, color="gray")
    ax_w.text(len(pairs) - 1, old / sc["low_freq_factor"] * 1.25,
              f"longer than this: slowed down {sc['factor']:g}×; in between: blended",
              ha="right", fontsize=8, color="gray")
    ax_w.set_xlabel("pair j (dimensions 2j, 2j+1 of every head)")
    ax_w.set_ylabel("wavelength (tokens per full turn)")
    ax_w.set_title(f"{name}: RoPE wavelength 2π·θ^(2j/Hd) per pair, θ = {t.theta:,g}, "
                   f"head size {t.head_dim}")
    ax_w.grid(alpha=0.3, which="both")
    ax_w.legend(fontsize=9, loc="upper left")

    for ax, data, label in ((ax_c, t.cos, "cos"), (ax_s, t.sin, "sin")):
        im = ax.imshow(data.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1,
                       interpolation="nearest", origin="lower")
        ax.set_xlabel("position")
        ax.set_ylabel("pair j")
        ax.set_title(f"{label}(position · inv_freq[j]), positions 0..{len(t.positions) - 1}")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    return fig


__all__ = ["RopeTable", "rope_table", "plot_rope", "ILLUSTRATIVE_SCALING"]
