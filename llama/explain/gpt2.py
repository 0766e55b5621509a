"""The walkthrough's stages that GPT-2 (llama/gpt2.py) has and Llama has not.

GPT-2's block shares most stages with Llama's (llama/explain/layer.py finds their lines
through the model's class names): the norms (LayerNorm there), scores, mask, softmax,
weighted sum, output projection and both residuals. What is its own: the input (token and
position vectors added), one fused q/k/v projection split three ways, no RoPE, and a
GELU MLP with two matrices. `GPT2_LAYER_STAGES` is its block in forward order.
"""

from __future__ import annotations

from typing import Callable

from .layer import (
    LayerView,
    attention_norm_stage,
    attention_residual_stage,
    ffn_norm_stage,
    ffn_residual_stage,
    mask_stage,
    output_projection_stage,
    scores_stage,
    softmax_stage,
    weighted_sum_stage,
)
from .text import Stage, short_piece, vector_line


def embedding_stage(model, cache, src, pieces, lo: int, t: int, vec: slice) -> Stage:
    """Token vector + position vector: the residual stream that enters layers.0."""
    cls = type(model).__name__
    tok, pos = cache["tok_embeddings"], cache["pos_embeddings"]
    body = [
        f"  tok_embeddings: {tuple(tok.shape)} = (B, T, D); each token id picks one row of "
        f"tok_embeddings.weight {tuple(model.tok_embeddings.weight.shape)} = (V, D)",
        f"  pos_embeddings: {tuple(pos.shape)} = (B, T, D); position p picks row p of "
        f"pos_embeddings.weight {tuple(model.pos_embeddings.weight.shape)} = (P, D), the same "
        "for every sequence",
    ]
    for i in range(lo, t + 1):
        body += [
            vector_line("tok_embeddings", tok, (0, i, vec), short_piece(pieces[i])),
            vector_line("pos_embeddings", pos, (0, i, vec), f"position {i}"),
            vector_line("embeddings", cache["embeddings"], (0, i, vec), "= token + position"),
        ]
    return Stage(
        "Embeddings: token + position",
        "Each id becomes a D-dimensional vector, and the learned vector of its position is "
        "added to it: the start of the residual stream that every layer reads from and adds "
        "to. This is the only place position enters GPT-2 (Llama rotates q and k instead).",
        [("token lookup", src.tap(cls, "tok_embeddings")),
         ("position lookup", src.tap(cls, "pos_embeddings")),
         ("token + position", src.tap(cls, "embeddings"))],
        body,
    )


def fused_qkv_stage(v: LayerView) -> Stage:
    a, att, t = v.a, v.att, v.t
    q = v.cache[f"{att}.q"]
    D = a.dim
    body = [
        f"  wqkv: D -> 3D = {D} -> {3 * D} in one matrix; its output is cut into [q | k | v], "
        f"{D} features each, and each is viewed as (B, T, H, Hd) = {tuple(q.shape)}",
        f"  (the three parts as separate matrices: layers.{v.L}.attention.split_qkv())",
        v.vector(f"{att}.q", (0, t, v.head, v.hvec), f"query, head {v.head}"),
        v.vector(f"{att}.k", (0, t, v.head, v.hvec), f"key, head {v.head}"),
        v.vector(f"{att}.v", (0, t, v.head, v.hvec), f"value, head {v.head}"),
    ]
    return Stage(
        f"Layer {v.L}: q, k, v from one fused projection, and the split into heads",
        "One linear map (with a bias) computes the query (what this token looks for), the "
        "key (what it offers) and the value (what it passes on) side by side; the result is "
        "cut in three, and each part into heads that attend independently. Every head has "
        "its own keys and values, and no rotation follows: GPT-2's positions were added at "
        "the input.",
        [("q, k, v = wqkv(x)", v.src.assignment(f"{v.attn_cls}.forward", "q", "first")),
         ("query", v.src.tap(v.attn_cls, "q")), ("key", v.src.tap(v.attn_cls, "k")),
         ("value", v.src.tap(v.attn_cls, "v"))],
        body,
    )


def gelu_mlp_stage(v: LayerView) -> Stage:
    a, ff, at = v.a, v.ff, (0, v.t, v.vec)
    up = v.cache[f"{ff}.up"]
    return Stage(
        f"Layer {v.L}: GELU MLP",
        "Up to F = 4D features with w1, through GELU (its tanh approximation, as GPT-2 was "
        "trained), and back down to D with w2; both with biases.",
        [("up = w1(x)", v.src.tap(v.mlp_cls, "up")),
         ("gelu(up)", v.src.tap(v.mlp_cls, "act")),
         ("down = w2(act)", v.src.tap(v.mlp_cls, "out"))],
        [f"  w1: D -> F = {a.dim} -> {a.hidden_dim}; w2: F -> D; up and act are "
         f"{tuple(up.shape)} = (B, T, F)",
         v.vector(f"{ff}.up", at, "w1(x)"),
         v.vector(f"{ff}.act", at, "gelu(up)"),
         v.vector(f"{ff}.out", at, "w2(act), back to D")],
    )


# The stages inside one GPT2Block, in the order its forward computes them.
GPT2_LAYER_STAGES: tuple[Callable[[LayerView], Stage], ...] = (
    attention_norm_stage,
    fused_qkv_stage,
    scores_stage,
    mask_stage,
    softmax_stage,
    weighted_sum_stage,
    output_projection_stage,
    attention_residual_stage,
    ffn_norm_stage,
    gelu_mlp_stage,
    ffn_residual_stage,
)


__all__ = ["GPT2_LAYER_STAGES", "embedding_stage", "fused_qkv_stage", "gelu_mlp_stage"]
