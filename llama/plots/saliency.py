"""saliency: input x gradient per prompt token as bars (the numbers: llama.analysis.saliency)."""

from __future__ import annotations

import numpy as np

from ..analysis import Saliency, Tokens
from ._common import Figure, new_figure, readable_token, tick_labels, token_fontsize


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
    ax_g.set_xticklabels(tick_labels(tokens), rotation=90, fontsize=token_fontsize(T))
    ax_g.grid(axis="y", alpha=0.3)
    if s.position < T - 1:
        ax_g.set_xlabel("prompt token (grey: after the explained position, so exactly 0)")
    else:
        ax_g.set_xlabel("prompt token")
    return fig


__all__ = ["plot_saliency"]
