"""tokens: the prompt as the model sees it — one box per token, its text and its id."""

from __future__ import annotations

from matplotlib.patches import FancyBboxPatch

from ..analysis import Tokens
from ._common import Figure, new_figure, tick_labels


def plot_tokens(tokens: Tokens, name: str = "model", prompt: str | None = None,
                per_row: int | None = None) -> Figure:
    n = len(tokens)
    labels = tick_labels(tokens)
    widths = [max(0.9, 0.16 * len(lab) + 0.5) for lab in labels]
    max_row = per_row_width = 16.0
    # Lay boxes out left to right, wrapping when a row is full.
    rows, row, x = [], [], 0.0
    for i, w in enumerate(widths):
        if row and (x + w > max_row or (per_row and len(row) >= per_row)):
            rows.append(row)
            row, x = [], 0.0
        row.append((i, x, w))
        x += w + 0.12
    if row:
        rows.append(row)
    height = 1.2 + 1.15 * len(rows)
    fig = new_figure(per_row_width * 0.72 + 0.6, height * 0.72 + 0.4)
    ax = fig.add_subplot()
    ax.set_xlim(-0.1, per_row_width)
    ax.set_ylim(-1.15 * len(rows) - 0.1, 0.3)
    ax.axis("off")
    for r, row in enumerate(rows):
        y = -1.15 * r
        for i, x0, w in row:
            color = "#dbe9f6" if i % 2 == 0 else "#f6e3d0"
            ax.add_patch(FancyBboxPatch((x0, y - 0.62), w, 0.62, boxstyle="round,pad=0.02",
                                        fc=color, ec="#777777"))
            ax.text(x0 + w / 2, y - 0.31, labels[i], ha="center", va="center",
                    fontsize=11, family="DejaVu Sans Mono")
            ax.text(x0 + w / 2, y - 0.8, f"{tokens.ids[i]}", ha="center", va="center",
                    fontsize=8, color="#444444")
            ax.text(x0 + 0.05, y + 0.08, f"{i}", ha="left", va="center", fontsize=6.5,
                    color="#999999")
    shown = f"“{prompt}”\n" if prompt and len(prompt) < 110 else ""
    ax.set_title(f"{name}: {shown}{n} tokens (box: token text, ␣ = space, ↵ = newline; below: "
                 "id; small: position)", fontsize=10.5, loc="left")
    return fig


__all__ = ["plot_tokens"]
