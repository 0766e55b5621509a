"""positions: the learned position vectors, their norms and how similar positions are (the
numbers: llama.analysis.position_embeddings)."""

from __future__ import annotations

import numpy as np

from ..analysis import PositionEmbeddings
from ._common import Figure, new_figure


def plot_positions(p: PositionEmbeddings, name: str = "model") -> Figure:
    P = p.n_positions
    fig = new_figure(14, 9.5)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.1, 1])
    ax_m = fig.add_subplot(grid[0, 0])
    ax_c = fig.add_subplot(grid[:, 1])
    ax_n = fig.add_subplot(grid[1, 0])

    # The matrix itself: one row per position, colours clipped at the percentiles so a few
    # large values do not wash out the rest.
    m = p.matrix.numpy()
    lo, hi = np.percentile(m, [1, 99])
    bound = max(abs(lo), abs(hi), 1e-12)
    im = ax_m.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound,
                     interpolation="nearest")
    ax_m.set_xlabel("dimension")
    ax_m.set_ylabel("position")
    ax_m.set_title(f"pos_embeddings.weight[:{P}]  ({P} × {m.shape[1]})", fontsize=10)
    fig.colorbar(im, ax=ax_m, fraction=0.04, pad=0.02, extend="both")

    im = ax_c.imshow(p.cosine.numpy(), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax_c.set_xlabel("position")
    ax_c.set_ylabel("position")
    ax_c.set_title("cosine similarity of every pair of positions", fontsize=10)
    fig.colorbar(im, ax=ax_c, fraction=0.046, pad=0.03)

    pos = np.arange(P)
    ax_n.plot(pos, p.norms.numpy(), color="#4c72b0", label="norm of the position's vector")
    ax_n.set_xlabel("position  /  distance between two positions")
    ax_n.set_ylabel("norm", color="#4c72b0")
    ax_n.grid(alpha=0.3)
    ax_s = ax_n.twinx()
    ax_s.plot(pos, p.by_offset.numpy(), color="#c44e52", label="mean cosine at distance k")
    ax_s.set_ylabel("mean cosine similarity at distance k", color="#c44e52")
    ax_s.set_ylim(-1.05, 1.05)
    ax_n.set_title("vector norms by position, and similarity by distance", fontsize=10)

    shown = f"the first {P} of {p.n_learned}" if P < p.n_learned else f"all {P}"
    fig.suptitle(f"{name}: learned position embeddings ({shown} positions), added to the "
                 "token vector before the first block", fontsize=12)
    return fig


__all__ = ["plot_positions"]
