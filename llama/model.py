"""LLaMA in plain PyTorch, readable top to bottom.

Follow one token: Transformer.forward looks it up in tok_embeddings, then each
TransformerBlock adds attention (RMSNorm -> q/k/v -> RoPE -> KV cache -> softmax(q k^T) v
-> wo) and a SwiGLU feed-forward (RMSNorm -> w1, w3 -> silu(w1 x) * w3 x -> w2) to the
residual stream; a final RMSNorm and the output projection give the logits.

Parameter names are Meta's (tok_embeddings, layers.N.attention.wq/wk/wv/wo,
layers.N.feed_forward.w1/w2/w3, attention_norm, ffn_norm, norm, output), so Meta's
consolidated.*.pth state dict loads with strict=True.

Shape legend used in the comments:
    B   batch size                    T   tokens fed in this call
    S   tokens attended to (cached + new = start_pos + T)
    D   model width (dim)             F   feed-forward hidden size
    H   query heads                   KV  key/value heads (grouped-query attention)
    Hd  head size (D / H)             V   vocabulary size

Hook points ("taps"): every intermediate passes through `self.tap(name, value)`, which
returns the value untouched unless llama.hooks has installed a hook on that module. The
full name of a tap is the module's path plus the local name, e.g. `layers.3.attention.probs`.
Each class lists its taps in forward order (`tap_points`, or `tap_order` where it has
tappable children; see llama/taps.py); `model.hook_names()` expands them into every name.
With no hook installed a tap costs one attribute test.
"""

from __future__ import annotations

import math
from typing import Mapping, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, ModelArgs
from .taps import Child, Tappable

V = TypeVar("V")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without the mean subtraction or bias."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        # float32 island: the mean of squares loses precision (or overflows) in 16-bit.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


# ----------------------------------------------------------------------------------
# Rotary position embeddings (RoPE), with complex numbers as Meta writes them.
# Each head vector is read as Hd/2 complex numbers (x0 + i x1, x2 + i x3, ...); position p
# rotates pair j by the angle p * inv_freq[j]. A rotation in the complex plane is one
# multiplication by e^{i angle}, which is what freqs_cis holds.
# ----------------------------------------------------------------------------------


