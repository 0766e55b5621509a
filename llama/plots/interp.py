"""Figures of the llama.interp experiments (drawing only: the numbers come from llama.interp).

    plot_patching(result)          PatchResult: layer x position (or head / kv head) heat map
    plot_dla(attribution)          LogitAttribution: one bar per part of the logit
    plot_head_map(head_map)        HeadMap: layer x head heat map (ablation, head scores)
    plot_head_maps([maps ...])     several HeadMaps side by side (previous-token, sink, induction)
    plot_steering(comparison)      SteeringTopK: next-token table before / after steering

Each returns a matplotlib Figure; nothing is shown and nothing global is touched.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np

from ..interp import HeadMap, LogitAttribution, PatchResult, SteeringTopK
from ._common import Figure, new_figure, readable_token, token_fontsize


def _escape(text: str) -> str:
    """Matplotlib reads $...$ as mathtext: show a dollar sign as itself."""
    return text.replace("$", r"\$")


def _cell_text(ax, values: np.ndarray, limit: float, centred: bool) -> None:
    """Write each cell's value in it (small maps only: beyond that they are unreadable)."""
    rows, cols = values.shape
    if rows * cols > 160:
        return
    for i in range(rows):
        for j in range(cols):
            v = values[i, j]
            # Diverging maps are dark at both ends; viridis is dark at the low end.
            dark = abs(v) > 0.6 * limit if centred else v < 0.55 * limit
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")


def _heat(ax, values: np.ndarray, cmap: str, centred: bool, vmin=None, vmax=None):
    if centred:
        limit = float(np.nanmax(np.abs(values))) if values.size else 1.0
        limit = limit or 1.0
        vmin, vmax = -limit, limit
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    _cell_text(ax, values, max(abs(im.norm.vmin or 0), abs(im.norm.vmax or 0)), centred)
    return im


def plot_patching(result: PatchResult, title: str | None = None) -> Figure:
    """Heat map of a patching sweep: rows are layers, columns positions (with the clean and
    corrupted tokens) or heads; red restores the clean behaviour, blue pushes the other way."""
    values = result.scores.numpy()
    n_layers, n_cols = values.shape
    fig = new_figure(min(14, max(6.0, 2.5 + 0.55 * n_cols)), min(12, 2.2 + 0.3 * n_layers))
    ax = fig.add_subplot()
    im = _heat(ax, values, "RdBu_r", centred=True)
    if result.column_kind == "position":
        clean = result.clean_labels or [f"#{i}" for i in result.clean_ids]
        corrupt = result.corrupt_labels or [f"#{i}" for i in result.corrupt_ids]
        labels = [
            f"{readable_token(c)}" if c == x else f"{readable_token(c)} / {readable_token(x)}"
            for c, x in zip(clean, corrupt)
        ]
        ax.set_xlabel("position (clean / corrupted token where they differ)")
    elif result.column_kind == "kv_head":
        labels = [
            f"{lab}\n(H{q[0]}-H{q[-1]})" if result.query_heads else lab
            for lab, q in zip(result.column_labels, result.query_heads or [[0]] * n_cols)
        ]
        ax.set_xlabel("key/value head (query heads that share it)")
    else:
        labels = list(result.column_labels)
        ax.set_xlabel("query head")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(labels, rotation=90 if result.column_kind == "position" else 0,
                       fontsize=token_fontsize(n_cols))
    ax.set_yticks(range(n_layers))
    ax.set_yticklabels(result.row_labels, fontsize=token_fontsize(n_layers))
    ax.set_ylabel("layer")
    where = "" if result.position is None else f" at position {result.position}"
    subtitle = f"\n{textwrap.fill(_escape(result.metric_name), 60)}" if result.metric_name else ""
    ax.set_title(title or f"activation patching: {result.site}{where}{subtitle}", fontsize=9)
    fig.colorbar(im, ax=ax, label="metric", shrink=0.8)
    return fig


def plot_dla(attr: LogitAttribution, heads: bool = False, top: int | None = None,
             title: str | None = None) -> Figure:
    """Horizontal bars, one per part of the logit, in forward order (top: only the `top`
    largest in size, the rest summed into one bar); the parts add up to the logit."""
    parts = attr.parts(heads=heads)
    names, values = list(parts), list(parts.values())
    if top is not None and 0 < top < len(names):
        order = sorted(range(len(values)), key=lambda i: -abs(values[i]))
        keep = sorted(order[:top])
        rest = sum(values[i] for i in order[top:])
        names = [names[i] for i in keep] + [f"{len(order) - top} others"]
        values = [values[i] for i in keep] + [rest]
    fig = new_figure(7, min(16, 1.5 + 0.22 * len(names)))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    colors = ["#c0392b" if v >= 0 else "#2e86c1" for v in values]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=token_fontsize(len(names)))
    ax.invert_yaxis()  # forward order from the top
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("contribution to the logit (final norm's scale frozen)")
    label = _escape(attr.target_label)
    ax.set_title(
        title or f"direct logit attribution of {label} at position {attr.position}: "
        f"sum {attr.total:.3f}, logit {attr.logit:.3f}",
        fontsize=9,
    )
    return fig


def plot_head_map(head_map: HeadMap, title: str | None = None, ax=None) -> Figure:
    """Layer x head heat map of one HeadMap (ablation effects or attention scores)."""
    values = head_map.scores.numpy()
    n_layers, n_heads = values.shape
    if ax is None:
        fig = new_figure(min(14, 2.5 + 0.45 * n_heads), min(12, 1.8 + 0.3 * n_layers))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    is_score = head_map.baseline is None  # attention scores are probabilities in [0, 1]
    if is_score:
        im = _heat(ax, values, "viridis", centred=False, vmin=0.0, vmax=1.0)
    else:
        im = _heat(ax, values - head_map.baseline, "RdBu_r", centred=True)
    ax.set_xticks(range(n_heads))
    ax.set_xticklabels(head_map.column_labels, fontsize=token_fontsize(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_yticklabels(head_map.row_labels, fontsize=token_fontsize(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or head_map.kind, fontsize=10)
    label = "score" if is_score else f"change from unablated ({head_map.baseline:.3g})"
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    return fig


def plot_head_maps(maps: Sequence[HeadMap]) -> Figure:
    """Several HeadMaps side by side, e.g. previous-token, first-token and induction."""
    maps = list(maps)
    if not maps:
        raise ValueError("plot_head_maps needs at least one HeadMap")
    n_layers, n_heads = maps[0].scores.shape
    fig = new_figure(min(20, len(maps) * (2.5 + 0.45 * n_heads)), min(12, 1.8 + 0.3 * n_layers))
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, m in zip(axes, maps):
        plot_head_map(m, ax=ax)
    return fig


def plot_steering(cmp: SteeringTopK, title: str | None = None) -> Figure:
    """Two bar charts: the next-token table without and with the steering vector."""
    k = max(len(cmp.before), len(cmp.after))
    fig = new_figure(10, 1.5 + 0.3 * k)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, cands, labels, name in (
        (axes[0], cmp.before, cmp.before_labels, "without steering"),
        (axes[1], cmp.after, cmp.after_labels, f"steered (layer {cmp.layer}, scale {cmp.scale:g})"),
    ):
        y = np.arange(len(cands))
        ax.barh(y, [c.prob for c in cands], color="#5b8def")
        ax.set_yticks(y)
        ax.set_yticklabels([readable_token(lab) for lab in labels], fontsize=token_fontsize(k))
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


__all__ = ["plot_patching", "plot_dla", "plot_head_map", "plot_head_maps", "plot_steering"]
