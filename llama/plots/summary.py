"""summary: what a model is made of, in numbers and as a figure.

`model_summary(model)` (or `model_summary(args)` when only the configuration is known, e.g.
from an exported capture) returns a ModelSummary: the configuration, the parameter count
by component, whether the output matrix is tied to the embedding, the KV-cache cost per
token and at full context, and the weight memory in each storage format.
`summary_text(s)` prints it; `plot_summary(s)` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from matplotlib.ticker import FuncFormatter

from ..config import ModelArgs
from ._common import Figure, human_bytes, human_count, new_figure

# Bytes per weight of each storage format. The GGUF block formats store 32 weights per
# block plus one or two float16 scales: Q8_0 = 34 bytes / 32, Q4_1 = 20 / 32, Q4_0 = 18 / 32.
WEIGHT_FORMATS = {
    "float32": 4.0,
    "bfloat16 / float16": 2.0,
    "GGUF Q8_0": 34 / 32,
    "GGUF Q4_1": 20 / 32,
    "GGUF Q4_0": 18 / 32,
}
KV_DTYPES = {"float32": 4, "bfloat16 / float16": 2}
COMPONENTS = ("embedding", "attention", "feed-forward", "norms", "output")


@dataclass
class ModelSummary:
    name: str
    args: ModelArgs
    config: list[tuple[str, str]]  # (label, value) rows
    params: dict[str, int]  # component -> parameter count (tied output counted once, as 0)
    total_params: int
    tied: str  # a sentence about the embedding/output tie
    kv_bytes_per_token: dict[str, int]  # cache dtype -> bytes for one token, all layers
    kv_bytes_full: dict[str, int]  # cache dtype -> bytes at max_seq_len tokens
    weight_bytes: dict[str, float]  # storage format -> bytes for all parameters
    loaded: str | None = None  # "float32, 538.1 MiB" for a live model
    notes: list[str] = field(default_factory=list)


def param_counts_from_args(args: ModelArgs) -> dict[str, int]:
    """Parameter count by component, from the hyper-parameters alone."""
    D, F, L, V = args.dim, args.hidden_dim, args.n_layers, args.vocab_size
    q = args.n_heads * args.head_dim
    kv = args.n_kv_heads * args.head_dim
    attention = D * q + 2 * D * kv + q * D  # wq, wk, wv, wo
    if args.attention_bias:
        attention += q + 2 * kv
    return {
        "embedding": V * D,
        "attention": L * attention,
        "feed-forward": L * 3 * D * F,  # w1, w2, w3
        "norms": L * 2 * D + D,  # attention_norm, ffn_norm per layer; final norm
        "output": 0 if args.tie_embeddings else V * D,
    }


def param_counts_from_model(model: torch.nn.Module) -> dict[str, int]:
    """Parameter count by component, counted tensor by tensor (a tied matrix once)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    # named_parameters() lists a shared tensor once, under its first name (tok_embeddings).
    for name, p in model.named_parameters():
        if name.startswith("tok_embeddings"):
            part = "embedding"
        elif ".attention." in name:
            part = "attention"
        elif ".feed_forward." in name:
            part = "feed-forward"
        elif "norm" in name:
            part = "norms"
        elif name.startswith("output"):
            part = "output"
        else:  # pragma: no cover - the model has no other parameters
            raise ValueError(f"unexpected parameter {name}")
        counts[part] += p.numel()
    return counts


def _tie_sentence(args: ModelArgs, model: torch.nn.Module | None) -> str:
    if model is None:
        return "tied: output = embedding matrix" if args.tie_embeddings else "untied: own output matrix"
    shared = model.output.weight is model.tok_embeddings.weight
    if shared:
        return "tied: output = embedding matrix (one tensor)"
    if args.tie_embeddings:  # pragma: no cover - Transformer always ties when asked
        return "NOT tied although the config says tie_embeddings"
    a, b = model.output.weight, model.tok_embeddings.weight
    if a.shape == b.shape and a.device.type != "meta" and torch.equal(a, b):
        return "untied, but output equals the embedding (could be tied)"
    return "untied: own output matrix"


def model_summary(model_or_args: torch.nn.Module | ModelArgs, name: str = "model") -> ModelSummary:
    """Summarise a Transformer (counts its real tensors) or a ModelArgs (counts by formula)."""
    if isinstance(model_or_args, ModelArgs):
        model, args = None, model_or_args
        params = param_counts_from_args(args)
    elif hasattr(model_or_args, "args") and isinstance(model_or_args.args, ModelArgs):
        model, args = model_or_args, model_or_args.args
        params = param_counts_from_model(model)
    else:
        raise TypeError(
            f"model_summary needs a llama.model.Transformer or a ModelArgs, "
            f"got {type(model_or_args).__name__}"
        )
    total = sum(params.values())
    a = args
    if a.use_scaled_rope:
        scaling = (
            f"llama3: factor {a.rope_scaling_factor:g}, low/high {a.rope_low_freq_factor:g}/"
            f"{a.rope_high_freq_factor:g}, original context {a.rope_original_max_seq_len:,}"
        )
    else:
        scaling = "none"
    config = [
        ("hidden size (dim)", f"{a.dim:,}"),
        ("FFN hidden size", f"{a.hidden_dim:,}"),
        ("layers", f"{a.n_layers}"),
        ("attention heads", f"{a.n_heads}"),
        ("key/value heads", f"{a.n_kv_heads}" + (f"  ({a.n_heads // a.n_kv_heads} q heads share each)" if a.n_kv_heads != a.n_heads else "")),
        ("head size", f"{a.head_dim}"),
        ("vocabulary", f"{a.vocab_size:,}"),
        ("context (max_seq_len)", f"{a.max_seq_len:,}"),
        ("rope theta", f"{a.rope_theta:,g}"),
        ("rope scaling", scaling),
        ("norm eps", f"{a.norm_eps:g}"),
        ("q/k/v bias", "yes (Qwen2)" if a.attention_bias else "no"),
    ]
    # Keys and values: 2 tensors x layers x kv heads x head size numbers per token.
    per_token_numbers = 2 * a.n_layers * a.n_kv_heads * a.head_dim
    kv_tok = {k: per_token_numbers * b for k, b in KV_DTYPES.items()}
    kv_full = {k: v * a.max_seq_len for k, v in kv_tok.items()}
    weight_bytes = {k: total * b for k, b in WEIGHT_FORMATS.items()}
    loaded = None
    if model is not None:
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
        nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
        loaded = f"{'/'.join(dtypes)}, {human_bytes(nbytes)}"
    return ModelSummary(
        name=name,
        args=a,
        config=config,
        params=params,
        total_params=total,
        tied=_tie_sentence(a, model),
        kv_bytes_per_token=kv_tok,
        kv_bytes_full=kv_full,
        weight_bytes=weight_bytes,
        loaded=loaded,
    )


