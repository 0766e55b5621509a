"""lens: the logit lens, what the model would predict if it stopped after each layer.

The residual stream after block i is passed through the model's own final norm and
output projection, exactly as the last block's output is, and the softmax of the result
read off. At the last stage this *is* the model's prediction (tests check it to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..family import family_of
from ..generate import ranked
from .capture import Cache, n_layers_in, residual_stages
from .common import AnalysisError


@dataclass
class LogitLens:
    stages: list[int]  # 0 = embeddings, i + 1 = after block i
    top_ids: np.ndarray  # (stages, T) most likely next token at each stage
    top_probs: np.ndarray  # (stages, T) its probability
    final_ids: np.ndarray  # (T,) the top token at the last stage
    final_token_probs: np.ndarray  # (stages, T) probability of final_ids at each stage
    ranked_ids: np.ndarray | None = None  # (stages, T, k) the k best, best first
    ranked_probs: np.ndarray | None = None  # (stages, T, k)
    input_label: str = "embeddings"  # what stage 0 is (llama.family: residual_input_label)
    residual_input: str = "tok_embeddings"  # the hook stage 0 was read from


def logit_lens(model: torch.nn.Module, cache: Cache, stages: list[int] | None = None,
               k: int = 1) -> LogitLens:
    """Decode every residual stage with model.norm and model.output (no other weights).

    k: how many candidates per cell to keep in ranked_ids / ranked_probs (the top one is
    also in top_ids / top_probs).
    Stage 0 is the residual stream entering layers.0, from the model family's hook
    (llama.family: tok_embeddings in a Llama, embeddings = token + position in GPT-2).
    """
    family = family_of(model)
    L = n_layers_in(cache)
    if L == 0:
        raise AnalysisError("lens needs layers.N.resid_post; the capture has no layers")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise AnalysisError(f"k must be an integer >= 1, got {k!r}")
    stages = list(range(L + 1)) if stages is None else list(stages)
    weight = model.output.weight
    best_ids, best_p, all_probs = [], [], []
    with torch.no_grad():
        for h in residual_stages(cache, stages, "lens", family.residual_input):  # each (T, D)
            # Same dtype and device as the model's own last step, so the last stage matches.
            h = h.to(device=weight.device, dtype=weight.dtype)
            logits = model.output(model.norm(h)).float()  # (T, D) -> (T, V)
            probs = torch.softmax(logits, dim=-1).cpu()
            p, i = ranked(probs, k)  # (T, k) each
            best_ids.append(i.numpy())
            best_p.append(p.numpy())
            all_probs.append(probs)
    ranked_ids, ranked_probs = np.stack(best_ids), np.stack(best_p)  # (S, T, k)
    final = torch.as_tensor(ranked_ids[-1, :, 0])
    final_p = np.stack([pr.gather(-1, final[:, None])[:, 0].numpy() for pr in all_probs])
    return LogitLens(stages, ranked_ids[..., 0], ranked_probs[..., 0], ranked_ids[-1, :, 0],
                     final_p, ranked_ids, ranked_probs, family.residual_input_label,
                     family.residual_input)


__all__ = ["LogitLens", "logit_lens"]
