"""saliency: how much each prompt token pushed the model toward its prediction.

Input x gradient: take the log-probability of the predicted token at one position, its
gradient with respect to the input embeddings (B, T, D), and for each token the dot
product of its embedding with that gradient. Positive = the token raised the prediction's
log-probability (to first order), negative = lowered it.

Because attention is causal, the prediction at position p cannot depend on tokens after p:
their gradient, hence their saliency, is exactly zero (the tests check this).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._common import Figure, PlotError, Tokens, check_index, new_figure, readable_token, token_fontsize


@dataclass
class Saliency:
    position: int  # the position whose next-token prediction is explained
    target_id: int  # the token explained (the model's top prediction unless given)
    target_logprob: float
    scores: np.ndarray  # (T,) input x gradient, summed over the embedding dimension
    grad_norm: np.ndarray  # (T,) L2 norm of the gradient at each token


def saliency(model: torch.nn.Module, tokens: torch.Tensor, position: int = -1,
             target: int | None = None) -> Saliency:
    """Input x gradient attribution of log p(target | tokens[:position + 1])."""
    from ..hooks import gradients  # the hooks engineer's gradient helper

    if tokens.dim() == 1:
        tokens = tokens[None]  # (T,) -> (1, T)
    T = tokens.shape[1]
    pos = check_index(position, T, "position")
    V = model.args.vocab_size
    with torch.no_grad():  # the prediction being explained, and its log-probability
        logprobs = torch.log_softmax(model(tokens)[0, pos].float(), dim=-1)  # (V,)
    if target is None:
        target = int(logprobs.argmax())
    if not isinstance(target, int) or not 0 <= target < V:
        raise PlotError(f"target token id must be an integer in [0, {V}), got {target!r}")

    def objective(logits: torch.Tensor) -> torch.Tensor:  # (B, T, V) -> scalar
        return torch.log_softmax(logits[0, pos].float(), dim=-1)[target]

    grads = gradients(model, tokens, objective, ["tok_embeddings"])
    grad = grads["tok_embeddings"][0].float().cpu()  # (T, D)
    with torch.no_grad():
        emb = model.tok_embeddings(tokens)[0].float().cpu()  # (T, D)
    logprob = float(logprobs[target])
    return Saliency(pos, target, logprob, (emb * grad).sum(-1).numpy(), grad.norm(dim=-1).numpy())


def plot_saliency(s: Saliency, tokens: Tokens, decode=None, name: str = "model") -> Figure:
    T = len(s.scores)
    target = readable_token(decode(s.target_id), max_len=20) if decode else f"#{s.target_id}"
    fig = new_figure(min(18, 4 + 0.55 * T), 6.5)
    ax, ax_g = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    colors = ["#c44e52" if v < 0 else "#4c72b0" for v in s.scores]
    ax.bar(range(T), s.scores, color=colors)
    ax.axhline(0, color="k", lw=0.8)
    ax.axvspan(s.position + 0.5, T - 0.5, color="#eeeeee", zorder=0) if s.position < T - 1 else None
    ax.set_ylabel("input × gradient")
    ax.set_title(f"{name}: which prompt tokens made “{target}” likely after position "
                 f"{s.position}\n(log p = {s.target_logprob:.2f}, p = {np.exp(s.target_logprob):.2f}; "
                 "input × gradient of log p: blue raises it, red lowers it)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax_g.bar(range(T), s.grad_norm, color="#8c8c8c")
    ax_g.set_ylabel("‖gradient‖")
    ax_g.set_xticks(range(T))
    ax_g.set_xticklabels(tokens.labels, rotation=90, fontsize=token_fontsize(T))
    ax_g.grid(axis="y", alpha=0.3)
    if s.position < T - 1:
        ax_g.set_xlabel("prompt token (grey: after the explained position, so exactly 0)")
    else:
        ax_g.set_xlabel("prompt token")
    return fig


__all__ = ["Saliency", "saliency", "plot_saliency"]
