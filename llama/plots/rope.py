"""rope: RoPE wavelengths per pair of head dimensions and the cos/sin tables (the numbers:
llama.analysis.rope_table)."""

from __future__ import annotations

import numpy as np

from ..analysis import RopeTable
from ._common import Figure, new_figure


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


__all__ = ["plot_rope"]