def rope_inv_freq(
    head_dim: int,
    theta: float,
    scaling: dict[str, float] | None = None,
) -> torch.Tensor:
    """Rotation speed of each of the Hd/2 pairs: theta^(-2j/Hd), j = 0 .. Hd/2-1. (Hd/2,)

    `scaling` (Llama 3.1+): keys factor, low_freq_factor, high_freq_factor,
    original_max_seq_len. Pairs that rotate fast (wavelength shorter than
    original_max_seq_len / high_freq_factor) keep their speed; slow ones (wavelength
    longer than original_max_seq_len / low_freq_factor) are slowed down by `factor`, so
    they never wrap around within the longer context; the band in between is blended.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq

    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_seq_len"]
    wavelen = 2 * math.pi / inv_freq
    slowed = inv_freq / factor
    # 0 at the long-wavelength edge of the blended band, 1 at the short-wavelength edge.
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * slowed + smooth * inv_freq
    return torch.where(
        wavelen < old_len / high,
        inv_freq,  # high frequency: unchanged
        torch.where(wavelen > old_len / low, slowed, blended),
    )


def precompute_freqs_cis(
    head_dim: int,
    end: int,
    theta: float,
    scaling: dict[str, float] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """e^{i * position * inv_freq} for positions 0 .. end-1. (end, Hd/2) complex64."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling).to(device)
    positions = torch.arange(end, dtype=torch.float32, device=device)
    angles = torch.outer(positions, inv_freq)  # (end, Hd/2)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, T, H, Hd) and k (B, T, KV, Hd) by their positions' freqs_cis (T, Hd/2)."""
    # float32 island: the rotation is done in float32 whatever the weights' dtype.
    # (B, T, H, Hd) -> (B, T, H, Hd/2, 2) -> (B, T, H, Hd/2) complex
    q_c = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    k_c = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    rot = freqs_cis[None, :, None, :]  # (T, Hd/2) -> (1, T, 1, Hd/2): same for every batch and head
    # (B, T, H, Hd/2) complex -> (B, T, H, Hd/2, 2) real -> (B, T, H, Hd)
    q_out = torch.view_as_real(q_c * rot).flatten(3)
    k_out = torch.view_as_real(k_c * rot).flatten(3)
    return q_out.type_as(xq), k_out.type_as(xk)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head among n_rep query heads. (B, KV, S, Hd) -> (B, KV*n_rep, S, Hd)"""
    if n_rep == 1:
        return x
    B, KV, S, Hd = x.shape
    # (B, KV, S, Hd) -> (B, KV, n_rep, S, Hd) -> (B, KV*n_rep, S, Hd)
    return x[:, :, None].expand(B, KV, n_rep, S, Hd).reshape(B, KV * n_rep, S, Hd)


# ----------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------


class KVCache(nn.Module):
    """Keys and values of the tokens seen so far, so each new token is one decode step.

    Storage is (B, KV, capacity, Hd), allocated on first use in the dtype and device of
    the keys it is given, and grown by doubling (up to max_seq_len) when a sequence
    outgrows it. It is plain state, not a buffer: it never enters the state dict.
    """

    def __init__(self, max_seq_len: int) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0  # tokens currently valid in the cache

    def reset(self) -> None:
        self.k = self.v = None
        self.length = 0

    def reserve(self, batch: int, capacity: int, like: torch.Tensor) -> None:
        """Allocate room for `capacity` positions (keeps what is cached)."""
        _, KV, _, Hd = like.shape
        k = like.new_zeros(batch, KV, capacity, Hd)
        v = like.new_zeros(batch, KV, capacity, Hd)
        if self.k is not None and self.length:
            k[:, :, : self.length] = self.k[:, :, : self.length]
            v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v

    def update(
        self, start_pos: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, KV, T, Hd) at positions start_pos.. and return all S so far."""
        B, _, T, _ = k.shape
        end = start_pos + T
        fits = (
            self.k is not None
            and self.k.shape[0] == B
            and self.k.dtype == k.dtype
            and self.k.device == k.device
        )
        if start_pos == 0 and not fits:
            self.reset()
        elif start_pos > 0 and not fits:
            raise ValueError(
                f"start_pos={start_pos} continues a sequence, but the KV cache holds "
                f"{'nothing' if self.k is None else 'a different batch size, dtype or device'}: "
                "run the prefix first with start_pos=0 (or call model.reset_cache())."
            )
        if start_pos > self.length:
            raise ValueError(
                f"start_pos={start_pos} is past the {self.length} tokens in the KV cache: "
                "positions must continue the cached sequence (or rewind into it)."
            )
        if self.k is None or self.k.shape[2] < end:
            old = 0 if self.k is None else self.k.shape[2]
            capacity = min(self.max_seq_len, max(end, 2 * old, 256))
            self.reserve(B, capacity, k)
        # The cache holds values, never autograd history: a forward run with gradients
        # (saliency) must not keep its graph alive in here after it returns.
        self.k[:, :, start_pos:end] = k.detach()
        self.v[:, :, start_pos:end] = v.detach()
        self.length = end
        if k.requires_grad or v.requires_grad:
            # Gradients must flow into this call's keys and values: pair the cached prefix
            # with the live new ones (a copy, paid only when differentiating).
            return (
                torch.cat([self.k[:, :, :start_pos], k], dim=2),  # (B, KV, S, Hd)
                torch.cat([self.v[:, :, :start_pos], v], dim=2),
            )
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, KV, S, Hd) each


