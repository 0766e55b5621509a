"""Plots of everything inside the model, for notebooks and for `llama-plot`.

Each kind of plot draws a result of llama.analysis (which computes the numbers and never
imports matplotlib) and returns a matplotlib Figure; nothing is shown, nothing global is
touched. In a notebook:

    from llama.analysis import run_and_capture, logit_lens, plain_tokens
    from llama.plots import plot_lens
    cache = run_and_capture(model, tokens, ["tok_embeddings", "layers.*.resid_post"])
    fig = plot_lens(logit_lens(model, cache), tokens=plain_tokens(ids))
    fig.savefig("lens.png")

or, through the registry of view kinds, `draw(compute_view("lens", source))`. Kinds (see
docs/PLOTS.md): the keys of llama.analysis.VIEW_KINDS.

The analysis names are importable from here too (`from llama.plots import logit_lens`),
as they were before the numbers moved to llama.analysis; new code imports them from there.
"""

from ..analysis import *  # noqa: F401,F403 - the analysis names, for code written before it
from ._common import PlotError, readable_token, save_figure
from .activations import plot_activations
from .architecture import plot_architecture
from .attention import plot_attention_grid, plot_attention_head, plot_first_token_share
from .draw import RENDERERS, draw
from .embeddings import plot_embeddings
from .lens import plot_lens
from .params import plot_params
from .pca import plot_pca
from .positions import plot_positions
from .rope import plot_rope
from .saliency import plot_saliency
from .summary import plot_summary
from .tokens import plot_tokens
from .topk import plot_topk

__all__ = [
    "PlotError", "readable_token", "save_figure", "draw", "RENDERERS",
    "plot_activations", "plot_architecture", "plot_attention_grid", "plot_attention_head",
    "plot_first_token_share", "plot_lens", "plot_params", "plot_pca", "plot_rope",
    "plot_positions", "plot_embeddings",
    "plot_saliency", "plot_summary", "plot_tokens", "plot_topk",
]
