"""architecture: a drawing of the model's block structure with its real dimensions.

The drawing follows the model's source top to bottom: embedding, N pre-norm blocks
(attention then the feed-forward, each added to the residual stream), final norm, output.
Each box shows its matrix shape for this configuration; grey labels on the right name the
hook points (llama.hooks) where that value can be captured.

What a block contains depends on the model family (llama.family): Llama (llama/model.py)
has RMSNorm, separate wq/wk/wv, RoPE on q and k and a SwiGLU feed-forward; GPT-2
(llama/gpt2.py) adds learned position vectors to the input once, and has LayerNorm, one
fused wqkv projection, a GELU MLP and biases everywhere. `_DRAWINGS` maps each family to
the function that draws its parts; the frame, arrows and residual connections are shared.
"""

from __future__ import annotations

from typing import Callable

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..analysis import human_count, param_counts_from_args
from ..family import family_of
from ._common import Figure, new_figure

_COL = {
    "io": "#eeeeee", "emb": "#f6d8ae", "norm": "#e3e3f7", "attn": "#cfe2f3",
    "ffn": "#d9ead3", "add": "#ffffff", "rope": "#fff2cc", "block": "#fafafa",
}


class _Canvas:
    """The drawing primitives, on one axis: boxes, arrows, hook labels, "+" nodes."""

    cx, w = 4.2, 5.2  # centre and width of the main column

    def __init__(self, ax) -> None:
        self.ax = ax

    def box(self, y, text, color, width=None, x=None, h=0.8, fontsize=10, weight="normal"):
        width = self.w if width is None else width
        x = self.cx if x is None else x
        self.ax.add_patch(FancyBboxPatch((x - width / 2, y - h / 2), width, h,
                                         boxstyle="round,pad=0.02,rounding_size=0.15",
                                         fc=color, ec="#555555", lw=1))
        self.ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight=weight)

    def arrow(self, y0, y1, x=None):
        x = self.cx if x is None else x
        self.ax.add_patch(FancyArrowPatch((x, y0), (x, y1), arrowstyle="-|>", mutation_scale=12,
                                          color="#333333", lw=1.2))

    def hook(self, y, text):
        self.ax.text(9.95, y, text, ha="right", va="center", fontsize=8, color="#777777",
                     style="italic")

    def add(self, y):
        cx = self.cx
        self.ax.add_patch(FancyBboxPatch((cx - 0.25, y - 0.25), 0.5, 0.5,
                                         boxstyle="circle,pad=0", fc="white", ec="#333333"))
        self.ax.text(cx, y, "+", ha="center", va="center", fontsize=13, fontweight="bold")

    def residual(self, y_from, y_to):
        # The skip connection: leaves the stream above the norm, rejoins at the "+".
        cx, w = self.cx, self.w
        xl = cx - w / 2 - 0.45
        self.ax.plot([cx, xl, xl], [y_from, y_from, y_to], color="#999999", lw=1.5)
        self.ax.add_patch(FancyArrowPatch((xl, y_to), (cx - 0.27, y_to), arrowstyle="-|>",
                                          mutation_scale=10, color="#999999", lw=1.5))


