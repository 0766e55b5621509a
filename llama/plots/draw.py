"""One renderer per registered view kind: a computed View in, a matplotlib Figure out.

    from llama.analysis import ViewSource, compute_view
    from llama.plots import draw, save_figure
    save_figure(draw(compute_view("lens", ViewSource.from_model(model, tok, ids))), "lens.png")
"""

from __future__ import annotations

from typing import Callable

from ..analysis import View
from ._common import Figure, PlotError
from .activations import plot_activations
from .architecture import plot_architecture
from .attention import plot_attention_grid, plot_attention_head, plot_first_token_share
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


def _decode(v: View):
    """id -> text of a predicted token, or None to show "#id" (no tokenizer)."""
    return (lambda i: v.labels[int(i)]) if v.labels else None


def _attention(v: View) -> Figure:
    o = v.options
    if o["view"] == "sink":
        return plot_first_token_share(v.data, v.tokens, v.name)
    if o["view"] == "head":
        return plot_attention_head(v.data, v.tokens, o["layer"], o["head"], v.name)
    return plot_attention_grid(v.data, v.tokens, o["layer"], v.name)


RENDERERS: dict[str, Callable[[View], Figure]] = {
    "summary": lambda v: plot_summary(v.data),
    "tokens": lambda v: plot_tokens(v.data, v.name, prompt=v.prompt),
    "pca": lambda v: plot_pca(v.data, v.tokens, v.name),
    "attention": _attention,
    "activations": lambda v: plot_activations(v.data, v.tokens, v.name),
    "lens": lambda v: plot_lens(v.data, v.tokens, _decode(v), v.name),
    "topk": lambda v: plot_topk(v.data, v.tokens, _decode(v), v.name),
    "saliency": lambda v: plot_saliency(v.data, v.tokens, _decode(v), v.name),
    "params": lambda v: plot_params(v.data, view=v.options["view"], name=v.name),
    "rope": lambda v: plot_rope(v.data, v.name),
    "architecture": lambda v: plot_architecture(v.data, v.name),
    "positions": lambda v: plot_positions(v.data, v.name),
    "embeddings": lambda v: plot_embeddings(v.data, v.tokens, v.name),
}


def draw(view: View) -> Figure:
    """The figure of a view computed by llama.analysis.compute_view."""
    renderer = RENDERERS.get(view.kind)
    if renderer is None:
        raise PlotError(f"no renderer for view kind {view.kind!r}")
    return renderer(view)


__all__ = ["RENDERERS", "draw"]
