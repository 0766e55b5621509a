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

# Logits computed at once by the lens (64 MiB of float32); tests lower it to check chunking.
CHUNK_LOGITS = 1 << 24


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
    V = weight.shape[0]
    vectors = residual_stages(cache, stages, "lens", family.residual_input)  # each (T, D)
    T = vectors[0].shape[0]
    # At most CHUNK_LOGITS logits at once (a long prompt times the vocabulary is large):
    # rows of positions per product, and only each row's top k and one probability kept.
    rows = max(1, CHUNK_LOGITS // V)

    def decode(h: torch.Tensor, final: torch.Tensor | None):
        best_p, best_i, of_final = [], [], []
        for start in range(0, T, rows):
            # Same dtype and device as the model's own last step, so the last stage matches.
            x = h[start:start + rows].to(device=weight.device, dtype=weight.dtype)
            logits = model.output(model.norm(x)).float()  # (rows, D) -> (rows, V)
            probs = torch.softmax(logits, dim=-1).cpu()
            p, i = ranked(probs, k)  # (rows, k) each
            best_p.append(p)
            best_i.append(i)
            if final is not None:
                of_final.append(probs.gather(-1, final[start:start + rows, None])[:, 0])
        return torch.cat(best_i), torch.cat(best_p), (torch.cat(of_final) if final is not None else None)

    with torch.no_grad():
        # The last stage first: its top token (the model's prediction when the last stage
        # is the last block) is the one every other stage is scored on.
        last_i, last_p, _ = decode(vectors[-1], None)
        final = last_i[:, 0]  # (T,)
        out = [decode(h, final) for h in vectors[:-1]]
        out.append((last_i, last_p, last_p[:, 0]))  # the last stage's own top probability
    ranked_ids = torch.stack([o[0] for o in out]).numpy()  # (S, T, k)
    ranked_probs = torch.stack([o[1] for o in out]).numpy()
    final_p = torch.stack([o[2] for o in out]).numpy()  # (S, T)
    return LogitLens(stages, ranked_ids[..., 0], ranked_probs[..., 0], ranked_ids[-1, :, 0],
                     final_p, ranked_ids, ranked_probs, family.residual_input_label,
                     family.residual_input)


__all__ = ["LogitLens", "logit_lens"]
