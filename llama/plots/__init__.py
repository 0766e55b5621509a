"""Plots of everything inside a LLaMA model, for notebooks and for `llama-plot`.

Each kind has a function that computes the numbers (returning arrays or a small
dataclass you can test or print) and one that draws them (returning a matplotlib Figure;
nothing is shown, nothing global is touched). In a notebook:

    from llama.plots import run_and_capture, logit_lens, plot_lens, plain_tokens
    cache = run_and_capture(model, tokens, ["tok_embeddings", "layers.*.resid_post"])
    fig = plot_lens(logit_lens(model, cache), tokens=plain_tokens(ids))
    fig.savefig("lens.png")

Kinds (see docs/PLOTS.md): summary, tokens, pca, attention, activations, lens, topk,
saliency, params, rope, architecture.
"""

from ._capture import parse_stages, run_and_capture, stage_label, stage_names
from ._common import (
    PlotError,
    Tokens,
    plain_tokens,
    readable_token,
    save_figure,
    tokens_from_pieces,
    tokens_from_tokenizer,
)
from .activations import ActivationStats, activation_stats, plot_activations
from .architecture import plot_architecture
from .attention import (
    AttentionMaps,
    attention_maps,
    first_token_share,
    plot_attention_grid,
    plot_attention_head,
    plot_first_token_share,
)
from .lens import LogitLens, logit_lens, plot_lens
from .params import ParamStats, param_stats, plot_params, tensor_stats
from .pca import PCA, PCAResult, pca, pca_stages, plot_pca
from .rope import RopeTable, plot_rope, rope_table
from .saliency import Saliency, plot_saliency, saliency
from .summary import ModelSummary, model_summary, plot_summary, summary_text
from .tokens import plot_tokens
from .topk import TopK, plot_topk, top_k

KINDS = ("summary", "tokens", "pca", "attention", "activations", "lens", "topk", "saliency",
         "params", "rope", "architecture")

# Hook names each kind reads (llama.hooks glob patterns); None: needs no forward pass.
CAPTURE_NAMES = {
    "pca": ["tok_embeddings", "layers.*.resid_post"],
    "attention": ["layers.*.attention.probs"],
    "activations": ["tok_embeddings", "layers.*.resid_post", "layers.*.feed_forward.act"],
    "lens": ["tok_embeddings", "layers.*.resid_post", "logits"],
    "topk": ["logits"],
}

__all__ = [
    "KINDS", "CAPTURE_NAMES", "PlotError", "Tokens", "plain_tokens", "readable_token",
    "save_figure", "tokens_from_pieces", "tokens_from_tokenizer", "parse_stages",
    "run_and_capture", "stage_label", "stage_names",
    "ActivationStats", "activation_stats", "plot_activations", "plot_architecture",
    "AttentionMaps", "attention_maps", "first_token_share", "plot_attention_grid",
    "plot_attention_head", "plot_first_token_share", "LogitLens", "logit_lens", "plot_lens",
    "ParamStats", "param_stats", "plot_params", "tensor_stats", "PCA", "PCAResult", "pca",
    "pca_stages", "plot_pca", "RopeTable", "plot_rope", "rope_table", "Saliency",
    "plot_saliency", "saliency", "ModelSummary", "model_summary", "plot_summary",
    "summary_text", "plot_tokens", "TopK", "plot_topk", "top_k",
]