def plot_architecture(args, name: str = "model") -> Figure:
    family = family_of(args)
    a = args
    D, F, V, L = a.dim, a.hidden_dim, a.vocab_size, a.n_layers
    counts = param_counts_from_args(a)
    draw = _DRAWINGS[family.name]

    fig = new_figure(10, 10.5)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.axis("off")
    c = _Canvas(ax)
    cx, w = c.cx, c.w

    y = 26.8
    c.box(y, "token ids  (B, T)", _COL["io"])
    c.arrow(y - 0.4, y - 0.9)
    y = draw.embedding(c, a, y - 1.3)

    # The repeated block (its frame is drawn once the bottom is known).
    top = y - 0.8
    per_block = (counts["attention"] + counts["feed-forward"]) // L + draw.norm_params_per_block(a)
    ax.text(cx + w / 2 + 0.7, top - 0.15, f"{draw.block_name} × {L}\n"
            f"{human_count(per_block)} parameters each", ha="right", va="top", fontsize=10,
            fontweight="bold")
    c.arrow(y - 0.4, top - 1.3)

    y = top - 1.7
    split = y + 0.5
    c.box(y, f"attention_norm  ({family.norm}, {D})", _COL["norm"])
    c.hook(y, "layers.i.attention_norm")
    c.arrow(y - 0.4, y - 0.8)
    y = draw.attention(c, a, y - 1.3)
    c.add(y)
    c.residual(split, y)
    c.hook(y, "layers.i.resid_mid")
    c.arrow(y - 0.27, y - 0.75)

    y -= 1.15
    split = y + 0.5
    c.box(y, f"ffn_norm  ({family.norm}, {D})", _COL["norm"])
    c.hook(y, "layers.i.ffn_norm")
    c.arrow(y - 0.4, y - 0.8)
    y = draw.feed_forward(c, a, y - 1.3)
    c.add(y)
    c.residual(split, y)
    c.hook(y, "layers.i.resid_post")
    bottom = y - 0.6
    ax.add_patch(FancyBboxPatch((cx - w / 2 - 0.8, bottom), w + 1.6, top - bottom,
                                boxstyle="round,pad=0.05,rounding_size=0.3",
                                fc=_COL["block"], ec="#333333", lw=1.6, ls="--", zorder=0))

    c.arrow(y - 0.27, bottom - 0.9)
    y = bottom - 1.3
    c.box(y, f"norm  ({family.norm}, {D})", _COL["norm"])
    c.hook(y, "norm")
    c.arrow(y - 0.4, y - 0.8)
    y -= 1.3
    tied = "tied: same matrix as tok_embeddings" if a.tie_embeddings else "own matrix"
    c.box(y, f"output  {D}→{V:,}   ({tied})", _COL["emb"])
    c.arrow(y - 0.4, y - 0.8)
    y -= 1.3
    c.box(y, f"logits  (B, T, {V:,})  →  next-token probabilities", _COL["io"])
    c.hook(y, "logits")
    ax.set_ylim(y - 0.6, 27.4)

    total = sum(counts.values())
    fig.suptitle(f"{name}: {L} layers, width {D}, {draw.heads(a)}, FFN {F:,}, "
                 f"vocabulary {V:,} — {human_count(total)} parameters", fontsize=12)
    return fig


# ----------------------------------------------------------------------------------
# The parts each family draws: each takes the canvas, the configuration and the y where
# the part starts, and returns the y of the "+" (or of the next box) that follows it.
# ----------------------------------------------------------------------------------


class _Llama:
    """llama/model.py: TransformerBlock with RoPE and SwiGLU."""

    block_name = "TransformerBlock"

    @staticmethod
    def norm_params_per_block(a) -> int:
        return 2 * a.dim  # attention_norm and ffn_norm weights

    @staticmethod
    def heads(a) -> str:
        return f"{a.n_heads} heads ({a.n_kv_heads} k/v)"

    @staticmethod
    def embedding(c: _Canvas, a, y: float) -> float:
        c.box(y, f"tok_embeddings   {a.vocab_size:,} × {a.dim:,}   →   (B, T, {a.dim})", _COL["emb"])
        c.hook(y, "tok_embeddings")
        return y

    @staticmethod
    def attention(c: _Canvas, a, y: float) -> float:
        w, cx = c.w, c.cx
        D, H, KV, Hd = a.dim, a.n_heads, a.n_kv_heads, a.head_dim
        third = w / 3 - 0.08
        for k, (nm, out) in enumerate((("wq", f"{H}×{Hd}"), ("wk", f"{KV}×{Hd}"), ("wv", f"{KV}×{Hd}"))):
            c.box(y, f"{nm}  {D}→{out}", _COL["attn"], width=third, x=cx - w / 3 + k * w / 3,
                  fontsize=9)
        c.hook(y, "attention.q, .k, .v")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.3
        c.box(y, f"RoPE on q and k (θ = {a.rope_theta:,g}"
              + (f", llama3 ×{a.rope_scaling_factor:g})" if a.use_scaled_rope else ")"), _COL["rope"])
        c.hook(y, "attention.q_rot, .k_rot")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.45
        gqa = f"{H // KV} query heads share each k/v head" if KV != H else "one k/v head per query head"
        return _attention_core(c, y, f"{H} heads; {gqa}; keys and values cached", Hd,
                               f"wo  {H}×{Hd}→{D}")

    @staticmethod
    def feed_forward(c: _Canvas, a, y: float) -> float:
        w, cx = c.w, c.cx
        D, F = a.dim, a.hidden_dim
        c.box(y, f"w1 (gate)  {D}→{F:,}", _COL["ffn"], width=w / 2 - 0.1, x=cx - w / 4, fontsize=9)
        c.box(y, f"w3 (up)  {D}→{F:,}", _COL["ffn"], width=w / 2 - 0.1, x=cx + w / 4, fontsize=9)
        c.hook(y, "feed_forward.gate, .up")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.3
        c.box(y, f"silu(gate) × up   ({F:,})", _COL["ffn"])
        c.hook(y, "feed_forward.act")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.3
        c.box(y, f"w2 (down)  {F:,}→{D}", _COL["ffn"])
        c.hook(y, "feed_forward.out")
        c.arrow(y - 0.4, y - 0.72)
        return y - 1.0


