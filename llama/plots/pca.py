"""pca: token vectors in their top principal components, one panel per stage (grid) or
each token's path through the layers (trajectory); the numbers: llama.analysis.pca_stages."""

from __future__ import annotations

import numpy as np

from ..analysis import PCAResult, Tokens, stage_label
from ._common import Figure, new_figure, tick_labels, token_fontsize


def plot_pca(r: PCAResult, tokens: Tokens, name: str = "model") -> Figure:
    labels = [tick_labels(tokens)[p] for p in r.positions]
    n = len(labels)
    colors = token_colors(n)
    proj = "3d" if r.dims == 3 else None
    fs = max(6.5, token_fontsize(n))
    if r.view == "grid":
        cols = min(3, len(r.stages))
        rows = -(-len(r.stages) // cols)
        fig = new_figure(5.2 * cols, 4.6 * rows)
        for idx, (stage, fit) in enumerate(zip(r.stages, r.per_stage)):
            ax = fig.add_subplot(rows, cols, idx + 1, projection=proj)
            scatter_tokens(ax, fit.coords, labels, colors, fs)
            ev = fit.explained_variance_ratio
            where = r.input_label if stage == 0 else f"after layers.{stage - 1}"
            ax.set_title(f"{where}  (PC1+PC2{'+PC3' if r.dims == 3 else ''} explain "
                         f"{100 * ev.sum():.0f}%)", fontsize=10)
            ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}%)")
            ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}%)" if len(ev) > 1 else "")
            if r.dims == 3 and len(ev) > 2:
                ax.set_zlabel(f"PC3 ({100 * ev[2]:.0f}%)")
        skipped = "  (first token left out)" if r.positions[0] == 1 else ""
        fig.suptitle(f"{name}: prompt tokens in the top principal components of the residual "
                     f"stream, one PCA per layer{skipped}", fontsize=12)
        return fig

    # Trajectory: one axis, each token a path of points from the embeddings to the end.
    fig = new_figure(11, 8.5)
    ax = fig.add_subplot(projection=proj)
    fit = r.per_stage[0]
    for j in range(n):
        path = np.stack([c[j] for c in r.coords])  # (stages, k)
        ax.plot(*path.T, "-", color=colors[j], alpha=0.55, lw=1.2)
        ax.scatter(*path.T, color=colors[j], s=6, alpha=0.6)  # one dot per stage
        ax.scatter(*path[0], color=colors[j], marker="o", s=30, edgecolor="k", lw=0.4)  # start
        ax.scatter(*path[-1], color=colors[j], marker="*", s=110, edgecolor="k", lw=0.4)
        ax.text(*path[-1], " " + labels[j], fontsize=fs, color=colors[j])
    # Stage names along the last token's path, so the reader can tell depth apart.
    step = max(1, len(r.stages) // 10)
    for idx in range(step, len(r.stages) - 1, step):
        ax.text(*r.coords[idx][-1], stage_label(r.stages[idx]), fontsize=8, color="#222222",
                ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.12", fc="white", ec=colors[-1], alpha=0.85))
    ev = fit.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}%)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}%)")
    if r.dims == 3:
        ax.set_zlabel(f"PC3 ({100 * ev[2]:.0f}%)")
    ax.grid(alpha=0.3)
    stages = ", ".join(stage_label(s) for s in r.stages)
    if len(r.stages) > 8:
        stages = f"{stage_label(r.stages[0])} … {stage_label(r.stages[-1])}, {len(r.stages)} in all"
    fig.suptitle(
        f"{name}: each token's path through the layers ({stages})\n"
        f"● = {r.input_label}, ★ = last stage; boxes name the stages along the path of the last token "
        f"“{labels[-1]}”\nvectors RMS-normalised, one PCA fitted on all stages together",
        fontsize=11,
    )
    return fig


def token_colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["viridis" if n > 10 else "tab10"]
    return [cmap(i / max(1, n - 1)) if n > 10 else cmap(i) for i in range(n)]


def scatter_tokens(ax, coords: np.ndarray, labels: list[str], colors: list, fs: float) -> None:
    pts = coords if coords.shape[1] >= 2 else np.pad(coords, ((0, 0), (0, 1)))
    if pts.shape[1] == 3:
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=colors, s=30)
        for p, lab in zip(pts, labels):
            ax.text(p[0], p[1], p[2], " " + lab, fontsize=fs)
        return
    ax.scatter(pts[:, 0], pts[:, 1], c=colors, s=30, zorder=3)
    for p, lab in zip(pts, labels):
        ax.annotate(lab, (p[0], p[1]), xytext=(3, 3), textcoords="offset points", fontsize=fs)
    ax.grid(alpha=0.3)


__all__ = ["plot_pca", "scatter_tokens", "token_colors"]
