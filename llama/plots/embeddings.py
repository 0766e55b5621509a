"""embeddings: the prompt's token vectors in their top principal components, in 2-D or 3-D
(the numbers: llama.analysis.token_embeddings)."""

from __future__ import annotations

from ..analysis import TokenEmbeddings, Tokens
from ._common import Figure, new_figure, tick_labels, token_fontsize
from .pca import scatter_tokens, token_colors


def plot_embeddings(e: TokenEmbeddings, tokens: Tokens, name: str = "model") -> Figure:
    labels = [tick_labels(tokens)[p] for p in e.positions]
    n = len(labels)
    coords = e.fit.coords
    three = e.dims == 3 and coords.shape[1] >= 3
    fig = new_figure(10, 8.5)
    ax = fig.add_subplot(projection="3d" if three else None)
    scatter_tokens(ax, coords, labels, token_colors(n), max(7, token_fontsize(n)))
    ev = e.fit.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}%)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}%)" if len(ev) > 1 else "")
    if three:
        ax.set_zlabel(f"PC3 ({100 * ev[2]:.0f}%)")
    axes = "PC1–PC3" if three else "PC1–PC2"
    fig.suptitle(f"{name}: the prompt's {n} distinct token vectors (rows of "
                 f"tok_embeddings.weight), {axes} explain {100 * ev.sum():.0f}% of their variance",
                 fontsize=11)
    return fig


__all__ = ["plot_embeddings"]
