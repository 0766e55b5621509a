"""The numbers behind every view of the model, apart from any drawing.

Each function takes a model, its configuration, or the intermediates captured from a run
(a plain dict name -> tensor, from `run_and_capture` or a capture file) and returns a small
dataclass of tensors or numpy arrays. Nothing here imports matplotlib or any front end:
llama.plots draws these results, llama-repl prints them, the studio sends them to a page.

    from llama.analysis import run_and_capture, logit_lens
    cache = run_and_capture(model, tokens, ["tok_embeddings", "layers.*.resid_post"])
    lens = logit_lens(model, cache)          # LogitLens: top token per layer and position

The registry (`VIEW_KINDS`, `compute_view`) lists every view kind with what it needs, the
hook names it reads and its options; front ends read it instead of keeping lists of their
own.
"""

from .activations import ActivationStats, activation_stats
from .attention import AttentionMaps, attention_maps, first_token_share, head_map
from .capture import (
    DEFAULT_RESIDUAL_INPUT,
    n_layers_in,
    parse_stages,
    residual_stages,
    run_and_capture,
    stage_label,
    stage_names,
)
from .common import AnalysisError, human_bytes, human_count
from .embeddings import TokenEmbeddings, token_embeddings
from .lens import LogitLens, logit_lens
from .params import (
    PARAM_VIEWS,
    ParamStats,
    TensorStats,
    block_weights,
    param_stats,
    tensor_stats,
    weight_kinds,
)
from .pca import PCA, PCA_VIEWS, PCAResult, pca, pca_stages
from .positions import PositionEmbeddings, position_embeddings
from .registry import (
    ATTENTION_VIEWS,
    CONFIG,
    MODEL,
    PROMPT,
    RESIDUAL_INPUT,
    VIEW_KINDS,
    Option,
    View,
    ViewKind,
    ViewSource,
    compute_view,
    option_names,
    view_kind,
)
from .rope import ILLUSTRATIVE_SCALING, RopeTable, rope_table
from .saliency import Saliency, saliency
from .summary import (
    ModelSummary,
    model_summary,
    param_counts_from_args,
    param_counts_from_model,
    summary_text,
)
from .tokens import (
    Tokens,
    plain_tokens,
    token_text,
    tokens_from_pieces,
    tokens_from_tokenizer,
    visible_token,
)
from .topk import TopK, top_k

__all__ = [
    "AnalysisError", "human_bytes", "human_count",
    "Tokens", "plain_tokens", "token_text", "tokens_from_pieces", "tokens_from_tokenizer",
    "visible_token",
    "run_and_capture", "n_layers_in", "parse_stages", "residual_stages", "stage_label",
    "stage_names", "DEFAULT_RESIDUAL_INPUT",
    "ActivationStats", "activation_stats",
    "AttentionMaps", "attention_maps", "first_token_share", "head_map",
    "LogitLens", "logit_lens",
    "PCA", "PCAResult", "PCA_VIEWS", "pca", "pca_stages",
    "ParamStats", "TensorStats", "PARAM_VIEWS", "param_stats", "tensor_stats", "weight_kinds",
    "block_weights",
    "PositionEmbeddings", "position_embeddings",
    "TokenEmbeddings", "token_embeddings",
    "RopeTable", "ILLUSTRATIVE_SCALING", "rope_table",
    "Saliency", "saliency",
    "ModelSummary", "model_summary", "param_counts_from_args", "param_counts_from_model",
    "summary_text",
    "TopK", "top_k",
    "PROMPT", "MODEL", "CONFIG", "ATTENTION_VIEWS", "RESIDUAL_INPUT", "Option", "View", "ViewKind", "ViewSource",
    "VIEW_KINDS", "compute_view", "option_names", "view_kind",
]