class Attention(Tappable):
    """Causal multi-head attention with grouped-query heads and a KV cache."""

    tap_points = ("q", "k", "v", "q_rot", "k_rot", "scores", "probs", "heads", "out")

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.n_kv_heads
        self.n_rep = args.n_heads // args.n_kv_heads  # query heads per key/value head
        self.head_dim = args.head_dim
        bias = args.attention_bias  # Qwen2: bias on q, k, v only
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=bias)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
        self.cache = KVCache(args.max_seq_len)
        # "sdpa": torch's fused scaled_dot_product_attention (fast, same numbers);
        # "explicit": scores, mask, softmax and weighted sum written out, so the scores and
        # probabilities exist as tensors to look at (llama.hooks switches to it for those).
        self.impl = "sdpa"

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D), already normalised
        start_pos: int,
        freqs_cis: torch.Tensor,  # (T, Hd/2) complex
        mask: torch.Tensor | None,  # (T, S) additive, or None when T == 1
    ) -> torch.Tensor:
        B, T, _ = x.shape
        # Project, then split the last dimension into heads.
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, D) -> (B, T, H, Hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, KV, Hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, KV, Hd)
        q, k, v = self.tap("q", q), self.tap("k", k), self.tap("v", v)

        q, k = apply_rotary_emb(q, k, freqs_cis)
        q, k = self.tap("q_rot", q), self.tap("k_rot", k)

        # Heads become a batch dimension for the matrix products.
        q = q.transpose(1, 2)  # (B, T, H, Hd) -> (B, H, T, Hd)
        k = k.transpose(1, 2)  # (B, T, KV, Hd) -> (B, KV, T, Hd)
        v = v.transpose(1, 2)  # (B, T, KV, Hd) -> (B, KV, T, Hd)
        k, v = self.cache.update(start_pos, k, v)  # (B, KV, S, Hd): every token so far

        if self.impl == "explicit":
            out = self.explicit_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, enable_gqa=self.n_rep > 1
            )  # (B, H, T, Hd)

        out = out.transpose(1, 2)  # (B, H, T, Hd) -> (B, T, H, Hd)
        out = self.tap("heads", out)  # each head's output before they are mixed by wo
        out = self.wo(out.reshape(B, T, -1))  # (B, T, H*Hd) -> (B, T, D)
        return self.tap("out", out)

    def explicit_attention(
        self,
        q: torch.Tensor,  # (B, H, T, Hd)
        k: torch.Tensor,  # (B, KV, S, Hd)
        v: torch.Tensor,  # (B, KV, S, Hd)
        mask: torch.Tensor | None,  # (T, S)
    ) -> torch.Tensor:
        k = repeat_kv(k, self.n_rep)  # (B, KV, S, Hd) -> (B, H, S, Hd)
        v = repeat_kv(v, self.n_rep)  # (B, KV, S, Hd) -> (B, H, S, Hd)
        # How well each query matches each key, scaled so the softmax is not too peaked.
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if mask is not None:
            scores = scores + mask  # -inf where a query would look at a later token
        scores = self.tap("scores", scores)
        # float32 island: softmax in float32, then back to the activations' dtype.
        probs = F.softmax(scores.float(), dim=-1).type_as(q)  # (B, H, T, S), rows sum to 1
        probs = self.tap("probs", probs)
        return probs @ v  # (B, H, T, S) @ (B, H, S, Hd) -> (B, H, T, Hd)


class FeedForward(Tappable):
    """SwiGLU: w2(silu(w1 x) * w3 x). w1 is the gate, w3 the up projection, w2 down."""

    tap_points = ("gate", "up", "act", "out")

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        gate = self.tap("gate", self.w1(x))  # (B, T, F)
        up = self.tap("up", self.w3(x))  # (B, T, F)
        act = self.tap("act", F.silu(gate) * up)  # (B, T, F)
        return self.tap("out", self.w2(act))  # (B, T, D)


class TransformerBlock(Tappable):
    """x + attention(norm(x)), then h + feed_forward(norm(h)): pre-norm residual block."""

    # Hook points in forward order; a Child stands for all of that submodule's points.
    tap_order = ("attention_norm", Child("attention", Attention), "resid_mid",
                 "ffn_norm", Child("feed_forward", FeedForward), "resid_post")

    def __init__(self, layer_id: int, args: ModelArgs) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D) residual stream
        start_pos: int,
        freqs_cis: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        attn_in = self.tap("attention_norm", self.attention_norm(x))  # (B, T, D)
        h = self.tap("resid_mid", x + self.attention(attn_in, start_pos, freqs_cis, mask))
        ffn_in = self.tap("ffn_norm", self.ffn_norm(h))  # (B, T, D)
        return self.tap("resid_post", h + self.feed_forward(ffn_in))  # (B, T, D)


