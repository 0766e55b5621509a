"""Direct logit attribution: how much each part of the residual stream adds to one logit.

The residual stream at the end is a sum: the embedding, plus every block's attention
output, plus every block's MLP output. The logit of token t is

    logit_t = output.weight[t] . final_norm(residual)   (+ output bias, if any)

The final norm is not linear (it divides by the residual's RMS, or by its standard
deviation for a LayerNorm), so the sum does not carry through it as it stands. Direct logit
attribution *freezes the norm's scale at its value for the full residual*: with that one
number fixed, the norm is linear, each part can be pushed through it and the unembedding
on its own, and the parts add up exactly to the logit:

    RMSNorm:    part_k = (c_k / rms(r)) * w . u_t          rms(r) = sqrt(mean(r^2) + eps)
    LayerNorm:  part_k = ((c_k - mean(c_k)) / std(r)) * w . u_t,   plus b . u_t on its own

where r is the full residual at the position, c_k a part of it, w (and b) the norm's
weight (and bias), u_t the unembedding row of t (or u_a - u_b for a difference of two
tokens). A part's number is what it adds *with the scale the other parts set*, not the
logit the model would give if that part were alone.

Each attention output splits further into the heads: attention.out = wo(concat heads)
= sum over h of wo[:, h*Hd:(h+1)*Hd] @ head_h (+ wo's bias, if the model has one).

    parts = logit_attribution(model, ids, " Paris", tokenizer=tok)           # ordered dict
    parts = logit_attribution(model, ids, (" Paris", " Rome"), heads=True, tokenizer=tok)
    sum(parts.values())   # == the model's logit (difference), within float32 rounding
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ..hooks import run_with_cache
from .common import (
    InterpError,
    Prompt,
    as_prompt,
    check_position,
    dims,
    resolve_target,
    target_label,
)

# Relative size of a mismatch between the parts and the final residual (or between our
# linearised norm and the model's) that means the model is not built as assumed: far above
# float rounding (float32 sums over 30 layers stay near 1e-6), far below a missing part.
def _consistency_rtol(dtype: torch.dtype) -> float:
    return max(1e-3, 8 * torch.finfo(dtype).eps)  # float32 1e-3, bfloat16 0.06


@dataclass
class LogitAttribution:
    """The parts of one logit (or logit difference) at one position.

    logit: what the model computed. total: the sum of the parts (equals logit within
    float32 rounding). scale: the frozen factor of the final norm, 1/rms(r) for RMSNorm or
    1/std(r) for LayerNorm, of the full residual r at that position.
    attn[L] is block L's attention output; heads[L, h] splits it by query head, and
    attn_bias[L] is wo's bias (None when wo has none), so attn[L] = heads[L].sum() +
    attn_bias[L]. mlp[L] is block L's MLP output.
    """

    target: tuple[int, int | None]
    target_label: str
    position: int
    logit: float
    scale: float
    norm_kind: str  # "rms" or "layer"
    embed: float
    pos_embed: float | None  # models with learned position embeddings (GPT-2)
    attn: torch.Tensor  # (n_layers,)
    heads: torch.Tensor  # (n_layers, H)
    attn_bias: torch.Tensor | None  # (n_layers,)
    mlp: torch.Tensor  # (n_layers,)
    norm_bias: float | None  # LayerNorm's bias, pushed through the unembedding
    output_bias: float | None  # the unembedding's own bias, if it has one
    ids: list[int]

    def parts(self, heads: bool = False) -> "OrderedDict[str, float]":
        """Part name -> value, in forward order; the values sum to `total`.

        Names: "embed", ("pos_embed",) then per block L "L{L}.attn" (or, with heads=True,
        "L{L}.H{h}" for each head and "L{L}.attn_bias" if wo has a bias) and "L{L}.mlp";
        then "norm.bias" (LayerNorm) and "output.bias" where those exist.
        """
        out: OrderedDict[str, float] = OrderedDict()
        out["embed"] = self.embed
        if self.pos_embed is not None:
            out["pos_embed"] = self.pos_embed
        for layer in range(len(self.mlp)):
            if heads:
                for h, v in enumerate(self.heads[layer].tolist()):
                    out[f"L{layer}.H{h}"] = v
                if self.attn_bias is not None:
                    out[f"L{layer}.attn_bias"] = float(self.attn_bias[layer])
            else:
                out[f"L{layer}.attn"] = float(self.attn[layer])
            out[f"L{layer}.mlp"] = float(self.mlp[layer])
        if self.norm_bias is not None:
            out["norm.bias"] = self.norm_bias
        if self.output_bias is not None:
            out["output.bias"] = self.output_bias
        return out

    @property
    def total(self) -> float:
        return float(sum(self.parts().values()))


# ----------------------------------------------------------------------------------
# The final norm, linearised at the full residual
# ----------------------------------------------------------------------------------


def _norm_kind(norm: torch.nn.Module) -> str:
    name = type(norm).__name__.lower()
    if isinstance(norm, torch.nn.LayerNorm) or "layernorm" in name:
        return "layer"
    if "rmsnorm" in name:
        return "rms"
    raise InterpError(
        f"direct logit attribution knows RMSNorm and LayerNorm as the final norm, not "
        f"{type(norm).__name__}"
    )


def _norm_eps(norm: torch.nn.Module) -> float:
    for attr in ("eps", "variance_epsilon", "epsilon"):
        if hasattr(norm, attr):
            return float(getattr(norm, attr))
    raise InterpError(f"the final norm {type(norm).__name__} has no eps attribute to read")


class FrozenNorm:
    """The final norm with its scale frozen at one residual vector r (D,): a linear map.

    apply(c) is what the norm does to a part c of r (without the bias); bias_term() is the
    norm's bias (LayerNorm), which belongs to no part. For c = r, apply(r) + bias equals the
    norm's real output.
    """

    def __init__(self, norm: torch.nn.Module, r: torch.Tensor) -> None:
        self.kind = _norm_kind(norm)
        eps = _norm_eps(norm)
        r = r.double()
        D = r.shape[-1]
        weight = getattr(norm, "weight", None)
        self.weight = torch.ones(D, dtype=torch.float64) if weight is None else weight.detach().double().cpu()
        bias = getattr(norm, "bias", None)
        self.bias = None if bias is None else bias.detach().double().cpu()
        if self.kind == "rms":
            self.scale = float(torch.rsqrt(r.pow(2).mean() + eps))  # 1 / rms(r)
        else:
            var = (r - r.mean()).pow(2).mean()  # LayerNorm's biased variance
            self.scale = float(torch.rsqrt(var + eps))  # 1 / std(r)

    def apply(self, c: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        c = c.double()
        if self.kind == "layer":
            c = c - c.mean(-1, keepdim=True)  # centring is linear: each part is centred alone
        return c * self.scale * self.weight


def _direction(model: torch.nn.Module, target: tuple[int, int | None]) -> tuple[torch.Tensor, float | None]:
    """The unembedding direction u (D,) of the target and its bias (None: no bias)."""
    W = model.output.weight  # (V, D)
    a, b = target
    u = W[a].detach().double().cpu()
    if b is not None:
        u = u - W[b].detach().double().cpu()
    bias = getattr(model.output, "bias", None)
    if bias is None:
        return u, None
    bias = bias.detach().double().cpu()
    return u, float(bias[a] - (bias[b] if b is not None else 0.0))


def _check_close(what: str, got: torch.Tensor, want: torch.Tensor, hint: str, rtol: float) -> None:
    err = float((got - want).abs().max())
    size = float(want.abs().max()) + 1e-6
    if err > rtol * size:
        raise InterpError(f"{what} (max difference {err:.3g} of {size:.3g}): {hint}")


def attribution(
    model: torch.nn.Module,
    ids: Prompt,
    target: Any,
    position: int = -1,
    tokenizer: Any = None,
) -> LogitAttribution:
    """Direct logit attribution of `target` at `position` (see the module docstring).

    target: a token id, or a pair (a, b) for the difference logit[a] - logit[b]; with
    `tokenizer`, single-token texts (" Paris"). The final norm's scale is frozen at its
    value for the full residual, so the parts sum to the logit. Computed from float32
    captures in float64. Resets the model's KV cache.
    """
    d = dims(model)
    tokens = as_prompt(model, ids, "prompt", tokenizer)
    tgt = resolve_target(target, d.vocab_size, tokenizer)
    pos = check_position(position, tokens.shape[1])
    last = d.n_layers - 1
    has_pos = "pos_embeddings" in model.hook_names()
    names = ["tok_embeddings"] + (["pos_embeddings"] if has_pos else [])
    names += [f"layers.*.{n}" for n in ("attention.heads", "attention.out", "feed_forward.out")]
    names += [f"layers.{last}.resid_post", "norm"]
    try:
        logits, cache = run_with_cache(model, tokens, names)  # float32, CPU
    finally:
        model.reset_cache()

    def at(name: str) -> torch.Tensor:
        return cache[name][0, pos].double()  # (D,) or (H, Hd)

    embed = at("tok_embeddings")
    pos_embed = at("pos_embeddings") if has_pos else None
    attn = torch.stack([at(f"layers.{i}.attention.out") for i in range(d.n_layers)])  # (L, D)
    mlp = torch.stack([at(f"layers.{i}.feed_forward.out") for i in range(d.n_layers)])  # (L, D)
    resid = at(f"layers.{last}.resid_post")  # (D,)

    rtol = _consistency_rtol(model.tok_embeddings.weight.dtype)
    # The pieces must add up to the residual, and our linear norm must be the model's norm.
    total = embed + attn.sum(0) + mlp.sum(0) + (pos_embed if pos_embed is not None else 0)
    _check_close(
        "the embedding, attention and MLP outputs do not add up to the final residual",
        total, resid, "this model's residual stream is not built as embed + sum(attn + mlp)", rtol,
    )
    frozen = FrozenNorm(model.norm, resid)
    normed = frozen.apply(resid) + (frozen.bias if frozen.bias is not None else 0)
    _check_close(
        "the final norm, linearised at the residual, does not reproduce the model's norm",
        normed, cache["norm"][0, pos].double(), f"{type(model.norm).__name__} is not handled", rtol,
    )

    u, out_bias = _direction(model, tgt)
    project = lambda c: frozen.apply(c) @ u  # noqa: E731 - (..., D) -> (...)

    # Each head's share: its slice of wo's columns applied to its output.
    heads = []
    attn_bias = []
    for i in range(d.n_layers):
        wo = model.layers[i].attention.wo
        W = wo.weight.detach().double().cpu()  # (D, H*Hd)
        if W.shape != (d.dim, d.n_heads * d.head_dim):
            raise InterpError(
                f"layers.{i}.attention.wo.weight has shape {tuple(W.shape)}, expected "
                f"(dim, n_heads*head_dim) = ({d.dim}, {d.n_heads * d.head_dim})"
            )
        o = at(f"layers.{i}.attention.heads")  # (H, Hd)
        per_head = torch.einsum("dhk,hk->hd", W.view(d.dim, d.n_heads, d.head_dim), o)  # (H, D)
        heads.append(project(per_head))  # (H,)
        if getattr(wo, "bias", None) is not None:
            attn_bias.append(float(project(wo.bias.detach().double().cpu())))

    logit_row = logits[0, pos].double()
    logit = float(logit_row[tgt[0]] - (logit_row[tgt[1]] if tgt[1] is not None else 0.0))
    return LogitAttribution(
        target=tgt,
        target_label=target_label(tgt, tokenizer),
        position=pos,
        logit=logit,
        scale=frozen.scale,
        norm_kind=frozen.kind,
        embed=float(project(embed)),
        pos_embed=float(project(pos_embed)) if pos_embed is not None else None,
        attn=project(attn).float(),
        heads=torch.stack(heads).float(),
        attn_bias=torch.tensor(attn_bias, dtype=torch.float32) if attn_bias else None,
        mlp=project(mlp).float(),
        norm_bias=float(frozen.bias @ u) if frozen.bias is not None else None,
        output_bias=out_bias,
        ids=tokens[0].tolist(),
    )


def logit_attribution(
    model: torch.nn.Module,
    ids: Prompt,
    target: Any,
    position: int = -1,
    heads: bool = False,
    tokenizer: Any = None,
) -> "OrderedDict[str, float]":
    """Part name -> its direct contribution to the target logit; the values sum to the logit.

        parts = logit_attribution(model, ids, target, position=-1)

    target: a token id or a pair of ids (their logit difference); single-token texts with
    `tokenizer`. Parts: "embed", per block "L{i}.attn" and "L{i}.mlp" (with heads=True the
    attention splits into "L{i}.H{h}" and, if wo has a bias, "L{i}.attn_bias"), and the
    biases of the final norm / unembedding where the model has them. The final norm's scale
    is frozen at its value for the full residual at that position (the norm is then linear,
    so the parts add up exactly). See `attribution` for the numbers as arrays.
    """
    return attribution(model, ids, target, position, tokenizer).parts(heads=heads)


__all__ = ["LogitAttribution", "FrozenNorm", "attribution", "logit_attribution"]
