"""GPT-2 in plain PyTorch, readable top to bottom, with the Llama model's hook names.

Follow one token: GPT2.forward looks it up in tok_embeddings and adds the learned vector
of its position (pos_embeddings); each GPT2Block then adds attention (LayerNorm -> one
fused projection wqkv, split into q, k and v -> KV cache -> softmax(q k^T / sqrt(Hd)) v
-> wo) and an MLP (LayerNorm -> w1 -> GELU -> w2) to the residual stream; a final
LayerNorm and the output projection, which *is* the token-embedding matrix, give logits.

What differs from Llama (llama/model.py), and nothing else does:
  * LayerNorm (subtract the mean, divide by the standard deviation, scale, shift) where
    Llama has RMSNorm;
  * learned absolute positions, added once to the input, where Llama rotates q and k
    (RoPE) inside every attention layer;
  * one fused q/k/v projection, and every head has its own keys and values (no
    grouped-query attention);
  * a GELU MLP with two matrices (up w1, down w2) where Llama's SwiGLU has three;
  * a bias on every linear layer and every norm;
  * the output projection tied to the token embedding.

Parameter names are the Llama model's where the part is the same (tok_embeddings,
layers.N.attention_norm, layers.N.attention.wo, layers.N.ffn_norm, norm, output) and the
original Transformer paper's for the MLP (FFN(x) = W2 act(W1 x)). Hugging Face's names
(wte, h.N.attn.c_attn, h.N.mlp.c_fc, ...) are mapped to these, and its transposed Conv1D
weights turned into nn.Linear's layout, in weights/gpt2.py.

Shape legend used in the comments (the same letters as llama/model.py):
    B   batch size                    T   tokens fed in this call
    S   tokens attended to (cached + new = start_pos + T)
    D   model width (n_embd)          F   MLP hidden size (4 D)
    H   heads                         Hd  head size (D / H)
    V   vocabulary size               P   learned positions (n_positions)

Hook points: every intermediate passes through `self.tap(name, value)` (see
llama/taps.py). Where a value means the same as in the Llama model it has the same name
(layers.3.attention.probs, layers.3.resid_post, ...). GPT-2 adds pos_embeddings (the
position vectors) and embeddings (token + position: the residual stream entering layers.0,
what Llama's tok_embeddings is there), and has no q_rot/k_rot (no RoPE) and no
feed_forward.gate (no SwiGLU). Each class declares its
taps in forward order (`tap_points`, or `tap_order` where it has tappable children), and
`model.hook_names()` expands them, as for Llama.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .model import KVCache, Transformer, causal_mask, check_tokens
from .taps import Child, Tappable

# ----------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------

# Names Hugging Face configs give GPT-2's activation. All are the tanh approximation of
# GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), which GPT-2 was trained with.
GELU_TANH_NAMES = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclass
class GPT2Config:
    """GPT-2's hyper-parameters, under the field names of its Hugging Face config.json.

    It lives here, beside the model it describes, because nothing but GPT2 uses it. The
    properties below answer to the names every model of this project offers (n_layers,
    dim, n_heads, ... as llama.config.ModelArgs spells them), so generic code needs no
    GPT-2 case. The defaults are GPT-2 small (124M parameters).
    """

    vocab_size: int = 50257
    n_positions: int = 1024  # learned positions P: the longest sequence GPT-2 can read
    n_embd: int = 768  # model (residual stream) width D
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP hidden size F; None = 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True  # output projection = token-embedding matrix

    family: ClassVar[str] = "gpt2"

    def __post_init__(self) -> None:
        self.validate()

    # -- the model protocol's names ---------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.n_layer

    @property
    def n_heads(self) -> int:
        return self.n_head

    @property
    def n_kv_heads(self) -> int:
        return self.n_head  # every query head has its own keys and values

    @property
    def dim(self) -> int:
        return self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_dim(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    @property
    def max_seq_len(self) -> int:
        return self.n_positions

    @property
    def norm_eps(self) -> float:
        return self.layer_norm_epsilon

    @property
    def tie_embeddings(self) -> bool:
        return self.tie_word_embeddings

    # ------------------------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive integer, got {value!r}",
            )
        need(
            self.n_embd % self.n_head == 0,
            f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})",
        )
        if self.n_inner is not None:
            need(
                isinstance(self.n_inner, int) and not isinstance(self.n_inner, bool) and self.n_inner > 0,
                f"n_inner must be a positive integer (or None for 4 * n_embd), got {self.n_inner!r}",
            )
        need(
            self.activation_function in GELU_TANH_NAMES,
            f"activation_function {self.activation_function!r} is not supported: GPT-2 uses "
            f"the tanh approximation of GELU ({', '.join(repr(n) for n in GELU_TANH_NAMES)}).",
        )
        need(
            self.layer_norm_epsilon > 0,
            f"layer_norm_epsilon must be positive, got {self.layer_norm_epsilon!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], **overrides: Any) -> "GPT2Config":
        """Build from a transformers config.json dict of model_type gpt2.

        Keys that only matter for training (dropouts, initializer_range, summary_*) are
        ignored; keys that would change the computation in a way this model does not
        implement are refused, never dropped.
        """
        model_type = config.get("model_type")
        if model_type != "gpt2":
            raise ConfigError(f"model_type {model_type!r} is not GPT-2: expected 'gpt2'.")

        def get(key: str, default: Any = None, required: bool = False) -> Any:
            if key not in config or config[key] is None:
                if required:
                    raise ConfigError(f"config.json (model_type gpt2) lacks {key!r}")
                return default
            return config[key]

        if not get("scale_attn_weights", True):
            raise ConfigError("scale_attn_weights=false (no 1/sqrt(head_dim) scaling) is not supported.")
        if get("scale_attn_by_inverse_layer_idx", False):
            raise ConfigError("scale_attn_by_inverse_layer_idx=true is not supported (GPT-2 does not use it).")
        if get("add_cross_attention", False):
            raise ConfigError("add_cross_attention=true (an encoder-decoder GPT-2) is not supported.")
        # reorder_and_upcast_attn only changes where float16 rounding happens: accepted.
        fields: dict[str, Any] = dict(
            vocab_size=get("vocab_size", required=True),
            n_positions=get("n_positions", 1024),
            n_embd=get("n_embd", required=True),
            n_layer=get("n_layer", required=True),
            n_head=get("n_head", required=True),
            n_inner=get("n_inner"),
            activation_function=get("activation_function", "gelu_new"),
            layer_norm_epsilon=float(get("layer_norm_epsilon", 1e-5)),
            tie_word_embeddings=bool(get("tie_word_embeddings", True)),
        )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"cannot override {', '.join(unknown)} on a GPT-2 config; its fields are "
                f"{', '.join(sorted(known))} (GPT-2 learns its n_positions positions, so the "
                "longest sequence is fixed by the checkpoint)."
            )
        fields.update(overrides)
        return cls(**fields)

    def to_hf_config(self) -> dict[str, Any]:
        """The transformers config.json for these hyper-parameters."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "activation_function": self.activation_function,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        }