class Transformer(Tappable):
    """Token ids (B, T) -> float32 next-token logits (B, T, V)."""

    family = "llama"  # recorded in capture files (llama/taps.py: how a model family plugs in)
    # Hook points in forward order: the embeddings, every block's (layers.0 .. layers.N-1),
    # the final norm, the logits. model.hook_names() lists them all.
    tap_order = ("tok_embeddings", Child("layers", TransformerBlock, per_layer=True),
                 "norm", "logits")

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        args.require_vocab_size()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one matrix, two uses
        # Derived from args, so not saved (persistent=False) and rebuilt by _apply below.
        self.register_buffer("freqs_cis", self.build_freqs_cis(None), persistent=False)

    # -- RoPE table ---------------------------------------------------------------
    def rope_scaling(self) -> dict[str, float] | None:
        """Llama 3 frequency scaling as rope_inv_freq takes it, or None (ModelArgs says)."""
        return self.args.rope_scaling()

    def build_freqs_cis(self, device: torch.device | None) -> torch.Tensor:
        """This model's RoPE table (max_seq_len, Hd/2) on `device`: the one recipe that
        __init__, .to() and the checkpoint loader (after a meta-device build) all use."""
        a = self.args
        return precompute_freqs_cis(
            a.head_dim, a.max_seq_len, a.rope_theta, self.rope_scaling(), device=device
        )

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # model.to(torch.bfloat16) would cast the complex RoPE table to a real dtype and
        # drop its imaginary part. It is derived state: take it out, convert the weights,
        # and rebuild it in complex64 on the weights' new device.
        self._buffers.pop("freqs_cis", None)
        super()._apply(fn, recurse)
        device = self.tok_embeddings.weight.device
        self.register_buffer("freqs_cis", self.build_freqs_cis(device), persistent=False)
        return self

    # -- the forward pass ---------------------------------------------------------
    def forward(
        self, tokens: torch.Tensor, start_pos: int = 0, last_only: bool = False
    ) -> torch.Tensor:
        """tokens (B, T) at positions start_pos .. start_pos+T-1 -> logits (B, T, V).

        last_only=True returns (B, 1, V), the next-token logits only: generation needs
        nothing else, and the output projection is a large share of a long prefill.
        """
        self._check_input(tokens, start_pos)
        B, T = tokens.shape
        h = self.tap("tok_embeddings", self.tok_embeddings(tokens))  # (B, T) -> (B, T, D)
        freqs_cis = self.freqs_cis[start_pos : start_pos + T]  # (T, Hd/2)
        mask = causal_mask(T, start_pos, h.dtype, h.device)  # (T, S) or None
        for layer in self.layers:
            h = layer(h, start_pos, freqs_cis, mask)  # (B, T, D)
        if last_only:
            h = h[:, -1:]  # (B, T, D) -> (B, 1, D)
        h = self.tap("norm", self.norm(h))  # (B, T, D)
        logits = self.output(h).float()  # (B, T, D) -> (B, T, V), float32 whatever the weights
        return self.tap("logits", logits)

    def _check_input(self, tokens: torch.Tensor, start_pos: int) -> None:
        a = self.args
        check_tokens(tokens, start_pos, a.max_seq_len, a.vocab_size, self.tok_embeddings.weight.device)

    # -- helpers ------------------------------------------------------------------
    def reset_cache(self) -> None:
        """Forget all cached keys and values (the next call must use start_pos=0)."""
        for layer in self.layers:
            layer.attention.cache.reset()

    @property
    def cache_length(self) -> int:
        """Number of tokens currently in the KV cache."""
        return self.layers[0].attention.cache.length if len(self.layers) else 0

    def set_attention_impl(self, impl: str) -> None:
        """'sdpa' (fused, default) or 'explicit' (scores and probabilities as tensors)."""
        if impl not in ("sdpa", "explicit"):
            raise ValueError(f"attention impl must be 'sdpa' or 'explicit', got {impl!r}")
        for layer in self.layers:
            layer.attention.impl = impl

    def num_params(self) -> int:
        """Parameters, counting a tied embedding/output matrix once."""
        return sum(p.numel() for p in self.parameters())  # parameters() de-duplicates

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """nn.Module.load_state_dict, plus the two things Meta's checkpoints need.

        Meta's Llama 2 files carry `rope.freqs`, a RoPE table we rebuild ourselves: ignored.
        With tied embeddings, a checkpoint without `output.weight` uses the embedding for
        both, and after loading the two names point at one parameter again.
        """
        state_dict = without_stored_rope_table(state_dict)
        tied = self.args.tie_embeddings
        if tied and "output.weight" not in state_dict and "tok_embeddings.weight" in state_dict:
            state_dict["output.weight"] = state_dict["tok_embeddings.weight"]
        if tied and "output.weight" in state_dict and "tok_embeddings.weight" in state_dict:
            a, b = state_dict["output.weight"], state_dict["tok_embeddings.weight"]
            if a is not b and a.shape == b.shape and a.device.type != "meta" and not torch.equal(a, b):
                raise ConfigError(
                    "tie_embeddings is set but the checkpoint's output.weight differs from "
                    "tok_embeddings.weight: build with tie_embeddings=False"
                )
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if tied:
            self.output.weight = self.tok_embeddings.weight
        return result


