"""architecture: a drawing of the model's block structure with its real dimensions.

The drawing follows llama/model.py top to bottom: embedding, N pre-norm blocks (attention
then SwiGLU feed-forward, each added to the residual stream), final norm, output. Each box
shows its matrix shape for this configuration; grey labels on the right name the hook
points (llama.hooks) where that value can be captured.
"""

from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..analysis import human_count, param_counts_from_args
from ._common import Figure, new_figure

_COL = {
    "io": "#eeeeee", "emb": "#f6d8ae", "norm": "#e3e3f7", "attn": "#cfe2f3",
    "ffn": "#d9ead3", "add": "#ffffff", "rope": "#fff2cc", "block": "#fafafa",
}


def plot_architecture(args, name: str = "model") -> Figure:
    a = args
    D, F, V, H, KV, Hd, L = (a.dim, a.hidden_dim, a.vocab_size, a.n_heads, a.n_kv_heads,
                             a.head_dim, a.n_layers)
    counts = param_counts_from_args(a)
    per_block = (counts["attention"] + counts["feed-forward"]) // L + 2 * D

    fig = new_figure(10, 10.5)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)

    ax.axis("off")

    cx, w = 4.2, 5.2  # centre and width of the main column

    def box(y, text, color, width=w, x=cx, h=0.8, fontsize=10, weight="normal"):
        ax.add_patch(FancyBboxPatch((x - width / 2, y - h / 2), width, h,
                                    boxstyle="round,pad=0.02,rounding_size=0.15",
                                    fc=color, ec="#555555", lw=1))
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight=weight)

    def arrow(y0, y1, x=cx):
        ax.add_patch(FancyArrowPatch((x, y0), (x, y1), arrowstyle="-|>", mutation_scale=12,
                                     color="#333333", lw=1.2))

    def hook(y, text):
        ax.text(9.95, y, text, ha="right", va="center", fontsize=8, color="#777777",
                style="italic")

    def add(y):
        ax.add_patch(FancyBboxPatch((cx - 0.25, y - 0.25), 0.5, 0.5,
                                    boxstyle="circle,pad=0", fc="white", ec="#333333"))
        ax.text(cx, y, "+", ha="center", va="center", fontsize=13, fontweight="bold")

    def residual(y_from, y_to):
        # The skip connection: leaves the stream above the norm, rejoins at the "+".
        xl = cx - w / 2 - 0.45
        ax.plot([cx, xl, xl], [y_from, y_from, y_to], color="#999999", lw=1.5)
        ax.add_patch(FancyArrowPatch((xl, y_to), (cx - 0.27, y_to), arrowstyle="-|>",
                                     mutation_scale=10, color="#999999", lw=1.5))

    y = 26.8
    box(y, "token ids  (B, T)", _COL["io"])
    arrow(y - 0.4, y - 0.9)
    y -= 1.3
    box(y, f"tok_embeddings   {V:,} × {D:,}   →   (B, T, {D})", _COL["emb"])
    hook(y, "tok_embeddings")

    # The repeated block (its frame is drawn once the bottom is known).
    top = y - 0.8
    ax.text(cx + w / 2 + 0.7, top - 0.15, f"TransformerBlock × {L}\n"
            f"{human_count(per_block)} parameters each", ha="right", va="top", fontsize=10,
            fontweight="bold")
    arrow(y - 0.4, top - 1.3)

    y = top - 1.7
    split = y + 0.5
    box(y, f"attention_norm  (RMSNorm, {D})", _COL["norm"])
    hook(y, "layers.i.attention_norm")
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    third = w / 3 - 0.08
    for k, (nm, out) in enumerate((("wq", f"{H}×{Hd}"), ("wk", f"{KV}×{Hd}"), ("wv", f"{KV}×{Hd}"))):
        box(y, f"{nm}  {D}→{out}", _COL["attn"], width=third, x=cx - w / 3 + k * w / 3,
            fontsize=9)
    hook(y, "attention.q, .k, .v")
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    box(y, f"RoPE on q and k (θ = {a.rope_theta:,g}"
        + (f", llama3 ×{a.rope_scaling_factor:g})" if a.use_scaled_rope else ")"), _COL["rope"])
    hook(y, "attention.q_rot, .k_rot")
    arrow(y - 0.4, y - 0.8)
    y -= 1.45
    gqa = f"{H // KV} query heads share each k/v head" if KV != H else "one k/v head per query head"
    box(y, f"softmax(q kᵀ / √{Hd} + causal mask) · v\n{H} heads; {gqa}; keys and values cached",
        _COL["attn"], h=1.1, fontsize=9.5)
    hook(y + 0.2, "attention.scores, .probs")
    hook(y - 0.25, "attention.heads")
    arrow(y - 0.55, y - 0.95)
    y -= 1.4
    box(y, f"wo  {H}×{Hd}→{D}", _COL["attn"])
    hook(y, "attention.out")
    arrow(y - 0.4, y - 0.72)
    y -= 1.0
    add(y)
    residual(split, y)
    hook(y, "layers.i.resid_mid")
    arrow(y - 0.27, y - 0.75)

    y -= 1.15
    split = y + 0.5
    box(y, f"ffn_norm  (RMSNorm, {D})", _COL["norm"])
    hook(y, "layers.i.ffn_norm")
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    box(y, f"w1 (gate)  {D}→{F:,}", _COL["ffn"], width=w / 2 - 0.1, x=cx - w / 4, fontsize=9)
    box(y, f"w3 (up)  {D}→{F:,}", _COL["ffn"], width=w / 2 - 0.1, x=cx + w / 4, fontsize=9)
    hook(y, "feed_forward.gate, .up")
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    box(y, f"silu(gate) × up   ({F:,})", _COL["ffn"])
    hook(y, "feed_forward.act")
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    box(y, f"w2 (down)  {F:,}→{D}", _COL["ffn"])
    hook(y, "feed_forward.out")
    arrow(y - 0.4, y - 0.72)
    y -= 1.0
    add(y)
    residual(split, y)
    hook(y, "layers.i.resid_post")
    bottom = y - 0.6
    ax.add_patch(FancyBboxPatch((cx - w / 2 - 0.8, bottom), w + 1.6, top - bottom,
                                boxstyle="round,pad=0.05,rounding_size=0.3",
                                fc=_COL["block"], ec="#333333", lw=1.6, ls="--", zorder=0))

    arrow(y - 0.27, bottom - 0.9)
    y = bottom - 1.3
    box(y, f"norm  (RMSNorm, {D})", _COL["norm"])
    hook(y, "norm")
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    tied = "tied: same matrix as tok_embeddings" if a.tie_embeddings else "own matrix"
    box(y, f"output  {D}→{V:,}   ({tied})", _COL["emb"])
    arrow(y - 0.4, y - 0.8)
    y -= 1.3
    box(y, f"logits  (B, T, {V:,})  →  next-token probabilities", _COL["io"])
    hook(y, "logits")
    ax.set_ylim(y - 0.6, 27.4)

    total = sum(counts.values())
    fig.suptitle(f"{name}: {L} layers, width {D}, {H} heads ({KV} k/v), FFN {F:,}, "
                 f"vocabulary {V:,} — {human_count(total)} parameters", fontsize=12)
    return fig


__all__ = ["plot_architecture"]
