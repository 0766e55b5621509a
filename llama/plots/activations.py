"""activations: how big the numbers inside get, per token and per layer.

- residual norms: the L2 norm of the residual stream of every token at every stage
  (embeddings, after block 0, ...). It usually grows with depth, and a few tokens (often
  the first) grow far more than the rest ("massive activations").
- MLP activation magnitudes: the mean and the largest |silu(gate) * up| over the F
  hidden units of each block's feed-forward, per token (layers.i.feed_forward.act).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import LogNorm

from ._capture import Cache, get, n_layers_in, stage_label, stage_names
from ._common import Figure, PlotError, Tokens, new_figure, token_fontsize


@dataclass
class ActivationStats:
    resid_norm: np.ndarray  # (L + 1, T): stage 0 = embeddings, stage i + 1 = after block i
    mlp_mean_abs: np.ndarray  # (L, T)
    mlp_max_abs: np.ndarray  # (L, T)


def activation_stats(cache: Cache) -> ActivationStats:
    L = n_layers_in(cache)
    if L == 0:
        raise PlotError("activations needs layers.N.resid_post and layers.N.feed_forward.act")
    resid = np.stack([get(cache, n, "activations").norm(dim=-1).numpy() for n in stage_names(L)])
    acts = [get(cache, f"layers.{i}.feed_forward.act", "activations").abs() for i in range(L)]
    return ActivationStats(
        resid,
        np.stack([a.mean(-1).numpy() for a in acts]),
        np.stack([a.amax(-1).numpy() for a in acts]),
    )


def plot_activations(a: ActivationStats, tokens: Tokens, name: str = "model") -> Figure:
    S, T = a.resid_norm.shape
    L = S - 1
    fig = new_figure(min(16, 3.5 + 3 * (1.2 + 0.3 * T)), min(10, 3 + 0.2 * S))
    axes = fig.subplots(1, 3)
    fs = token_fontsize(T)
    panels = [
        (a.resid_norm, [stage_label(s) for s in range(S)], "residual stream L2 norm (log colour)",
         "magma", True),
        (a.mlp_mean_abs, [f"L{i}" for i in range(L)], "MLP: mean |silu(gate)·up| (log colour)",
         "viridis", True),
        (a.mlp_max_abs, [f"L{i}" for i in range(L)], "MLP: largest |silu(gate)·up| (log colour)",
         "viridis", True),
    ]
    for ax, (data, ylabels, title, cmap, log) in zip(axes, panels):
        norm = LogNorm(vmin=max(data.min(), 1e-6), vmax=max(data.max(), 1e-5)) if log else None
        im = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
                       origin="lower")
        ax.set_xticks(range(T))
        ax.set_xticklabels(tokens.labels, rotation=90, fontsize=fs)
        step = max(1, len(ylabels) // 16)
        ax.set_yticks(range(0, len(ylabels), step))
        ax.set_yticklabels(ylabels[::step], fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    axes[0].set_ylabel("stage (embed = embeddings, Li = after layers.i)")
    axes[1].set_ylabel("layer")
    fig.suptitle(f"{name}: activation magnitudes per token and layer", fontsize=12)
    return fig


__all__ = ["ActivationStats", "activation_stats", "plot_activations"]