class _GPT2:
    """llama/gpt2.py: GPT2Block with learned positions, fused wqkv, GELU, biases."""

    block_name = "GPT2Block"

    @staticmethod
    def norm_params_per_block(a) -> int:
        return 4 * a.dim  # two LayerNorms, each a weight and a bias

    @staticmethod
    def heads(a) -> str:
        return f"{a.n_heads} heads"  # every head has its own keys and values

    @staticmethod
    def embedding(c: _Canvas, a, y: float) -> float:
        w, cx = c.w, c.cx
        D = a.dim
        c.box(y, f"tok_embeddings  {a.vocab_size:,} × {D:,}", _COL["emb"], width=w / 2 - 0.1,
              x=cx - w / 4, fontsize=9)
        c.box(y, f"pos_embeddings  {a.max_seq_len:,} × {D:,}", _COL["emb"], width=w / 2 - 0.1,
              x=cx + w / 4, fontsize=9)
        c.hook(y, "tok_embeddings, pos_embeddings")
        c.arrow(y - 0.4, y - 0.72)
        y -= 1.0
        c.add(y)
        c.ax.text(cx + 0.4, y, f"token + position   →   (B, T, {D})", ha="left", va="center",
                  fontsize=9)
        c.hook(y, "embeddings")
        return y + 0.15  # the "+" is smaller than a box: the arrow below starts at its edge

    @staticmethod
    def attention(c: _Canvas, a, y: float) -> float:
        D, H, Hd = a.dim, a.n_heads, a.head_dim
        c.box(y, f"wqkv  {D}→3×{D} (+ bias), split into q | k | v, each {H}×{Hd}", _COL["attn"],
              fontsize=9)
        c.hook(y, "attention.q, .k, .v")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.45
        return _attention_core(c, y, f"{H} heads, each with its own keys and values; cached", Hd,
                               f"wo  {H}×{Hd}→{D} (+ bias)")

    @staticmethod
    def feed_forward(c: _Canvas, a, y: float) -> float:
        D, F = a.dim, a.hidden_dim
        c.box(y, f"w1 (up)  {D}→{F:,} (+ bias)", _COL["ffn"])
        c.hook(y, "feed_forward.up")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.3
        c.box(y, f"gelu(up), tanh approximation   ({F:,})", _COL["ffn"])
        c.hook(y, "feed_forward.act")
        c.arrow(y - 0.4, y - 0.8)
        y -= 1.3
        c.box(y, f"w2 (down)  {F:,}→{D} (+ bias)", _COL["ffn"])
        c.hook(y, "feed_forward.out")
        c.arrow(y - 0.4, y - 0.72)
        return y - 1.0


def _attention_core(c: _Canvas, y: float, heads_line: str, Hd: int, wo_text: str) -> float:
    """softmax(q kᵀ/√Hd + mask) v, then wo: the same in both families."""
    c.box(y, f"softmax(q kᵀ / √{Hd} + causal mask) · v\n{heads_line}", _COL["attn"], h=1.1,
          fontsize=9.5)
    c.hook(y + 0.2, "attention.scores, .probs")
    c.hook(y - 0.25, "attention.heads")
    c.arrow(y - 0.55, y - 0.95)
    y -= 1.4
    c.box(y, wo_text, _COL["attn"])
    c.hook(y, "attention.out")
    c.arrow(y - 0.4, y - 0.72)
    return y - 1.0


_DRAWINGS: dict[str, Callable] = {"llama": _Llama, "gpt2": _GPT2}


__all__ = ["plot_architecture"]
