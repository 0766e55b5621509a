"""activations: residual-stream norms and MLP activation sizes per token and layer
(the numbers: llama.analysis.activation_stats)."""

from __future__ import annotations

from matplotlib.colors import LogNorm

from ..analysis import ActivationStats, Tokens, stage_label
from ._common import Figure, new_figure, tick_labels, token_fontsize


def plot_activations(a: ActivationStats, tokens: Tokens, name: str = "model") -> Figure:
    S, T = a.resid_norm.shape
    L = S - 1
    fig = new_figure(min(16, 3.5 + 3 * (1.2 + 0.3 * T)), min(10, 3 + 0.2 * S))
    axes = fig.subplots(1, 3)
    fs = token_fontsize(T)
    panels = [
        (a.resid_norm, [stage_label(s) for s in range(S)], "residual stream L2 norm (log colour)",
         "magma", True),
        (a.mlp_mean_abs, [f"L{i}" for i in range(L)], "MLP: mean |feed_forward.act| (log colour)",
         "viridis", True),
        (a.mlp_max_abs, [f"L{i}" for i in range(L)], "MLP: largest |feed_forward.act| (log colour)",
         "viridis", True),
    ]
    for ax, (data, ylabels, title, cmap, log) in zip(axes, panels):
        norm = LogNorm(vmin=max(data.min(), 1e-6), vmax=max(data.max(), 1e-5)) if log else None
        im = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
                       origin="lower")
        ax.set_xticks(range(T))
        ax.set_xticklabels(tick_labels(tokens), rotation=90, fontsize=fs)
        step = max(1, len(ylabels) // 16)
        ax.set_yticks(range(0, len(ylabels), step))
        ax.set_yticklabels(ylabels[::step], fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    axes[0].set_ylabel(f"stage (embed = {a.input_label}, Li = after layers.i)")
    axes[1].set_ylabel("layer")
    fig.suptitle(f"{name}: activation magnitudes per token and layer", fontsize=12)
    return fig


__all__ = ["plot_activations"]
