"""topk: the k most likely next tokens after a position, as a bar chart (the numbers:
llama.analysis.top_k)."""

from __future__ import annotations

from ..analysis import Tokens, TopK
from ._common import Figure, new_figure, readable_token, tick_labels


def plot_topk(r: TopK, tokens: Tokens, decode=None, name: str = "model") -> Figure:
    k = len(r.ids)
    labels = [repr_label(decode, i) for i in r.ids]
    fig = new_figure(8.5, 1.6 + 0.42 * k)
    ax = fig.add_subplot()
    bars = ax.barh(range(k), r.probs, color="#4c72b0")
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, min(1.0, max(r.probs) * 1.25 + 0.02))
    ax.set_xlabel("probability")
    for bar, p, lg in zip(bars, r.probs, r.logits):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {100 * p:.1f}%  (logit {lg:.1f})",
                va="center", fontsize=9)
    context = "".join(tick_labels(tokens)[max(0, r.position - 7) : r.position + 1]).replace("␣", " ")
    more = "…" if r.position > 7 else ""
    ax.set_title(f"{name}: top {k} next tokens after position {r.position}\n"
                 f"“{more}{context}” → ?  (␣ = leading space)", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return fig


def repr_label(decode, i) -> str:
    return f"{readable_token(decode(int(i)), max_len=20)}  #{int(i)}" if decode else f"#{int(i)}"


__all__ = ["plot_topk"]