# ----------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """(x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the last dimension.

    RMSNorm (Llama) skips the mean and the bias; LayerNorm centres each vector first.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        # float32 island: mean and variance in float32, whatever the activations' dtype.
        x32 = x.float()
        centred = x32 - x32.mean(-1, keepdim=True)
        var = centred.pow(2).mean(-1, keepdim=True)  # divided by D, not D - 1
        normed = centred * torch.rsqrt(var + self.eps)
        return normed.type_as(x) * self.weight + self.bias


class GPT2Attention(Tappable):
    """Causal multi-head attention with one fused q/k/v projection and a KV cache."""

    tap_points = ("q", "k", "v", "scores", "probs", "heads", "out")

    def __init__(self, args: GPT2Config) -> None:
        super().__init__()
        self.n_heads = args.n_head
        self.head_dim = args.head_dim
        D = args.n_embd
        # One matrix computes q, k and v at once: its 3D output features are [q | k | v].
        self.wqkv = nn.Linear(D, 3 * D, bias=True)
        self.wo = nn.Linear(D, D, bias=True)
        self.cache = KVCache(args.n_positions)
        # "sdpa" (fused) or "explicit" (scores and probabilities as tensors), exactly as
        # in llama.model.Attention; llama.hooks switches it when scores/probs are wanted.
        self.impl = "sdpa"

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D), already normalised
        start_pos: int,
        mask: torch.Tensor | None,  # (T, S) additive, or None when T == 1
    ) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.wqkv(x).split(D, dim=-1)  # (B, T, 3D) -> 3 x (B, T, D)
        # Split the last dimension into heads.
        q = q.view(B, T, self.n_heads, self.head_dim)  # (B, T, D) -> (B, T, H, Hd)
        k = k.view(B, T, self.n_heads, self.head_dim)  # (B, T, D) -> (B, T, H, Hd)
        v = v.view(B, T, self.n_heads, self.head_dim)  # (B, T, D) -> (B, T, H, Hd)
        q, k, v = self.tap("q", q), self.tap("k", k), self.tap("v", v)

        # Heads become a batch dimension for the matrix products.
        q = q.transpose(1, 2)  # (B, T, H, Hd) -> (B, H, T, Hd)
        k = k.transpose(1, 2)  # (B, T, H, Hd) -> (B, H, T, Hd)
        v = v.transpose(1, 2)  # (B, T, H, Hd) -> (B, H, T, Hd)
        k, v = self.cache.update(start_pos, k, v)  # (B, H, S, Hd): every token so far

        if self.impl == "explicit":
            out = self.explicit_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Hd)

        out = out.transpose(1, 2)  # (B, H, T, Hd) -> (B, T, H, Hd)
        out = self.tap("heads", out)  # each head's output before wo mixes them
        out = self.wo(out.reshape(B, T, D))  # (B, T, H, Hd) -> (B, T, D)
        return self.tap("out", out)

    def explicit_attention(
        self,
        q: torch.Tensor,  # (B, H, T, Hd)
        k: torch.Tensor,  # (B, H, S, Hd)
        v: torch.Tensor,  # (B, H, S, Hd)
        mask: torch.Tensor | None,  # (T, S)
    ) -> torch.Tensor:
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if mask is not None:
            scores = scores + mask  # -inf where a query would look at a later token
        scores = self.tap("scores", scores)
        # float32 island: softmax in float32, then back to the activations' dtype.
        probs = F.softmax(scores.float(), dim=-1).type_as(q)  # (B, H, T, S), rows sum to 1
        probs = self.tap("probs", probs)
        return probs @ v  # (B, H, T, S) @ (B, H, S, Hd) -> (B, H, T, Hd)

    def split_qkv(self) -> dict[str, torch.Tensor]:
        """The fused projection's three parts as views: wq, wk, wv weights (D, D) and their
        biases (D,), for looking at q, k and v separately (nothing is copied)."""
        D = self.wo.out_features
        w, b = self.wqkv.weight, self.wqkv.bias
        return {
            "wq.weight": w[:D], "wk.weight": w[D : 2 * D], "wv.weight": w[2 * D :],
            "wq.bias": b[:D], "wk.bias": b[D : 2 * D], "wv.bias": b[2 * D :],
        }


