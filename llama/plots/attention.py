"""attention: who looks at whom.

- one head: the (query x key) probability matrix of layers.L head h, token text on both axes
- grid: all heads of one layer side by side
- sink: the share of attention that goes to the first token, for every layer and head
  (many heads park their attention on the first token when they have nothing to do)

The numbers come from llama.analysis.attention_maps (the `layers.L.attention.probs`
intermediates) and first_token_share.
"""

from __future__ import annotations

import math
import numpy as np

from ..analysis import AttentionMaps, Tokens, first_token_share, head_map
from ..analysis.common import check_index
from ._common import Figure, PlotError, new_figure, tick_labels, token_fontsize


def _token_axes(ax, tokens: Tokens, T: int, S: int) -> None:
    fs = token_fontsize(max(T, S))
    labels = tick_labels(tokens)
    ax.set_xticks(range(S))
    ax.set_xticklabels(labels[:S], rotation=90, fontsize=fs)
    ax.set_yticks(range(T))
    ax.set_yticklabels(labels[S - T : S], fontsize=fs)


def plot_attention_head(maps: AttentionMaps, tokens: Tokens, layer: int, head: int,
                        name: str = "model") -> Figure:
    p = head_map(maps, layer, head)  # (T, S)
    layer, head = layer % maps.n_layers, head % maps.n_heads  # checked by head_map
    T, S = p.shape
    size = min(11, 3.5 + 0.32 * S)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    im = ax.imshow(p, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    _token_axes(ax, tokens, T, S)
    if S <= 24:  # write the probabilities in when they fit
        for t in range(T):
            for s in range(S):
                if p[t, s] >= 0.1:
                    ax.text(s, t, f"{p[t, s]:.2f}"[1:] if p[t, s] < 1 else "1", ha="center",
                            va="center", fontsize=7, color="white" if p[t, s] > 0.55 else "k")
    ax.set_xlabel("key: the token looked at")
    ax.set_ylabel("query: the token looking")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="attention probability")
    ax.set_title(f"{name}: layers.{layer} head {head}")
    return fig


def plot_attention_grid(maps: AttentionMaps, tokens: Tokens, layer: int,
                        name: str = "model") -> Figure:
    layer = check_index(layer, maps.n_layers, "layer")
    if layer not in maps.probs:
        raise PlotError(f"layer {layer} was not captured")
    p = maps.probs[layer]  # (H, T, S)
    H, T, S = p.shape
    labels = tick_labels(tokens)
    cols = math.ceil(math.sqrt(H))  # a square-ish grid
    rows = -(-H // cols)
    cell = 3.6 if S <= 20 else 4.2
    fig = new_figure(cell * cols + 1, cell * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    im = None
    for h, ax in enumerate(axes):
        if h >= H:
            ax.axis("off")
            continue
        im = ax.imshow(p[h], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=10)
        if h % cols == 0:  # token text on the outer edges only, to stay legible
            ax.set_yticks(range(T))
            ax.set_yticklabels(labels[S - T : S], fontsize=max(5, token_fontsize(T) - 2))
        else:
            ax.set_yticks([])
        if h >= H - cols:
            ax.set_xticks(range(S))
            ax.set_xticklabels(labels[:S], rotation=90, fontsize=max(5, token_fontsize(S) - 2))
        else:
            ax.set_xticks([])
    fig.colorbar(im, ax=axes.tolist(), fraction=0.02, pad=0.01, label="attention probability")
    fig.suptitle(f"{name}: all {H} heads of layers.{layer} (rows: query token, columns: key token)",
                 fontsize=12)
    return fig


def plot_first_token_share(maps: AttentionMaps, tokens: Tokens, name: str = "model") -> Figure:
    share = first_token_share(maps)  # (L, H)
    layers = sorted(maps.probs)
    L, H = share.shape
    fig = new_figure(min(14, 4 + 0.45 * H), min(12, 2.5 + 0.28 * L))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(H))
    ax.set_xlabel("head")
    ax.set_yticks(range(L))
    ax.set_yticklabels([f"layers.{i}" for i in layers], fontsize=token_fontsize(L))
    ax.set_ylabel("layer")
    if H * L <= 400:
        for i in range(L):
            for h in range(H):
                ax.text(h, i, f"{share[i, h]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="k" if share[i, h] > 0.6 else "w")
    fig.colorbar(im, ax=ax, label=f"mean attention on the first token ({tick_labels(tokens)[0]})")
    ax.set_title(f"{name}: share of attention on the first token\n(mean over query positions "
                 "1..T-1; high = an attention sink)", fontsize=11)
    return fig


__all__ = ["plot_attention_head", "plot_attention_grid", "plot_first_token_share"]
