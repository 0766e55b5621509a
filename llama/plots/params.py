"""params: weight statistics per layer as lines, histograms and row-norm heatmaps (the
numbers: llama.analysis.param_stats)."""

from __future__ import annotations

import math

import numpy as np

from ..analysis import PARAM_VIEWS, ParamStats
from ._common import Figure, PlotError, new_figure

_PALETTE = ("#1f77b4", "#17becf", "#2ca02c", "#9467bd", "#d62728", "#ff7f0e", "#8c564b",
            "#7f7f7f", "#bcbd22", "#e377c2", "#aec7e8", "#98df8a")


def _short(kind: str, ps: ParamStats) -> str:
    # The role the analysis knows for the kind (w1 (gate) in a Llama), else its last name.
    return ps.labels.get(kind, kind.split(".")[-1])


def _colors(ps: ParamStats) -> dict[str, str]:
    return {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(ps.kinds)}


def _grid(fig: Figure, n: int):
    """A near-square grid of axes for n panels (extra axes switched off)."""
    cols = math.ceil(math.sqrt(n))
    axes = fig.subplots(-(-n // cols), cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return axes[:n]


def plot_params(ps: ParamStats, view: str = "stats", name: str = "model") -> Figure:
    """view: "stats" (lines across layers), "hist" (value histograms), "heatmap" (row norms)."""
    if view == "stats":
        return _plot_stats(ps, name)
    if view == "hist":
        return _plot_hist(ps, name)
    if view == "heatmap":
        return _plot_heatmap(ps, name)
    raise PlotError(f"params view must be one of {', '.join(PARAM_VIEWS)}, got {view!r}")


def _plot_stats(ps: ParamStats, name: str) -> Figure:
    fig = new_figure(13, 8)
    axes = fig.subplots(2, 2, sharex=True)
    layers = np.arange(ps.n_layers)
    titles = {"std": "standard deviation", "norm": "Frobenius norm (log scale)",
              "mean": "mean", "absmax": "largest |value| (log scale)"}
    colors = _colors(ps)
    for ax, st in zip(axes.flat, ("std", "norm", "mean", "absmax")):
        for kind in ps.kinds:
            style = "--" if kind in ps.vectors else "-"
            ax.plot(layers, ps.stats[kind][st], style, marker=".", color=colors[kind],
                    label=_short(kind, ps))
        ax.set_title(titles[st])
        ax.grid(alpha=0.3)
        if st in ("norm", "absmax"):
            ax.set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("layer")
    axes[0, 0].legend(fontsize=8, ncol=3, loc="best")
    other = "; ".join(f"{k}: std {s.std:.3g}, max|w| {s.absmax:.3g}" for k, s in ps.others.items())
    fig.suptitle(f"{name}: weight statistics per layer (norm weights dashed)\n{other}",
                 fontsize=12)
    return fig


def _plot_hist(ps: ParamStats, name: str) -> Figure:
    fig = new_figure(14, 9)
    axes = _grid(fig, len(ps.kinds))
    picks = sorted({0, ps.n_layers // 2, ps.n_layers - 1})
    shades = ["#1f77b4", "#ff7f0e", "#d62728"]
    for ax, kind in zip(axes, ps.kinds):
        edges = ps.hist_edges[kind]
        centers = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
        for color, i in zip(shades, picks):
            counts = ps.hist[kind][i]
            ax.plot(centers, counts / counts.sum() / width, color=color, label=f"layer {i}")
        pooled = ps.hist[kind].sum(0)
        ax.fill_between(centers, pooled / pooled.sum() / width, color="#cccccc", alpha=0.6,
                        label="all layers", step="mid")
        ax.set_yscale("log")
        ax.set_title(f"{_short(kind, ps)}   (std, layer 0: {ps.stats[kind]['std'][0]:.3g})", fontsize=10)
        ax.set_xlabel("weight value")
        ax.grid(alpha=0.3)
    cols = math.ceil(math.sqrt(len(ps.kinds)))
    for ax in axes[::cols]:
        ax.set_ylabel("density (log)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: weight value histograms (first, middle, last layer; edge bins "
                 "collect the tails beyond ±6 std)", fontsize=12)
    return fig


def _plot_heatmap(ps: ParamStats, name: str) -> Figure:
    fig = new_figure(15, 9.5)
    for ax, kind in zip(_grid(fig, len(ps.kinds)), ps.kinds):
        data = ps.rows[kind]  # (L, rows)
        # A few outlier rows would otherwise make everything else one colour.
        lo, hi = np.percentile(data, [0.5, 99.5])
        im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="magma",
                       origin="lower", vmin=lo, vmax=hi)
        what = "value" if kind in ps.vectors else "row norm"
        ax.set_title(f"{_short(kind, ps)}: {what} per output feature", fontsize=10)
        ax.set_ylabel("layer")
        ax.set_xlabel("output feature (row)" if kind in ps.matrices else "dimension")
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, extend="both")
    fig.suptitle(f"{name}: every projection across layers\n(each row of a matrix reduced to "
                 f"its L2 norm; {ps.norm} weights as they are; colours clipped at the 0.5 and 99.5 "
                 "percentiles)", fontsize=12)
    return fig


__all__ = ["plot_params"]
