"""summary: what a model is made of, in numbers.

`model_summary(model)` (or `model_summary(args)` when only the configuration is known, e.g.
from an exported capture) returns a ModelSummary: the configuration, the parameter count
by component, whether the output matrix is tied to the embedding, the KV-cache cost per
token and at full context, and the weight memory in each storage format.
`summary_text(s)` writes it as text; llama.plots.plot_summary draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..dtypes import dtype_name
from .common import human_bytes, human_count

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
    args: Any  # the model's configuration (llama.config.ModelArgs for a Llama)
    config: list[tuple[str, str]]  # (label, value) rows
    params: dict[str, int]  # component -> parameter count (tied output counted once, as 0)
    total_params: int
    tied: str  # a sentence about the embedding/output tie
    kv_bytes_per_token: dict[str, int]  # cache dtype -> bytes for one token, all layers
    kv_bytes_full: dict[str, int]  # cache dtype -> bytes at max_seq_len tokens
    weight_bytes: dict[str, float]  # storage format -> bytes for all parameters
    loaded: str | None = None  # "float32, 538.1 MiB" for a live model
    notes: list[str] = field(default_factory=list)


def param_counts_from_args(args) -> dict[str, int]:
    """Parameter count by component, from a Llama configuration alone."""
    D, F, L, V = args.dim, args.hidden_dim, args.n_layers, args.vocab_size
    q = args.n_heads * args.head_dim
    kv = args.n_kv_heads * args.head_dim
    attention = D * q + 2 * D * kv + q * D  # wq, wk, wv, wo
    if getattr(args, "attention_bias", False):
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
        if name.startswith(("tok_embeddings", "pos_embeddings")):
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


def _tie_sentence(args, model: torch.nn.Module | None) -> str:
    if model is None:
        return "tied: output = embedding matrix" if getattr(args, "tie_embeddings", False) else "untied: own output matrix"
    shared = model.output.weight is model.tok_embeddings.weight
    if shared:
        return "tied: output = embedding matrix (one tensor)"
    if getattr(args, "tie_embeddings", False):  # pragma: no cover - Transformer always ties when asked
        return "NOT tied although the config says tie_embeddings"
    a, b = model.output.weight, model.tok_embeddings.weight
    if a.shape == b.shape and a.device.type != "meta" and torch.equal(a, b):
        return "untied, but output equals the embedding (could be tied)"
    return "untied: own output matrix"


def _is_model(x) -> bool:
    return isinstance(x, torch.nn.Module) and hasattr(x, "args")


def model_summary(model_or_args, name: str = "model") -> ModelSummary:
    """Summarise a model (counts its real tensors) or its configuration (counts by formula)."""
    if _is_model(model_or_args):
        model, args = model_or_args, model_or_args.args
        params = param_counts_from_model(model)
    elif hasattr(model_or_args, "n_layers") and hasattr(model_or_args, "to_dict"):
        model, args = None, model_or_args
        params = param_counts_from_args(args)
    else:
        raise TypeError(
            f"model_summary needs a llama.model.Transformer or a ModelArgs, "
            f"got {type(model_or_args).__name__}"
        )
    total = sum(params.values())
    a = args
    if getattr(a, "use_scaled_rope", False):
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
    ]
    if hasattr(a, "rope_theta"):  # a family with learned positions (GPT-2) has no RoPE rows
        config += [("rope theta", f"{a.rope_theta:,g}"), ("rope scaling", scaling)]
    if hasattr(a, "norm_eps"):
        config.append(("norm eps", f"{a.norm_eps:g}"))
    config.append(("q/k/v bias", "yes (Qwen2)" if getattr(a, "attention_bias", False) else "no"))
    # Keys and values: 2 tensors x layers x kv heads x head size numbers per token.
    per_token_numbers = 2 * a.n_layers * a.n_kv_heads * a.head_dim
    kv_tok = {k: per_token_numbers * b for k, b in KV_DTYPES.items()}
    kv_full = {k: v * a.max_seq_len for k, v in kv_tok.items()}
    weight_bytes = {k: total * b for k, b in WEIGHT_FORMATS.items()}
    loaded = None
    if model is not None:
        dtypes = sorted({dtype_name(p.dtype) for p in model.parameters()})
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


__all__ = [
    "ModelSummary",
    "model_summary",
    "summary_text",
    "param_counts_from_args",
    "param_counts_from_model",
    "WEIGHT_FORMATS",
    "KV_DTYPES",
    "COMPONENTS",
]
