"""params: statistics of the weights, layer by layer.

For each layer and each of its tensors (wq, wk, wv, wo, w1, w2, w3 and the two RMSNorm
weights) `param_stats(model)` computes the mean, standard deviation, Frobenius norm and
largest absolute value, a histogram of the values, and the norm of each output row (for
the matrices) or the values themselves (for the norm weights, which are vectors).

Memory: a 7B model's weights must never be copied whole, let alone in float64. Each tensor
is read in chunks of rows; each chunk is converted to float32 (a few MiB at most), reduced
to a handful of numbers, and dropped. Chunk results are combined exactly with the
parallel-variance formula (Chan et al.), in Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._common import Figure, new_figure

MATRICES = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
            "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
VECTORS = ("attention_norm", "ffn_norm")
KINDS = MATRICES + VECTORS
# Short names for legends and titles.
SHORT = {k: k.split(".")[-1] for k in KINDS}
SHORT.update({"feed_forward.w1": "w1 (gate)", "feed_forward.w2": "w2 (down)",
              "feed_forward.w3": "w3 (up)"})
STATS = ("mean", "std", "norm", "absmax")
CHUNK_ELEMENTS = 1 << 22  # ~16 MiB of float32 per chunk
HIST_BINS = 100
HIST_BINS_VECTORS = 40  # norm weights have only D values each: coarser bins


@dataclass
class TensorStats:
    numel: int
    mean: float
    std: float
    norm: float  # Frobenius / L2 norm
    absmax: float
    min: float
    max: float


@dataclass
class ParamStats:
    n_layers: int
    stats: dict[str, dict[str, np.ndarray]]  # kind -> stat -> (L,)
    others: dict[str, TensorStats]  # tok_embeddings, output (if untied), norm
    hist_edges: dict[str, np.ndarray]  # kind -> (bins + 1,)
    hist: dict[str, np.ndarray]  # kind -> (L, bins) counts
    rows: dict[str, np.ndarray]  # kind -> (L, rows): row norms (matrices) or values (vectors)


def _chunks(t: torch.Tensor):
    """Row blocks of a tensor as float32, each at most CHUNK_ELEMENTS elements."""
    t2 = t.detach().reshape(t.shape[0], -1) if t.dim() > 1 else t.detach().reshape(1, -1)
    rows_per = max(1, CHUNK_ELEMENTS // max(1, t2.shape[1]))
    for start in range(0, t2.shape[0], rows_per):
        yield t2[start : start + rows_per].float()  # (rows, cols) float32 copy of one block


def _scan(t: torch.Tensor) -> tuple[TensorStats, np.ndarray]:
    """One pass over a tensor: its TensorStats and the L2 norm of each row."""
    n, mean, m2 = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    row_sq = []
    for c in _chunks(t):
        cn = c.numel()
        cvar, cmean = torch.var_mean(c, correction=0)  # one fused pass
        cmean, cm2 = float(cmean), float(cvar) * cn
        # Chan's update: merge (n, mean, m2) with the chunk's (cn, cmean, cm2).
        delta = cmean - mean
        total = n + cn
        mean += delta * cn / total
        m2 += cm2 + delta * delta * n * cn / total
        n = total
        cmin, cmax = torch.aminmax(c)
        lo, hi = min(lo, float(cmin)), max(hi, float(cmax))
        row_sq.append(c.pow(2).sum(1).double().numpy())  # (rows,) sums of squares
    rows = np.concatenate(row_sq)
    sumsq = float(rows.sum())
    stats = TensorStats(n, mean, math.sqrt(m2 / n), math.sqrt(sumsq), max(abs(lo), abs(hi)), lo, hi)
    return stats, np.sqrt(rows)


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """Mean, std (population), norm, extremes of a tensor of any size, chunk by chunk."""
    return _scan(t)[0]


def _histogram(t: torch.Tensor, lo: float, hi: float, bins: int) -> np.ndarray:
    counts = torch.zeros(bins)
    for c in _chunks(t):
        # Values beyond the range land in the edge bins instead of vanishing.
        counts += torch.histc(c.clamp(lo, hi), bins=bins, min=lo, max=hi)
    return counts.numpy()


def param_stats(model: torch.nn.Module) -> ParamStats:
    """Weight statistics per layer and tensor kind (see the module docstring)."""
    L = len(model.layers)
    per: dict[str, list[TensorStats]] = {k: [] for k in KINDS}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    for layer in model.layers:
        for kind in KINDS:
            w = layer.get_submodule(kind).weight
            st, row_norms = _scan(w)
            per[kind].append(st)
            # Matrices: one norm per output row. Norm weights (vectors): the values themselves.
            rows[kind].append(row_norms if w.dim() > 1 else w.detach().float().numpy())

    # Histograms need a range first: the kind's pooled mean +- 6 std, within its extremes.
    hist_edges, hist = {}, {}
    for kind in KINDS:
        s = per[kind]
        n = sum(x.numel for x in s)
        mean = sum(x.mean * x.numel for x in s) / n
        var = sum((x.std**2 + (x.mean - mean) ** 2) * x.numel for x in s) / n
        lo = max(min(x.min for x in s), mean - 6 * math.sqrt(var))
        hi = min(max(x.max for x in s), mean + 6 * math.sqrt(var))
        if hi <= lo:  # a constant tensor (e.g. fresh RMSNorm weights of exactly 1)
            lo, hi = lo - 0.5, hi + 0.5
        bins = HIST_BINS if kind in MATRICES else HIST_BINS_VECTORS
        hist_edges[kind] = np.linspace(lo, hi, bins + 1)
        hist[kind] = np.stack([_histogram(layer.get_submodule(kind).weight, lo, hi, bins)
                               for layer in model.layers])

    stats = {
        kind: {st: np.array([getattr(x, st) for x in per[kind]]) for st in STATS}
        for kind in KINDS
    }
    others = {"tok_embeddings": tensor_stats(model.tok_embeddings.weight)}
    if model.output.weight is not model.tok_embeddings.weight:
        others["output"] = tensor_stats(model.output.weight)
    others["norm"] = tensor_stats(model.norm.weight)
    return ParamStats(L, stats, others, hist_edges, hist,
                      {k: np.stack(v) for k, v in rows.items()})


# ----------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------

_COLORS = {
    "attention.wq": "#1f77b4", "attention.wk": "#17becf", "attention.wv": "#2ca02c",
    "attention.wo": "#9467bd", "feed_forward.w1": "#d62728", "feed_forward.w2": "#ff7f0e",
    "feed_forward.w3": "#8c564b", "attention_norm": "#7f7f7f", "ffn_norm": "#bcbd22",
}
PARAM_VIEWS = ("stats", "hist", "heatmap")


def plot_params(ps: ParamStats, view: str = "stats", name: str = "model") -> Figure:
    """view: "stats" (lines across layers), "hist" (value histograms), "heatmap" (row norms)."""
    if view == "stats":
        return _plot_stats(ps, name)
    if view == "hist":
        return _plot_hist(ps, name)
    if view == "heatmap":
        return _plot_heatmap(ps, name)
    raise ValueError(f"params view must be one of {', '.join(PARAM_VIEWS)}, got {view!r}")


def _plot_stats(ps: ParamStats, name: str) -> Figure:
    fig = new_figure(13, 8)
    axes = fig.subplots(2, 2, sharex=True)
    layers = np.arange(ps.n_layers)
    titles = {"std": "standard deviation", "norm": "Frobenius norm (log scale)",
              "mean": "mean", "absmax": "largest |value| (log scale)"}
    for ax, st in zip(axes.flat, ("std", "norm", "mean", "absmax")):
        for kind in KINDS:
            style = "--" if kind in VECTORS else "-"
            ax.plot(layers, ps.stats[kind][st], style, marker=".", color=_COLORS[kind],
                    label=SHORT[kind])
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
    axes = fig.subplots(3, 3)
    picks = sorted({0, ps.n_layers // 2, ps.n_layers - 1})
    shades = ["#1f77b4", "#ff7f0e", "#d62728"]
    for ax, kind in zip(axes.flat, KINDS):
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
        ax.set_title(f"{SHORT[kind]}   (std, layer 0: {ps.stats[kind]['std'][0]:.3g})", fontsize=10)
        ax.set_xlabel("weight value")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("density (log)")
    axes[1, 0].set_ylabel("density (log)")
    axes[2, 0].set_ylabel("density (log)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{name}: weight value histograms (first, middle, last layer; edge bins "
                 "collect the tails beyond ±6 std)", fontsize=12)
    return fig


def _plot_heatmap(ps: ParamStats, name: str) -> Figure:
    fig = new_figure(15, 9.5)
    axes = fig.subplots(3, 3)
    for ax, kind in zip(axes.flat, KINDS):
        data = ps.rows[kind]  # (L, rows)
        # A few outlier rows would otherwise make everything else one colour.
        lo, hi = np.percentile(data, [0.5, 99.5])
        im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="magma",
                       origin="lower", vmin=lo, vmax=hi)
        what = "value" if kind in VECTORS else "row norm"
        ax.set_title(f"{SHORT[kind]}: {what} per output feature", fontsize=10)
        ax.set_ylabel("layer")
        ax.set_xlabel("output feature (row)" if kind in MATRICES else "dimension")
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, extend="both")
    fig.suptitle(f"{name}: every projection across layers\n(each row of a matrix reduced to "
                 "its L2 norm; RMSNorm weights as they are; colours clipped at the 0.5 and 99.5 "
                 "percentiles)", fontsize=12)
    return fig


__all__ = ["TensorStats", "ParamStats", "tensor_stats", "param_stats", "plot_params",
           "PARAM_VIEWS", "KINDS"]