class GPT2MLP(Tappable):
    """w2(gelu(w1 x)): up to F = 4D features, GELU, back down to D."""

    tap_points = ("up", "act", "out")

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=True)  # up (Hugging Face: mlp.c_fc)
        self.w2 = nn.Linear(hidden_dim, dim, bias=True)  # down (Hugging Face: mlp.c_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        up = self.tap("up", self.w1(x))  # (B, T, F)
        # GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
        act = self.tap("act", F.gelu(up, approximate="tanh"))  # (B, T, F)
        return self.tap("out", self.w2(act))  # (B, T, D)


class GPT2Block(Tappable):
    """x + attention(norm(x)), then h + mlp(norm(h)): the same pre-norm block as Llama's."""

    # Hook points in forward order; a Child stands for all of that submodule's points.
    tap_order = ("attention_norm", Child("attention", GPT2Attention), "resid_mid",
                 "ffn_norm", Child("feed_forward", GPT2MLP), "resid_post")

    def __init__(self, layer_id: int, args: GPT2Config) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention_norm = LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)  # HF: ln_1
        self.attention = GPT2Attention(args)
        self.ffn_norm = LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)  # HF: ln_2
        self.feed_forward = GPT2MLP(args.n_embd, args.hidden_dim)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D) residual stream
        start_pos: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        attn_in = self.tap("attention_norm", self.attention_norm(x))  # (B, T, D)
        h = self.tap("resid_mid", x + self.attention(attn_in, start_pos, mask))
        ffn_in = self.tap("ffn_norm", self.ffn_norm(h))  # (B, T, D)
        return self.tap("resid_post", h + self.feed_forward(ffn_in))  # (B, T, D)


