"""The stages inside one block, one small function each.

Every stage function takes a `LayerView` (the model, its capture, the source map and what
to show) and returns a `Stage`; `LAYER_STAGES` lists a Llama TransformerBlock's in the order
its forward computes them. The stages that every family shares (the norms, scores, mask,
softmax, weighted sum, output projection and residuals) find their source lines through
the class names of the model they are given, so they serve GPT-2 too
(llama/explain/gpt2.py adds its own q/k/v split and GELU MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from torch import nn

from ..family import family_of
from ..model import causal_mask, repeat_kv, rope_inv_freq
from ..source import SourceLine, SourceLocatorError, SourceMap
from .text import Index, Stage, format_number, matrix_lines, vector_line


@dataclass
class LayerView:
    """What every stage of one block reads: the model and its capture, where to look in the
    source, and which token, head, RoPE pair and window of tokens to show."""

    model: nn.Module
    cache: dict
    src: SourceMap
    L: int  # the layer
    t: int  # the token whose vectors are printed
    head: int  # the query head shown
    pair: int  # the RoPE pair shown
    window: slice  # the tokens shown in tables and matrices (ending at t)
    labels: list[str]  # "t=3 ' is'" for every token
    vec: slice  # the first values of a D- or F-sized vector
    hvec: slice  # the first values of a head vector (at most Hd)
    # llama/model.py's map, for the helpers every family imports from it (causal_mask);
    # None: `src` is that map already (a Llama model).
    shared: SourceMap | None = None

    @property
    def a(self):
        return self.model.args

    @property
    def n_rep(self) -> int:
        return self.a.n_heads // self.a.n_kv_heads

    @property
    def g(self) -> int:
        return self.head // self.n_rep  # the key/value head this query head reads

    @property
    def p(self) -> str:
        return f"layers.{self.L}"

    @property
    def att(self) -> str:
        return f"{self.p}.attention"

    @property
    def ff(self) -> str:
        return f"{self.p}.feed_forward"

    @property
    def x_name(self) -> str:
        """The block's input: the embeddings (the family's residual input: tok_embeddings,
        or GPT-2's embeddings), or the previous block's output."""
        return family_of(self.model).residual_input if self.L == 0 else f"layers.{self.L - 1}.resid_post"

    # The model's own class names, so that one stage finds its lines in either family.
    @property
    def model_cls(self) -> str:
        return type(self.model).__name__  # Transformer, GPT2

    @property
    def block_cls(self) -> str:
        return type(self.model.layers[self.L]).__name__  # TransformerBlock, GPT2Block

    @property
    def attn_cls(self) -> str:
        return type(self.model.layers[self.L].attention).__name__  # Attention, GPT2Attention

    @property
    def mlp_cls(self) -> str:
        return type(self.model.layers[self.L].feed_forward).__name__  # FeedForward, GPT2MLP

    @property
    def norm_cls(self) -> str:
        return type(self.model.layers[self.L].attention_norm).__name__  # RMSNorm, LayerNorm

    @property
    def shared_src(self) -> SourceMap:
        return self.shared if self.shared is not None else self.src

    @property
    def rows(self) -> list[str]:
        return self.labels[self.window]

    def vector(self, name: str, index: Index, note: str = "") -> str:
        return vector_line(name, self.cache[name], index, note)


def _rms_norm_body(v: LayerView, x_name: str, out_name: str, module_name: str, norm) -> list[str]:
    x = v.cache[x_name]
    ms = x[0, v.t].double().pow(2).mean().item()
    eps = v.a.norm_eps
    return [
        vector_line(x_name, x, (0, v.t, v.vec), "input: the residual stream"),
        f"  rms = sqrt(mean(x^2) + eps) = sqrt({ms:.6g} + {eps:g}) = {math.sqrt(ms + eps):.6g}",
        vector_line(f"{module_name}.weight", norm.weight.detach().float().cpu(), (v.vec,),
                    "learned per-channel scale"),
        vector_line(out_name, v.cache[out_name], (0, v.t, v.vec), "= x / rms * weight"),
    ]


def _layer_norm_body(v: LayerView, x_name: str, out_name: str, module_name: str, norm) -> list[str]:
    x = v.cache[x_name][0, v.t].double()
    mean, var = x.mean().item(), (x - x.mean()).pow(2).mean().item()
    eps = norm.eps
    return [
        vector_line(x_name, v.cache[x_name], (0, v.t, v.vec), "input: the residual stream"),
        f"  mean(x) = {mean:.6g}; var(x) = mean((x - mean)^2) = {var:.6g}; "
        f"std = sqrt(var + eps) = sqrt({var:.6g} + {eps:g}) = {math.sqrt(var + eps):.6g}",
        vector_line(f"{module_name}.weight", norm.weight.detach().float().cpu(), (v.vec,),
                    "learned per-channel scale"),
        vector_line(f"{module_name}.bias", norm.bias.detach().float().cpu(), (v.vec,),
                    "learned per-channel shift"),
        vector_line(out_name, v.cache[out_name], (0, v.t, v.vec), "= (x - mean) / std * weight + bias"),
    ]


# What each kind of norm does, by the class name of the module: (what it does, its numbers).
NORMS = {
    "RMSNorm": ("Scale each token's vector to unit root-mean-square, then by a learned weight, "
                "so {where} sees inputs of a steady size.", _rms_norm_body),
    "LayerNorm": ("Centre each token's vector (subtract its mean), scale it to unit standard "
                  "deviation, then by a learned weight plus a learned bias, so {where} sees "
                  "inputs of a steady size.", _layer_norm_body),
}


def _norm_stage(v: LayerView, title: str, where: str, x_name: str, module: str, what: str | None = None) -> Stage:
    norm = getattr(v.model.layers[v.L], module)
    cls = type(norm).__name__
    text, body = NORMS[cls]
    return Stage(
        f"Layer {v.L}: {cls} {title}",
        what or text.format(where=where),
        [(module, v.src.tap(v.block_cls, module)),
         (f"inside {cls}", v.src.call(f"{cls}.forward", "rsqrt"))],
        body(v, x_name, f"{v.p}.{module}", f"{v.p}.{module}", norm),
    )


def attention_norm_stage(v: LayerView) -> Stage:
    return _norm_stage(v, "before attention", "attention", v.x_name, "attention_norm")


def qkv_stage(v: LayerView) -> Stage:
    a, att, t = v.a, v.att, v.t
    q, k = v.cache[f"{att}.q"], v.cache[f"{att}.k"]
    gqa = f"; query head h reads kv head h // {v.n_rep}" if v.n_rep > 1 else ""
    body = [
        f"  wq: D -> H*Hd = {a.dim} -> {a.n_heads * a.head_dim}, viewed as (B, T, H, Hd) = "
        f"{tuple(q.shape)}",
        f"  wk, wv: D -> KV*Hd = {a.dim} -> {a.n_kv_heads * a.head_dim}, viewed as (B, T, KV, Hd) = "
        f"{tuple(k.shape)}" + gqa,
        v.vector(f"{att}.q", (0, t, v.head, v.hvec), f"query, head {v.head}"),
        v.vector(f"{att}.k", (0, t, v.g, v.hvec), f"key, kv head {v.g}"),
        v.vector(f"{att}.v", (0, t, v.g, v.hvec), f"value, kv head {v.g}"),
    ]
    return Stage(
        f"Layer {v.L}: q, k, v projections and the split into heads",
        "Three linear maps of the normalised vector: a query (what this token looks for), a "
        "key (what it offers) and a value (what it passes on). The last dimension is then "
        "cut into heads that attend independently.",
        [("query", v.src.tap(v.attn_cls, "q")), ("key", v.src.tap(v.attn_cls, "k")),
         ("value", v.src.tap(v.attn_cls, "v"))],
        body,
    )


def rope_stage(v: LayerView) -> Stage:
    a, model, att, pair, head = v.a, v.model, v.att, v.pair, v.head
    T = v.cache[v.x_name].shape[1]
    inv_freq = rope_inv_freq(a.head_dim, a.rope_theta, model.rope_scaling())
    freqs = model.freqs_cis[:T, pair].cpu()  # (T,) complex: e^{i angle} at each position
    q, q_rot = v.cache[f"{att}.q"], v.cache[f"{att}.q_rot"]
    d0, d1 = 2 * pair, 2 * pair + 1
    scaled = " with Llama 3 frequency scaling" if model.rope_scaling() else ""
    width = max(len(r) for r in v.rows)
    body = [
        f"  pair {pair} = dims ({d0}, {d1}) of every head; it turns by inv_freq[{pair}] = "
        f"{inv_freq[pair].item():.6g} rad per position (theta {a.rope_theta:g}{scaled})",
        f"  rope(pair={pair}, head={head}) =   (q pair before and after the turn by angle = "
        "position * inv_freq)",
        f"    {'':<{width}} |    angle      cos      sin   q[{d0}]   q[{d1}]"
        f"  q_rot[{d0}] q_rot[{d1}]",
    ]
    for i, label in zip(range(v.window.start, v.window.stop), v.rows):
        nums = [i * inv_freq[pair].item(), freqs[i].real.item(), freqs[i].imag.item(),
                q[0, i, head, d0].item(), q[0, i, head, d1].item(),
                q_rot[0, i, head, d0].item(), q_rot[0, i, head, d1].item()]
        body.append(f"    {label:<{width}} | " + " ".join(f"{format_number(n):>8}" for n in nums))
    body.append(v.vector(f"{att}.q_rot", (0, v.t, head, v.hvec), "all pairs turned"))
    body.append(v.vector(f"{att}.k_rot", (0, v.t, v.g, v.hvec), "keys turn the same way"))
    return Stage(
        f"Layer {v.L}: rotary position embedding (RoPE)",
        "Position enters here and nowhere else: each pair of dimensions of q and k is turned "
        "by an angle proportional to the position, so q.k depends on how far apart two "
        "tokens are.",
        [("rotate q and k", v.src.tap("Attention", "q_rot")),
         ("angle table", v.src.assignment("precompute_freqs_cis", "angles")),
         ("the turn (complex multiply)", v.src.assignment("apply_rotary_emb", "q_out")),
         ("positions of this call", v.src.assignment("Transformer.forward", "freqs_cis"))],
        body,
    )


def scores_stage(v: LayerView) -> Stage:
    a, scores = v.a, v.cache[f"{v.att}.scores"]
    # The rotated q and k where the model has RoPE (its attention taps q_rot), else q and k.
    rotated = "q_rot" in type(v.model.layers[v.L].attention).tap_points
    q, k = ("q_rot", "k_rot") if rotated else ("q", "k")
    body = [
        f"  scores: {tuple(scores.shape)} = (B, H, T, S); scores[b, h, t, s] = "
        f"{q}[t] . {k}[s] / sqrt({a.head_dim})",
        v.vector(f"{v.att}.scores", (0, v.head, v.t, v.window),
                 f"token t={v.t} against keys {v.window.start}..{v.t}"),
    ]
    if v.n_rep > 1:
        body.append(f"  grouped-query attention: the {a.n_kv_heads} kv heads are repeated "
                    f"{v.n_rep} times so each query head has keys")
    sources = [("scores", v.src.assignment(f"{v.attn_cls}.explicit_attention", "scores", "first"))]
    shared = _optional(v.src.call, f"{v.attn_cls}.explicit_attention", "repeat_kv")
    if shared is not None:  # only attention with shared (grouped) key/value heads has it
        sources.append(("share kv heads", shared))
    return Stage(
        f"Layer {v.L}: attention scores",
        "How well each query matches each key: a dot product, divided by sqrt(Hd) so the "
        "softmax that follows is not too peaked.",
        sources,
        body,
    )


def mask_stage(v: LayerView) -> Stage:
    scores = v.cache[f"{v.att}.scores"]
    mask = causal_mask(scores.shape[2], 0, torch.float32, torch.device("cpu"))
    w = v.window
    body = []
    if mask is None:
        body.append("  a single token has nothing after it: causal_mask returns None")
    else:
        body += matrix_lines("causal_mask", mask, (w, w), v.rows,
                              "row = query token, column = key token")
    body += matrix_lines(f"{v.att}.scores", scores, (0, v.head, w, w), v.rows, "scores + mask")
    return Stage(
        f"Layer {v.L}: causal mask",
        "A token may only look at itself and earlier tokens: -inf is added to every score "
        "of a later key, so softmax gives it probability 0.",
        [("add the mask", v.src.tap(v.attn_cls, "scores")),
         ("build the mask", v.shared_src.call("causal_mask", "triu")),
         ("mask for this call", v.src.assignment(f"{v.model_cls}.forward", "mask"))],
        body,
    )


def softmax_stage(v: LayerView) -> Stage:
    probs, t, head = v.cache[f"{v.att}.probs"], v.t, v.head
    top_key = int(probs[0, head, t, : t + 1].argmax())
    body = matrix_lines(f"{v.att}.probs", probs, (0, head, v.window, v.window), v.rows,
                         "each full row sums to 1")
    body.append(f"  token t={t} attends most to {v.labels[top_key]} "
                f"(p = {probs[0, head, t, top_key].item():.4f}) in head {head}")
    return Stage(
        f"Layer {v.L}: softmax",
        "Each row of scores becomes a probability distribution over the keys (in float32).",
        [("softmax", v.src.tap(v.attn_cls, "probs"))],
        body,
    )


def weighted_sum_stage(v: LayerView) -> Stage:
    att = v.att
    probs, heads = v.cache[f"{att}.probs"], v.cache[f"{att}.heads"]
    # Recomputed here to show that heads is exactly this; in the weights' dtype, as the model
    # does it (the float32 capture holds bfloat16/float16 values exactly).
    dt = v.model.tok_embeddings.weight.dtype
    v_heads = repeat_kv(v.cache[f"{att}.v"].transpose(1, 2).to(dt), v.n_rep)  # (B, T, KV, Hd) -> (B, H, S, Hd)
    weighted = (probs.to(dt) @ v_heads).float()  # (B, H, T, S) @ (B, H, S, Hd) -> (B, H, T, Hd)
    diff = (weighted.transpose(1, 2) - heads).abs().max().item()
    body = [
        f"  weighted_sum = probs @ v: (B, H, T, S) @ (B, H, S, Hd) -> (B, H, T, Hd); "
        f"then transposed to heads (B, T, H, Hd) = {tuple(heads.shape)}",
        vector_line("weighted_sum", weighted, (0, v.head, v.t, v.hvec), "probs @ v, recomputed here"),
        v.vector(f"{att}.heads", (0, v.t, v.head, v.hvec), "captured: the same numbers"),
        f"  max |probs @ v - heads| over every head and token = {diff:.2e}",
    ]
    return Stage(
        f"Layer {v.L}: weighted sum of values",
        "Each query's output is the average of the value vectors, weighted by its "
        "probabilities. (The default fast path computes the same in one fused call.)",
        [("probs @ v", v.src.matmul(f"{v.attn_cls}.explicit_attention", "probs")),
         ("fused path", v.src.call(f"{v.attn_cls}.forward", "scaled_dot_product_attention")),
         ("back to (B, T, H, Hd)", v.src.tap(v.attn_cls, "heads"))],
        body,
    )


def output_projection_stage(v: LayerView) -> Stage:
    a, out = v.a, v.cache[f"{v.att}.out"]
    return Stage(
        f"Layer {v.L}: output projection",
        "The heads are laid side by side again (B, T, H*Hd) and wo mixes them back into "
        "the model width.",
        [("wo", v.src.tap(v.attn_cls, "out"))],
        [f"  heads (B, T, H, Hd) -> reshape (B, T, {a.n_heads * a.head_dim}) -> wo -> "
         f"{tuple(out.shape)} = (B, T, D)",
         v.vector(f"{v.att}.out", (0, v.t, v.vec))],
    )


def attention_residual_stage(v: LayerView) -> Stage:
    at = (0, v.t, v.vec)
    return Stage(
        f"Layer {v.L}: residual connection",
        "Attention's output is added to the residual stream, never replacing it.",
        [("x + attention", v.src.tap(v.block_cls, "resid_mid"))],
        [v.vector(v.x_name, at, "x"),
         v.vector(f"{v.att}.out", at, "+ attention"),
         v.vector(f"{v.p}.resid_mid", at, "= h")],
    )


def ffn_norm_stage(v: LayerView) -> Stage:
    own = "weight and bias" if getattr(v.model.layers[v.L].ffn_norm, "bias", None) is not None else "weight"
    return _norm_stage(v, "before the feed-forward", "the feed-forward", f"{v.p}.resid_mid",
                       "ffn_norm", f"The same normalisation, with its own {own}, on the updated stream.")


def swiglu_stage(v: LayerView) -> Stage:
    a, ff, at = v.a, v.ff, (0, v.t, v.vec)
    gate = v.cache[f"{ff}.gate"]
    return Stage(
        f"Layer {v.L}: SwiGLU feed-forward",
        "Two projections up to F dimensions; silu(gate) decides how much of each 'up' "
        "feature passes; w2 projects back down to D.",
        [("gate = w1(x)", v.src.tap("FeedForward", "gate")),
         ("up = w3(x)", v.src.tap("FeedForward", "up")),
         ("silu(gate) * up", v.src.tap("FeedForward", "act")),
         ("down = w2(act)", v.src.tap("FeedForward", "out"))],
        [f"  w1, w3: D -> F = {a.dim} -> {a.hidden_dim}; w2: F -> D; gate, up, act are "
         f"{tuple(gate.shape)} = (B, T, F)",
         v.vector(f"{ff}.gate", at, "w1(x)"),
         v.vector(f"{ff}.up", at, "w3(x)"),
         v.vector(f"{ff}.act", at, "silu(gate) * up"),
         v.vector(f"{ff}.out", at, "w2(act), back to D")],
    )


def ffn_residual_stage(v: LayerView) -> Stage:
    at = (0, v.t, v.vec)
    return Stage(
        f"Layer {v.L}: residual connection",
        "The feed-forward output is added to the stream: this is the layer's output.",
        [("h + feed_forward", v.src.tap(v.block_cls, "resid_post"))],
        [v.vector(f"{v.p}.resid_mid", at, "h"),
         v.vector(f"{v.ff}.out", at, "+ feed-forward"),
         v.vector(f"{v.p}.resid_post", at, f"= output of layer {v.L}")],
    )


# The stages inside one TransformerBlock, in the order its forward computes them.
LAYER_STAGES: tuple[Callable[[LayerView], Stage], ...] = (
    attention_norm_stage,
    qkv_stage,
    rope_stage,
    scores_stage,
    mask_stage,
    softmax_stage,
    weighted_sum_stage,
    output_projection_stage,
    attention_residual_stage,
    ffn_norm_stage,
    swiglu_stage,
    ffn_residual_stage,
)


def _optional(find, *args) -> SourceLine | None:
    """A source line that only some models' code has (None when this one lacks it)."""
    try:
        return find(*args)
    except SourceLocatorError:
        return None


__all__ = ["LayerView", "LAYER_STAGES", "NORMS"] + [f.__name__ for f in LAYER_STAGES]
