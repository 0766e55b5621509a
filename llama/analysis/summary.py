"""summary: what a model is made of, in numbers.

`model_summary(model)` (or `model_summary(args)` when only the configuration is known, e.g.
from an exported capture) returns a ModelSummary: the configuration, the parameter count
by component, whether the output matrix is tied to the embedding, the KV-cache cost per
token and at full context, and the weight memory in each storage format.
`summary_text(s)` writes it as text; llama.plots.plot_summary draws it.

What differs between model families (their parameter formulas, the configuration rows
that only one of them has: RoPE for Llama, learned positions and biases for GPT-2) is in
two small tables keyed by the family's name (llama.family); the rest is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..dtypes import dtype_name
from ..family import family_of
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
POSITIONS = "position embedding"  # a component of families that learn their positions


@dataclass
class ModelSummary:
    name: str
    args: Any  # the model's configuration (ModelArgs for a Llama, GPT2Config for GPT-2)
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
    """Parameter count by component, from a configuration alone (any family: each has its
    formula below; tests hold every formula to the count of a built model)."""
    return _PARAM_FORMULAS[family_of(args).name](args)


def _llama_param_counts(args) -> dict[str, int]:
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


def _gpt2_param_counts(args) -> dict[str, int]:
    D, F, L, V, P = args.dim, args.hidden_dim, args.n_layers, args.vocab_size, args.max_seq_len
    return {
        "embedding": V * D,
        POSITIONS: P * D,  # one learned vector per position
        "attention": L * (D * 3 * D + 3 * D + D * D + D),  # wqkv and wo, with biases
        "feed-forward": L * (D * F + F + F * D + D),  # w1 and w2, with biases
        "norms": (2 * L + 1) * 2 * D,  # two LayerNorms per block and the final one: weight + bias
        "output": 0 if args.tie_embeddings else V * D,
    }


_PARAM_FORMULAS = {"llama": _llama_param_counts, "gpt2": _gpt2_param_counts}


def param_counts_from_model(model: torch.nn.Module) -> dict[str, int]:
    """Parameter count by component, counted tensor by tensor (a tied matrix once)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    if any(name.startswith("pos_embeddings") for name, _ in model.named_parameters()):
        counts = {"embedding": 0, POSITIONS: 0, **counts}  # listed after the token embedding
    # named_parameters() lists a shared tensor once, under its first name (tok_embeddings).
    for name, p in model.named_parameters():
        if name.startswith("tok_embeddings"):
            part = "embedding"
        elif name.startswith("pos_embeddings"):
            part = POSITIONS
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


def _local(p: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter (a DTensor's local slice; else the tensor)."""
    to_local = getattr(p, "to_local", None)
    return to_local() if callable(to_local) else p


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
            f"model_summary needs a model (llama.model.Transformer, llama.gpt2.GPT2) or its "
            f"configuration (model.args), got {type(model_or_args).__name__}"
        )
    total = sum(params.values())
    a = args
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
    config += _FAMILY_ROWS[family_of(a).name](a)
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
        # A tensor-parallel model (llama.parallel): each rank holds its DTensor slices.
        local = sum(_local(p).numel() * p.element_size() for p in model.parameters())
        if local != nbytes:
            loaded += f" ({human_bytes(local)} on this rank)"
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


def _llama_rows(a) -> list[tuple[str, str]]:
    if a.use_scaled_rope:
        scaling = (
            f"llama3: factor {a.rope_scaling_factor:g}, low/high {a.rope_low_freq_factor:g}/"
            f"{a.rope_high_freq_factor:g}, original context {a.rope_original_max_seq_len:,}"
        )
    else:
        scaling = "none"
    return [("rope theta", f"{a.rope_theta:,g}"), ("rope scaling", scaling),
            ("norm eps", f"{a.norm_eps:g}"),
            ("q/k/v bias", "yes (Qwen2)" if a.attention_bias else "no")]


def _gpt2_rows(a) -> list[tuple[str, str]]:
    return [("positions", f"learned: {a.max_seq_len:,} vectors (pos_embeddings), no RoPE"),
            ("norm", f"LayerNorm, eps {a.norm_eps:g}"),
            ("MLP activation", "GELU (tanh approximation)"),
            ("biases", "on every linear layer and norm")]


# Configuration rows only one family has (what the shared rows above do not say).
_FAMILY_ROWS = {"llama": _llama_rows, "gpt2": _gpt2_rows}


def summary_text(s: ModelSummary) -> str:
    """The summary as plain text (what `llama-plot summary --text` prints)."""
    lines = [f"{s.name}", "", "Configuration"]
    width = max(len(k) for k, _ in s.config)
    lines += [f"  {k:<{width}}  {v}" for k, v in s.config]
    lines += ["", "Parameters"]
    name_width = max([13, *(len(part) for part in s.params)])
    for part, n in s.params.items():
        share = 100 * n / s.total_params if s.total_params else 0
        extra = "  (tied to the embedding)" if part == "output" and n == 0 else ""
        lines.append(f"  {part:<{name_width}} {n:>15,}  {share:5.1f}%{extra}")
    lines.append(f"  {'total':<{name_width}} {s.total_params:>15,}  ({human_count(s.total_params)})")
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
    "POSITIONS",
]
