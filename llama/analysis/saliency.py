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

from .common import AnalysisError, check_index


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
    from ..hooks import gradients

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
        raise AnalysisError(f"target token id must be an integer in [0, {V}), got {target!r}")

    def objective(logits: torch.Tensor) -> torch.Tensor:  # (B, T, V) -> scalar
        return torch.log_softmax(logits[0, pos].float(), dim=-1)[target]

    grads = gradients(model, tokens, objective, ["tok_embeddings"])
    grad = grads["tok_embeddings"][0].float().cpu()  # (T, D)
    with torch.no_grad():
        emb = model.tok_embeddings(tokens)[0].float().cpu()  # (T, D)
    logprob = float(logprobs[target])
    return Saliency(pos, target, logprob, (emb * grad).sum(-1).numpy(), grad.norm(dim=-1).numpy())


__all__ = ["Saliency", "saliency"]