class GPT2(Tappable):
    """Token ids (B, T) -> float32 next-token logits (B, T, V)."""

    family = "gpt2"  # recorded in capture files (llama/taps.py: how a model family plugs in)
    # Hook points in forward order: token and position embeddings, every block's, the final
    # norm, the logits. model.hook_names() lists them all.
    tap_order = ("tok_embeddings", "pos_embeddings", "embeddings",
                 Child("layers", GPT2Block, per_layer=True), "norm", "logits")

    def __init__(self, args: GPT2Config) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.n_embd)  # HF: wte
        self.pos_embeddings = nn.Embedding(args.n_positions, args.n_embd)  # HF: wpe
        self.layers = nn.ModuleList(GPT2Block(i, args) for i in range(args.n_layer))
        self.norm = LayerNorm(args.n_embd, eps=args.layer_norm_epsilon)  # HF: ln_f
        self.output = nn.Linear(args.n_embd, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one matrix, two uses

    def forward(
        self, tokens: torch.Tensor, start_pos: int = 0, last_only: bool = False
    ) -> torch.Tensor:
        """tokens (B, T) at positions start_pos .. start_pos+T-1 -> logits (B, T, V).

        last_only=True returns (B, 1, V), the next-token logits only.
        """
        a = self.args
        check_tokens(
            tokens, start_pos, a.n_positions, a.vocab_size, self.tok_embeddings.weight.device,
            too_long_hint=f"GPT-2 has learned vectors for {a.n_positions} positions only, "
            "so shorten the prompt",
        )
        B, T = tokens.shape
        tok = self.tap("tok_embeddings", self.tok_embeddings(tokens))  # (B, T) -> (B, T, D)
        positions = torch.arange(start_pos, start_pos + T, device=tokens.device)  # (T,)
        # The same position vectors for every sequence of the batch.
        pos = self.pos_embeddings(positions).expand(B, T, a.n_embd)  # (T, D) -> (B, T, D)
        pos = self.tap("pos_embeddings", pos)
        # (B, T, D): the residual stream starts as token + position. This is what enters
        # layers.0 (Llama's tok_embeddings plays that part; llama/family.py records which).
        h = self.tap("embeddings", tok + pos)
        mask = causal_mask(T, start_pos, h.dtype, h.device)  # (T, S) or None
        for layer in self.layers:
            h = layer(h, start_pos, mask)  # (B, T, D)
        if last_only:
            h = h[:, -1:]  # (B, T, D) -> (B, 1, D)
        h = self.tap("norm", self.norm(h))  # (B, T, D)
        logits = self.output(h).float()  # (B, T, D) -> (B, T, V), float32 whatever the weights
        return self.tap("logits", logits)

    # -- helpers: one definition for both families (they only touch layers[i].attention) --
    reset_cache = Transformer.reset_cache
    cache_length = Transformer.cache_length
    set_attention_impl = Transformer.set_attention_impl
    num_params = Transformer.num_params

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """nn.Module.load_state_dict, keeping the tie: with tied embeddings a state dict
        without output.weight uses the embedding for both, one whose output.weight differs
        from the embedding is refused, and afterwards both names point at one parameter."""
        state_dict = dict(state_dict)
        tied = self.args.tie_word_embeddings
        emb, out = state_dict.get("tok_embeddings.weight"), state_dict.get("output.weight")
        if tied and out is None and emb is not None:
            state_dict["output.weight"] = emb
        elif tied and out is not None and emb is not None and out is not emb:
            if out.shape == emb.shape and out.device.type != "meta" and not torch.equal(out, emb):
                raise ConfigError(
                    "tie_word_embeddings is set but output.weight differs from "
                    "tok_embeddings.weight: build with tie_word_embeddings=False"
                )
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if tied:
            self.output.weight = self.tok_embeddings.weight
        return result


__all__ = [
    "GPT2Config",
    "GELU_TANH_NAMES",
    "LayerNorm",
    "GPT2Attention",
    "GPT2MLP",
    "GPT2Block",
    "GPT2",
]
