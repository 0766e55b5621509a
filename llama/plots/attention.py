"""attention: who looks at whom.

- one head: the (query x key) probability matrix of layers.L head h, token text on both axes
- grid: all heads of one layer side by side
- sink: the share of attention that goes to the first token, for every layer and head
  (many heads park their attention on the first token when they have nothing to do)

The numbers are the `layers.L.attention.probs` intermediates (B, H, T, S): each row is a
softmax, so it sums to 1, and the causal mask makes everything right of the diagonal 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._capture import Cache, get, n_layers_in
from ._common import Figure, PlotError, Tokens, check_index, new_figure, token_fontsize


@dataclass
class AttentionMaps:
    probs: dict[int, np.ndarray]  # layer -> (H, T, S)
    n_layers: int

    @property
    def n_heads(self) -> int:
        return next(iter(self.probs.values())).shape[0]


def attention_maps(cache: Cache, layers: list[int] | None = None) -> AttentionMaps:
    """Attention probabilities of the given layers (all captured layers by default)."""
    L = n_layers_in(cache)
    if L == 0:
        raise PlotError("attention needs layers.N.attention.probs; the capture has no layers")
    layers = list(range(L)) if layers is None else [check_index(i, L, "layer") for i in layers]
    probs = {i: get(cache, f"layers.{i}.attention.probs", "attention").numpy() for i in layers}
    return AttentionMaps(probs, L)


def first_token_share(maps: AttentionMaps, skip_first_query: bool = True) -> np.ndarray:
    """(layers, heads): mean over query positions of the probability put on position 0.

    The first query can only look at itself (share 1 by construction), so it is left out
    unless the prompt is a single token.
    """
    rows = []
    for i in sorted(maps.probs):
        p = maps.probs[i]  # (H, T, S)
        start = 1 if skip_first_query and p.shape[1] > 1 else 0
        rows.append(p[:, start:, 0].mean(axis=1))  # (H,)
    return np.stack(rows)


# ----------------------------------------------------------------------------------


def _token_axes(ax, tokens: Tokens, T: int, S: int) -> None:
    fs = token_fontsize(max(T, S))
    ax.set_xticks(range(S))
    ax.set_xticklabels(tokens.labels[:S], rotation=90, fontsize=fs)
    ax.set_yticks(range(T))
    ax.set_yticklabels(tokens.labels[S - T : S], fontsize=fs)


def plot_attention_head(maps: AttentionMaps, tokens: Tokens, layer: int, head: int,
                        name: str = "model") -> Figure:
    layer = check_index(layer, maps.n_layers, "layer")
    if layer not in maps.probs:
        raise PlotError(f"layer {layer} was not captured")
    head = check_index(head, maps.n_heads, "head")
    p = maps.probs[layer][head]  # (T, S)
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
            ax.set_yticklabels(tokens.labels[S - T : S], fontsize=max(5, token_fontsize(T) - 2))
        else:
            ax.set_yticks([])
        if h >= H - cols:
            ax.set_xticks(range(S))
            ax.set_xticklabels(tokens.labels[:S], rotation=90, fontsize=max(5, token_fontsize(S) - 2))
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
    fig.colorbar(im, ax=ax, label=f"mean attention on the first token ({tokens.labels[0]})")
    ax.set_title(f"{name}: share of attention on the first token\n(mean over query positions "
                 "1..T-1; high = an attention sink)", fontsize=11)
    return fig


__all__ = ["AttentionMaps", "attention_maps", "first_token_share", "plot_attention_head",
           "plot_attention_grid", "plot_first_token_share"]