def check_tokens(
    tokens: torch.Tensor,
    start_pos: int,
    max_seq_len: int,
    vocab_size: int,
    device: torch.device,
    too_long_hint: str = "shorten the prompt (or build with a larger max_seq_len if the model supports it)",
) -> None:
    """Turn the mistakes users make into messages instead of deep torch errors.

    Every model family here (this Transformer, llama.gpt2.GPT2) calls it first in forward,
    so a bad input gets the same message whichever model it was given to.
    too_long_hint: what to do about a sequence longer than max_seq_len (GPT-2's learned
    positions cannot be extended, RoPE's can).
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(
            f"tokens must be a torch.Tensor of token ids with shape (batch, seq), got "
            f"{type(tokens).__name__}; e.g. model(torch.tensor([ids]))"
        )
    if tokens.dim() != 2:
        raise ValueError(
            f"tokens must have shape (batch, seq), got {tuple(tokens.shape)}; "
            "wrap a single sequence as tokens[None] or torch.tensor([ids])"
        )
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be integer ids (int64), got dtype {tokens.dtype}")
    if tokens.shape[1] == 0:
        raise ValueError("tokens is empty: give at least one token id")
    if not isinstance(start_pos, int) or start_pos < 0:
        raise ValueError(f"start_pos must be a non-negative int, got {start_pos!r}")
    end = start_pos + tokens.shape[1]
    if end > max_seq_len:
        raise ValueError(
            f"sequence of {end} tokens exceeds the model's max_seq_len {max_seq_len}: {too_long_hint}"
        )
    if tokens.device != device:
        raise ValueError(
            f"tokens are on {tokens.device} but the model is on {device}: "
            f"move them with tokens.to('{device}')"
        )
    lo, hi = torch.aminmax(tokens)
    if int(lo) < 0 or int(hi) >= vocab_size:
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}), got min {int(lo)} and "
            f"max {int(hi)}: was the text encoded with this model's tokenizer?"
        )


# Meta's Llama 2 checkpoints store their RoPE table under this name; the model computes its
# own (freqs_cis), so every reader of a Meta state dict drops it.
STORED_ROPE_TABLE = "rope.freqs"


def without_stored_rope_table(state: Mapping[str, V]) -> dict[str, V]:
    """A state dict (or {name: shape}) without Meta's stored RoPE table."""
    return {k: v for k, v in state.items() if k != STORED_ROPE_TABLE}


def causal_mask(
    T: int, start_pos: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """Additive mask (T, S): 0 where query t (position start_pos + t) may look, -inf after.

    A single new token may look at everything cached, so it needs no mask.
    """
    if T == 1:
        return None
    S = start_pos + T
    mask = torch.full((T, S), float("-inf"), device=device)
    return mask.triu(diagonal=start_pos + 1).to(dtype)  # row t is -inf from column start_pos+t+1


__all__ = [
    "ModelArgs",
    "Tappable",
    "RMSNorm",
    "rope_inv_freq",
    "precompute_freqs_cis",
    "apply_rotary_emb",
    "repeat_kv",
    "KVCache",
    "Attention",
    "FeedForward",
    "TransformerBlock",
    "Transformer",
    "causal_mask",
    "check_tokens",
    "STORED_ROPE_TABLE",
    "without_stored_rope_table",
]
