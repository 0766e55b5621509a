"""lens: the logit lens as a grid of layers x positions (the numbers: llama.analysis.logit_lens)."""

from __future__ import annotations

from ..analysis import LogitLens, Tokens, stage_label
from ._common import Figure, new_figure, readable_token, tick_labels, token_fontsize


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
    ax.set_xticklabels(tick_labels(tokens), rotation=90, fontsize=token_fontsize(T))
    ax.set_xlabel("input token (the cell shows the prediction for the token after it)")
    ax.set_yticks(range(S))
    ax.set_yticklabels([stage_label(s) for s in lens.stages], fontsize=token_fontsize(S))
    ax.set_ylabel(f"stage (embed = {lens.input_label}, Li = after layers.i)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="probability of the top token")
    ax.set_title(f"{name}: logit lens — top next token at every layer (bold = the model's "
                 "final prediction)", fontsize=11)
    return fig


__all__ = ["plot_lens"]
