"""lens: the logit lens — what the model would predict if it stopped after each layer.

The residual stream after block i is passed through the model's own final RMSNorm and
output projection, exactly as the last block's output is, and the softmax of the result
read off. At the last stage this *is* the model's prediction (tests check it to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._capture import Cache, n_layers_in, residual_stages, stage_label
from ._common import Figure, PlotError, Tokens, new_figure, readable_token, token_fontsize


@dataclass
class LogitLens:
    stages: list[int]  # 0 = embeddings, i + 1 = after block i
    top_ids: np.ndarray  # (stages, T) most likely next token at each stage
    top_probs: np.ndarray  # (stages, T) its probability
    final_ids: np.ndarray  # (T,) the top token at the last stage
    final_token_probs: np.ndarray  # (stages, T) probability of final_ids at each stage


def logit_lens(model: torch.nn.Module, cache: Cache, stages: list[int] | None = None) -> LogitLens:
    """Decode every residual stage with model.norm and model.output (no other weights)."""
    L = n_layers_in(cache)
    if L == 0:
        raise PlotError("lens needs layers.N.resid_post; the capture has no layers")
    stages = list(range(L + 1)) if stages is None else list(stages)
    weight = model.norm.weight
    top_ids, top_p, all_probs = [], [], []
    with torch.no_grad():
        for h in residual_stages(cache, stages, "lens"):  # each (T, D)
            # Same dtype and device as the model's own last step, so the last stage matches.
            h = h.to(device=weight.device, dtype=weight.dtype)
            logits = model.output(model.norm(h)).float()  # (T, D) -> (T, V)
            probs = torch.softmax(logits, dim=-1)
            p, i = probs.max(dim=-1)
            top_ids.append(i.cpu().numpy())
            top_p.append(p.cpu().numpy())
            all_probs.append(probs.cpu())
    final = torch.as_tensor(top_ids[-1])
    final_p = np.stack([pr.gather(-1, final[:, None])[:, 0].numpy() for pr in all_probs])
    return LogitLens(stages, np.stack(top_ids), np.stack(top_p), top_ids[-1], final_p)


def plot_lens(lens: LogitLens, tokens: Tokens, decode=None, name: str = "model") -> Figure:
    """decode(id) -> text of a predicted token (a tokenizer's); None shows "#id"."""
    S, T = lens.top_ids.shape

    def label(i: int) -> str:
        return readable_token(decode(int(i)), max_len=9) if decode else f"#{int(i)}"

    fig = new_figure(min(22, 3 + 0.95 * T), min(16, 2.2 + 0.34 * S))
    ax = fig.add_subplot()
    im = ax.imshow(lens.top_probs, aspect="auto", cmap="Blues", vmin=0, vmax=1,
                   interpolation="nearest", origin="lower")
    fs = 7 if T <= 16 else 6
    for s in range(S):
        for t in range(T):
            p = lens.top_probs[s, t]
            ax.text(t, s, label(lens.top_ids[s, t]), ha="center", va="center", fontsize=fs,
                    color="white" if p > 0.6 else "black",
                    fontweight="bold" if lens.top_ids[s, t] == lens.final_ids[t] else "normal")
    ax.set_xticks(range(T))
    ax.set_xticklabels(tokens.labels, rotation=90, fontsize=token_fontsize(T))
    ax.set_xlabel("input token (the cell shows the prediction for the token after it)")
    ax.set_yticks(range(S))
    ax.set_yticklabels([stage_label(s) for s in lens.stages], fontsize=token_fontsize(S))
    ax.set_ylabel("stage (embed = embeddings, Li = after layers.i)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="probability of the top token")
    ax.set_title(f"{name}: logit lens — top next token at every layer (bold = the model's "
                 "final prediction)", fontsize=11)
    return fig


__all__ = ["LogitLens", "logit_lens", "plot_lens"]