def summary_text(s: ModelSummary) -> str:
    """The summary as plain text (what `llama-plot summary --text` prints)."""
    lines = [f"{s.name}", "", "Configuration"]
    width = max(len(k) for k, _ in s.config)
    lines += [f"  {k:<{width}}  {v}" for k, v in s.config]
    lines += ["", "Parameters"]
    for part, n in s.params.items():
        share = 100 * n / s.total_params if s.total_params else 0
        extra = "  (tied to the embedding)" if part == "output" and n == 0 else ""
        lines.append(f"  {part:<13} {n:>15,}  {share:5.1f}%{extra}")
    lines.append(f"  {'total':<13} {s.total_params:>15,}  ({human_count(s.total_params)})")
    lines += ["", f"Embedding/output: {s.tied}", "", "KV cache (keys + values, all layers)"]
    for k in s.kv_bytes_per_token:
        lines.append(
            f"  {k:<19} {human_bytes(s.kv_bytes_per_token[k]):>12} per token, "
            f"{human_bytes(s.kv_bytes_full[k]):>12} at {s.args.max_seq_len:,} tokens"
        )
    lines += ["", "Weights"]
    for k, b in s.weight_bytes.items():
        lines.append(f"  {k:<19} {human_bytes(b):>12}")
    if s.loaded:
        lines.append(f"  {'as loaded':<19} {s.loaded}")
    return "\n".join(lines) + "\n"


def plot_summary(s: ModelSummary) -> Figure:
    """Configuration and memory tables beside a bar chart of parameters by component."""
    fig = new_figure(13, 6.2)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1], height_ratios=[1.15, 1])
    ax_cfg = fig.add_subplot(grid[:, 0])
    ax_par = fig.add_subplot(grid[0, 1])
    ax_mem = fig.add_subplot(grid[1, 1])
    fig.suptitle(
        f"{s.name}: {human_count(s.total_params)} parameters ({s.total_params:,})",
        fontsize=14,
        fontweight="bold",
    )

    # Left: the configuration as a two-column table, then the tie and memory facts.
    ax_cfg.axis("off")
    rows = [[k, v] for k, v in s.config]
    rows.append(["embedding / output", s.tied])
    for k in s.kv_bytes_per_token:
        short = "fp32" if k == "float32" else "bf16/fp16"
        rows.append([f"KV cache per token, {short}", human_bytes(s.kv_bytes_per_token[k])])
        rows.append([f"KV cache, {s.args.max_seq_len:,} tokens, {short}",
                     human_bytes(s.kv_bytes_full[k])])
    table = ax_cfg.table(cellText=rows, colLabels=["configuration", "value"], loc="upper left",
                         cellLoc="left", colWidths=[0.42, 0.58])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 1.38)
    for (r, _c), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        if r == 0:
            cell.set_facecolor("#dde6f2")
            cell.set_text_props(fontweight="bold")

    # Top right: parameters by component.
    parts = [p for p in s.params]
    counts = [s.params[p] for p in parts]
    colors = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#c44e52"]
    bars = ax_par.barh(parts, counts, color=colors[: len(parts)])
    ax_par.invert_yaxis()
    ax_par.set_title("parameters by component")
    ax_par.set_xlabel("parameters")
    top = max(counts) if counts else 1
    for bar, n, part in zip(bars, counts, parts):
        label = "tied (0 extra)" if part == "output" and n == 0 else (
            f"{human_count(n)}  ({100 * n / s.total_params:.1f}%)"
        )
        ax_par.text(bar.get_width() + 0.01 * top, bar.get_y() + bar.get_height() / 2, label,
                    va="center", fontsize=9)
    ax_par.set_xlim(0, top * 1.45)
    ax_par.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_count(v)))

    # Bottom right: weight memory in each storage format.
    names = list(s.weight_bytes)
    values = [s.weight_bytes[n] / 2**20 for n in names]
    bars = ax_mem.barh(names, values, color="#7f9fbf")
    ax_mem.invert_yaxis()
    ax_mem.set_title("weight memory by storage format" + (f"  (loaded: {s.loaded})" if s.loaded else ""),
                     fontsize=10)
    ax_mem.set_xlabel("MiB")
    for bar, n in zip(bars, names):
        ax_mem.text(bar.get_width() * 1.01, bar.get_y() + bar.get_height() / 2,
                    human_bytes(s.weight_bytes[n]), va="center", fontsize=9)
    ax_mem.set_xlim(0, max(values) * 1.35)
    return fig


__all__ = [
    "ModelSummary",
    "model_summary",
    "summary_text",
    "plot_summary",
    "param_counts_from_args",
    "param_counts_from_model",
]
