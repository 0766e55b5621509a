"""params: statistics of the weights, layer by layer.

For each layer and each of its weight tensors (a Llama block: wq, wk, wv, wo, w1, w2, w3
and the two RMSNorm weights; GPT-2: wq, wk, wv, wo, w1, w2 and the two LayerNorm weights;
found by walking the block, so any family's names work, with a fused projection shown as
the parts its module's split_qkv() names, so q, k and v are never hidden)
`param_stats(model)` computes the mean, standard deviation, Frobenius norm and largest
absolute value, a histogram of the values, and the norm of each output row (for the
matrices) or the values themselves (for the norm weights, which are vectors).

Memory: a 7B model's weights must never be copied whole, let alone in float64. Each tensor
is read in chunks of rows; each chunk is converted to float32 (a few MiB at most), reduced
to a handful of numbers, and dropped. Chunk results are combined exactly with the
parallel-variance formula (Chan et al.), in Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..family import family_of

STATS = ("mean", "std", "norm", "absmax")
PARAM_VIEWS = ("stats", "hist", "heatmap")  # the ways llama.plots draws a ParamStats
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
    others: dict[str, TensorStats]  # tok_embeddings, output (if untied), norm, ...
    hist_edges: dict[str, np.ndarray]  # kind -> (bins + 1,)
    hist: dict[str, np.ndarray]  # kind -> (L, bins) counts
    rows: dict[str, np.ndarray]  # kind -> (L, rows): row norms (matrices) or values (vectors)
    matrices: list[str] = field(default_factory=list)  # kinds that are matrices, block order
    vectors: list[str] = field(default_factory=list)  # kinds that are vectors (norm weights)
    labels: dict[str, str] = field(default_factory=dict)  # kind -> "w1 (gate)": its role, if known
    norm: str = "RMSNorm"  # the norm whose weights the vectors are (llama.family)

    @property
    def kinds(self) -> list[str]:
        return self.matrices + self.vectors


# The feed-forward matrices by their role in each family (w1 is the gate in SwiGLU but the
# up projection in GPT-2's MLP); any other kind is shown by its last name.
ROLES = {
    "llama": {"feed_forward.w1": "w1 (gate)", "feed_forward.w2": "w2 (down)",
              "feed_forward.w3": "w3 (up)"},
    "gpt2": {"feed_forward.w1": "w1 (up)", "feed_forward.w2": "w2 (down)"},
}


def block_weights(block: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each weight inside a block by the path of its module ("attention.wo", "ffn_norm"),
    in module order. A module with a split_qkv() method (GPT-2's attention, whose one wqkv
    matrix computes q, k and v) contributes the parts it names instead of the fused matrix:
    "attention.wq", "attention.wk", "attention.wv" (views, nothing copied). Biases are
    left out."""
    out: dict[str, torch.Tensor] = {}
    skip: set[int] = set()  # fused matrices already shown through their parts
    for name, module in block.named_modules():
        split = getattr(module, "split_qkv", None)
        if callable(split):
            prefix = f"{name}." if name else ""
            for key, part in split().items():
                if key.endswith(".weight"):
                    out[prefix + key.removesuffix(".weight")] = part
                    if part._base is not None:
                        skip.add(id(part._base))  # the fused parameter the part is a view of
            continue
        w = dict(module.named_parameters(recurse=False)).get("weight") if name else None
        if w is not None and id(w) not in skip:
            out[name] = w
    return out


def weight_kinds(block: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Paths of the weights inside a block (see block_weights): (matrices, vectors)."""
    matrices, vectors = [], []
    for name, w in block_weights(block).items():
        (matrices if w.dim() > 1 else vectors).append(name)
    return matrices, vectors


def _whole(t: torch.Tensor) -> torch.Tensor:
    """The full tensor of a weight. A tensor-parallel model's weights are DTensors split
    across ranks (llama.parallel): gathered one at a time, a collective, so every rank
    must compute the same statistics (as every rank runs the same program)."""
    full_tensor = getattr(t, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else t


def _chunks(t: torch.Tensor):
    """Row blocks of a tensor as float32, each at most CHUNK_ELEMENTS elements."""
    t = _whole(t.detach())
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
    matrices, vectors = weight_kinds(model.layers[0])
    kinds = matrices + vectors
    per: dict[str, list[TensorStats]] = {k: [] for k in kinds}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for layer in model.layers:
        weights = block_weights(layer)
        for kind in kinds:
            w = weights[kind]
            st, row_norms = _scan(w)
            per[kind].append(st)
            # Matrices: one norm per output row. Norm weights (vectors): the values themselves.
            rows[kind].append(row_norms if w.dim() > 1 else _whole(w.detach()).float().numpy())

    # Histograms need a range first: the kind's pooled mean +- 6 std, within its extremes.
    hist_edges, hist = {}, {}
    for kind in kinds:
        s = per[kind]
        n = sum(x.numel for x in s)
        mean = sum(x.mean * x.numel for x in s) / n
        var = sum((x.std**2 + (x.mean - mean) ** 2) * x.numel for x in s) / n
        lo = max(min(x.min for x in s), mean - 6 * math.sqrt(var))
        hi = min(max(x.max for x in s), mean + 6 * math.sqrt(var))
        if hi <= lo:  # a constant tensor (e.g. fresh RMSNorm weights of exactly 1)
            lo, hi = lo - 0.5, hi + 0.5
        bins = HIST_BINS if kind in matrices else HIST_BINS_VECTORS
        hist_edges[kind] = np.linspace(lo, hi, bins + 1)
        hist[kind] = np.stack([_histogram(block_weights(layer)[kind], lo, hi, bins)
                               for layer in model.layers])

    stats = {
        kind: {st: np.array([getattr(x, st) for x in per[kind]]) for st in STATS}
        for kind in kinds
    }
    # Everything outside the blocks (embeddings, final norm, an untied output), each once.
    others, seen = {}, set()
    for name, module in model.named_children():
        w = dict(module.named_parameters(recurse=False)).get("weight") if name != "layers" else None
        if w is not None and id(w) not in seen:
            seen.add(id(w))
            others[name] = tensor_stats(w)
    family = family_of(model)
    labels = {k: v for k, v in ROLES.get(family.name, {}).items() if k in kinds}
    return ParamStats(L, stats, others, hist_edges, hist,
                      {k: np.stack(v) for k, v in rows.items()}, matrices, vectors, labels,
                      family.norm)


__all__ = ["TensorStats", "ParamStats", "tensor_stats", "param_stats", "weight_kinds", "block_weights",
           "PARAM_VIEWS", "STATS"]
