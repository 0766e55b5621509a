"""Where transformers keeps the value each of our hook points holds, one table per family.

A parity run compares our model with transformers point by point. For every hook point
(`layers.3.attention.q`) the family's table says where the same number lives on the
transformers side and how to turn it into our layout:

    hidden_states[k]   transformers' output_hidden_states (k = 0 embeddings, k = i + 1
                       after layer i; the last entry has the final norm applied, so the
                       last layer's residual comes from a hook on the layer instead)
    attentions[i]      output_attentions with eager attention: probabilities (B, H, T, S)
    logits             the model output
    a module's input or output
                       a forward hook on a submodule of the decoder layer
                       (`self_attn.q_proj` output is our `attention.q`)
    derived            computed from captured values with transformers' own functions
                       (our q_rot/k_rot: its q_proj/k_proj outputs rotated by its
                       apply_rotary_pos_emb with the cos/sin its model passed to the layer)

A family is one `Family` here (LLAMA, GPT2): its layer list, its table, its culprit
wording, and how its config names our fields. Nothing else in llama.parity knows module
names, except the few lines of llama.parity.layerwise that call one layer of each side.
Which table a model of ours gets is llama.family's answer for it (`family_for_model`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

# ---------------------------------------------------------------------------------------
# Layout conversions: transformers' tensor -> our layout (see llama/hooks.py for ours)
# ---------------------------------------------------------------------------------------


def pairs_from_rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Head vectors in Hugging Face's rotate-half order -> Meta's interleaved pairs.

    Rotate-half pairs dimension j with j + Hd/2; Meta pairs 2j with 2j + 1. So our
    element 2j is theirs j and our 2j + 1 is theirs j + Hd/2. (..., Hd) -> (..., Hd)
    """
    half = x.shape[-1] // 2
    # (..., Hd) -> (..., 2, Hd/2) -> (..., Hd/2, 2) -> (..., Hd)
    return x.unflatten(-1, (2, half)).transpose(-1, -2).flatten(-2)


def rotate_half_from_pairs(x: torch.Tensor) -> torch.Tensor:
    """The inverse: Meta's interleaved pairs -> rotate-half order. (..., Hd) -> (..., Hd)"""
    half = x.shape[-1] // 2
    # (..., Hd) -> (..., Hd/2, 2) -> (..., 2, Hd/2) -> (..., Hd)
    return x.unflatten(-1, (half, 2)).transpose(-1, -2).flatten(-2)


def _split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, head_dim))  # (B, T, heads*Hd) -> (B, T, heads, Hd)


def same(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x


def heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, heads*Hd) -> (B, T, heads, Hd): v_proj output, o_proj input."""
    return _split_heads(x, head_dim)


def rotary_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, heads*Hd) rotate-half rows -> (B, T, heads, Hd) interleaved: q_proj, k_proj."""
    return pairs_from_rotate_half(_split_heads(x, head_dim))


def rotated_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, heads, T, Hd) after transformers' RoPE -> (B, T, heads, Hd) interleaved."""
    return pairs_from_rotate_half(x.transpose(1, 2))


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where transformers holds one value. kind: "hidden_states" | "attentions" |
    "logits" | "module" | "derived"."""

    kind: str
    # "module": path below the decoder layer for a per-layer point ("" = the layer itself),
    # below the transformers model for a top-level one ("transformer.wpe").
    module: str = ""
    io: str = "output"  # "module": "output" or "input" (the first positional input)
    index: int = 0  # "hidden_states": index, or offset from the layer number (per layer)
    layout: Callable[[torch.Tensor, int], torch.Tensor] = same
    label: str = ""  # how the report names it, when the module and io do not say enough

    def describe(self, layer: int | None = None, n_layers: int | None = None) -> str:
        if self.label:
            return self.label
        if self.kind == "hidden_states":
            k = self.index if layer is None else layer + self.index
            if k < 0 and n_layers is not None:
                k += n_layers + 1
            return f"hidden_states[{k}]"
        if self.kind == "attentions":
            return f"attentions[{layer}]"
        if self.kind == "logits":
            return "logits"
        if self.kind == "derived":
            return self.module
        where = self.module or "decoder layer"
        return f"{where} {self.io}"


@dataclass(frozen=True)
class Family:
    """One model family's correspondence with transformers."""

    name: str  # llama.family's name for the family ("llama", "gpt2"): how our models find it
    model_types: tuple[str, ...]  # transformers config.model_type values it covers
    layers: str  # path of the decoder-layer list in the transformers model
    top: dict[str, Source]  # our top-level hook names -> source
    per_layer: dict[str, Source]  # our per-layer local names -> source
    # Paths of the other parts, for running one part at a time (llama.parity.layerwise).
    embeddings: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    head: str = "lm_head"
    rotary: str = "model.rotary_emb"  # "" for a family without RoPE
    positions: str = ""  # learned position embeddings (GPT-2's wpe), "" for none
    attn_weights_of: str = "self_attn"  # the module whose output[1] is the probabilities
    # The last layer's residual: transformers' last hidden state is after the final norm.
    last_resid: Source = Source("module", "")
    # Per layer: submodule whose call kwargs a derived value needs ("self_attn"), or "".
    kwargs_of: str = ""
    # Derived values: local name -> fn(raw captures of the layer, kwargs, hf layer) -> tensor
    # in transformers' layout (then converted with the Source's layout).
    derived: dict[str, Callable[..., torch.Tensor]] = field(default_factory=dict)
    derived_needs: tuple[str, ...] = ()  # submodules whose outputs the derived values read
    # Likely culprit when a local name is the first to diverge.
    culprits: dict[str, str] = field(default_factory=dict)
    # Config values to compare: (label, fn(our model.args) -> value, fn(hf config) -> value).
    config_pairs: tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any]], ...] = ()
    # Which config labels bear on which first-diverging local name (culprit evidence).
    evidence: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Our state dict (Meta names) -> transformers' state dict, for formats transformers
    # cannot read itself (Meta's .pth): fn(state, args) -> dict.
    to_reference_state: Callable[[dict[str, torch.Tensor], Any], dict[str, torch.Tensor]] | None = None

    def source(self, hook: str, n_layers: int) -> tuple[int | None, str, Source] | None:
        """(layer or None, local name, source) for one of our hook names, or None."""
        if hook in self.top:
            return None, hook, self.top[hook]
        parts = hook.split(".", 2)
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
            layer, local = int(parts[1]), parts[2]
            src = self.per_layer.get(local)
            if src is None:
                return None
            if local == "resid_post" and layer == n_layers - 1:
                src = self.last_resid
            return layer, local, src
        return None


# ---------------------------------------------------------------------------------------
# Llama, Qwen2 and Mistral (full attention): transformers' LlamaForCausalLM family
# ---------------------------------------------------------------------------------------


def _rope(which: int) -> Callable[..., torch.Tensor]:
    """q_rot (which=0) or k_rot (which=1): transformers' own RoPE applied to its q/k."""

    def derive(raw: dict[str, torch.Tensor], kwargs: dict[str, Any], layer: torch.nn.Module) -> torch.Tensor:
        attn = layer.self_attn
        hd = attn.head_dim
        # (B, T, heads*Hd) -> (B, heads, T, Hd), as its attention forward does.
        q = raw["self_attn.q_proj output"].unflatten(-1, (-1, hd)).transpose(1, 2)
        k = raw["self_attn.k_proj output"].unflatten(-1, (-1, hd)).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        # The function the modeling file itself calls (Llama's, Qwen2's or Mistral's).
        apply = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        return apply(q, k, cos, sin)[which]  # (B, heads, T, Hd)

    return derive


def _rope_theta(cfg: Any) -> float | None:
    params = getattr(cfg, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", None))
    return None if theta is None else float(theta)


def _rope_scaling(cfg: Any) -> str:
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    params.update(getattr(cfg, "rope_scaling", None) or {})
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "llama3":
        return (
            f"llama3(factor={float(params['factor']):g}, low={float(params.get('low_freq_factor', 1)):g}, "
            f"high={float(params.get('high_freq_factor', 4)):g}, "
            f"original={int(params.get('original_max_position_embeddings', 8192))})"
        )
    return str(kind)


def ours_rope_scaling(args: Any) -> str:
    if not getattr(args, "use_scaled_rope", False):
        return "default"
    return (
        f"llama3(factor={float(args.rope_scaling_factor):g}, low={float(args.rope_low_freq_factor):g}, "
        f"high={float(args.rope_high_freq_factor):g}, original={int(args.rope_original_max_seq_len)})"
    )


def _qkv_bias(cfg: Any) -> bool:
    return cfg.model_type == "qwen2" or bool(getattr(cfg, "attention_bias", False))


_LLAMA_RENAMES = {  # our names (Meta's) -> transformers' names, per layer
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def llama_reference_state(state: dict[str, torch.Tensor], args: Any) -> dict[str, torch.Tensor]:
    """Our (Meta) state dict -> LlamaForCausalLM's, written here independently of
    weights.convert, so that a parity run of a Meta folder does not trust our converter.

    q/k rows (and Qwen2's q/k bias) go from interleaved pairs to rotate-half order.
    """
    out: dict[str, torch.Tensor] = {}
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    for name, t in state.items():
        if name in top:
            out[top[name]] = t
            continue
        _, i, rest = name.split(".", 2)  # layers.{i}.attention.wq.weight
        stem, kind = rest.rsplit(".", 1)
        if stem in ("attention.wq", "attention.wk"):
            n = args.n_heads if stem == "attention.wq" else args.n_kv_heads
            # (heads*Hd, ...) -> (heads, Hd, ...): permute each head's rows, then back.
            rows = t.unflatten(0, (n, args.head_dim))
            t = rotate_half_from_pairs(rows.movedim(1, -1)).movedim(-1, 1).flatten(0, 1)
        out[f"model.layers.{i}.{_LLAMA_RENAMES[stem]}.{kind}"] = t
    return out


LLAMA_CULPRITS = {
    "tok_embeddings": "the token embedding matrix (how tok_embeddings.weight was read or dequantised)",
    "attention_norm": "the RMSNorm before attention: its eps or its weight",
    "attention.q": "the query projection wq: its weight, the q/k row order (rotate-half vs interleaved), or its bias",
    "attention.k": "the key projection wk: its weight, the q/k row order (rotate-half vs interleaved), or its bias",
    "attention.v": "the value projection wv: its weight or its bias",
    "attention.q_rot": "RoPE: the positions, theta, the llama3 frequency scaling, or the pairing of dimensions",
    "attention.k_rot": "RoPE: the positions, theta, the llama3 frequency scaling, or the pairing of dimensions",
    "attention.probs": "the attention scores: the 1/sqrt(head_dim) scale, the causal mask, or which key heads "
    "the query heads share (grouped-query attention)",
    "attention.heads": "the weighted sum of values, or which value heads the query heads share",
    "attention.out": "the attention output projection wo (o_proj)",
    "resid_mid": "the residual connection around attention",
    "ffn_norm": "the RMSNorm before the feed-forward: its eps or its weight",
    "feed_forward.gate": "the feed-forward gate projection w1 (gate_proj)",
    "feed_forward.up": "the feed-forward up projection w3 (up_proj)",
    "feed_forward.act": "the activation silu(gate) * up",
    "feed_forward.out": "the feed-forward down projection w2 (down_proj)",
    "resid_post": "the residual connection around the feed-forward",
    "norm": "the final RMSNorm: its eps or its weight",
    "logits": "the output matrix: tied to the embedding or not, or how output.weight was read",
}

LLAMA = Family(
    name="llama",
    model_types=("llama", "qwen2", "mistral"),
    layers="model.layers",
    top={
        "tok_embeddings": Source("hidden_states", index=0),
        # transformers applies the final norm to its last hidden state.
        "norm": Source("hidden_states", index=-1),
        "logits": Source("logits"),
    },
    per_layer={
        "attention_norm": Source("module", "input_layernorm"),
        "attention.q": Source("module", "self_attn.q_proj", layout=rotary_heads),
        "attention.k": Source("module", "self_attn.k_proj", layout=rotary_heads),
        "attention.v": Source("module", "self_attn.v_proj", layout=heads),
        "attention.q_rot": Source("derived", "apply_rotary_pos_emb(q)", layout=rotated_heads),
        "attention.k_rot": Source("derived", "apply_rotary_pos_emb(k)", layout=rotated_heads),
        "attention.probs": Source("attentions"),
        "attention.heads": Source("module", "self_attn.o_proj", io="input", layout=heads),
        "attention.out": Source("module", "self_attn.o_proj"),
        "resid_mid": Source("module", "post_attention_layernorm", io="input"),
        "ffn_norm": Source("module", "post_attention_layernorm"),
        "feed_forward.gate": Source("module", "mlp.gate_proj"),
        "feed_forward.up": Source("module", "mlp.up_proj"),
        "feed_forward.act": Source("module", "mlp.down_proj", io="input"),
        "feed_forward.out": Source("module", "mlp"),
        "resid_post": Source("hidden_states", index=1),  # hidden_states[i + 1]
    },
    kwargs_of="self_attn",
    derived={"attention.q_rot": _rope(0), "attention.k_rot": _rope(1)},
    derived_needs=("self_attn.q_proj", "self_attn.k_proj"),
    culprits=LLAMA_CULPRITS,
    config_pairs=(
        ("width (hidden_size)", lambda a: a.dim, lambda c: c.hidden_size),
        ("layers (num_hidden_layers)", lambda a: a.n_layers, lambda c: c.num_hidden_layers),
        ("query heads (num_attention_heads)", lambda a: a.n_heads, lambda c: c.num_attention_heads),
        ("key/value heads (num_key_value_heads)", lambda a: a.n_kv_heads, lambda c: c.num_key_value_heads),
        ("feed-forward size (intermediate_size)", lambda a: a.hidden_dim, lambda c: c.intermediate_size),
        ("vocabulary (vocab_size)", lambda a: a.vocab_size, lambda c: c.vocab_size),
        ("norm eps (rms_norm_eps)", lambda a: float(a.norm_eps), lambda c: float(c.rms_norm_eps)),
        ("RoPE theta", lambda a: float(a.rope_theta), _rope_theta),
        ("RoPE scaling", ours_rope_scaling, _rope_scaling),
        ("tied embeddings (tie_word_embeddings)", lambda a: bool(a.tie_embeddings), lambda c: bool(c.tie_word_embeddings)),
        ("q/k/v bias", lambda a: bool(a.attention_bias), _qkv_bias),
    ),
    evidence={
        "tok_embeddings": ("vocabulary (vocab_size)",),
        "attention_norm": ("norm eps (rms_norm_eps)",),
        "ffn_norm": ("norm eps (rms_norm_eps)",),
        "norm": ("norm eps (rms_norm_eps)",),
        "attention.q": ("q/k/v bias", "query heads (num_attention_heads)"),
        "attention.k": ("q/k/v bias", "key/value heads (num_key_value_heads)"),
        "attention.v": ("q/k/v bias", "key/value heads (num_key_value_heads)"),
        "attention.q_rot": ("RoPE theta", "RoPE scaling"),
        "attention.k_rot": ("RoPE theta", "RoPE scaling"),
        "attention.probs": ("key/value heads (num_key_value_heads)",),
        "attention.heads": ("key/value heads (num_key_value_heads)",),
        "logits": ("tied embeddings (tie_word_embeddings)", "vocabulary (vocab_size)"),
    },
    to_reference_state=llama_reference_state,
)

# ---------------------------------------------------------------------------------------
# GPT-2: transformers' GPT2LMHeadModel
# ---------------------------------------------------------------------------------------
#
# Two things to mind. Its four projections are Conv1D modules: x @ W + b with W stored as
# (in, out), the transpose of nn.Linear's. Their *outputs* are laid out as a Linear's, so
# the table reads them as they are; only weights handed across (gpt2_reference_state)
# turn around. And hidden_states[0] is token + position embeddings (what enters the first
# block, our `embeddings`), not the token embeddings alone: those are wte's output.


def qkv_third(which: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """c_attn's output (B, T, 3D) = [q | k | v] -> one third, split into heads (B, T, H, Hd).
    GPT-2 has no RoPE, so no row reordering: the heads are in order, as ours."""

    def layout(x: torch.Tensor, head_dim: int) -> torch.Tensor:
        return _split_heads(x.chunk(3, dim=-1)[which], head_dim)  # (B, T, 3D) -> (B, T, H, Hd)

    return layout


def _gelu_kind(name: str) -> str:
    """GPT-2's activation names that compute the same function, as one label."""
    from ..gpt2 import GELU_TANH_NAMES

    return "gelu (tanh approximation)" if name in GELU_TANH_NAMES else str(name)


_GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_GPT2_RENAMES = {  # our names -> transformers' names, per layer
    "attention_norm": "ln_1",
    "attention.wqkv": "attn.c_attn",
    "attention.wo": "attn.c_proj",
    "ffn_norm": "ln_2",
    "feed_forward.w1": "mlp.c_fc",
    "feed_forward.w2": "mlp.c_proj",
}
_GPT2_TOP = {"tok_embeddings.weight": "transformer.wte.weight", "pos_embeddings.weight": "transformer.wpe.weight",
             "norm.weight": "transformer.ln_f.weight", "norm.bias": "transformer.ln_f.bias",
             "output.weight": "lm_head.weight"}


def gpt2_reference_state(state: dict[str, torch.Tensor], args: Any) -> dict[str, torch.Tensor]:
    """Our GPT-2 state dict -> GPT2LMHeadModel's (written here, not borrowed from
    weights.gpt2, so that the layer-by-layer run of a GGUF file does not trust our reader's
    name map). Our projections are nn.Linear (out, in); transformers' Conv1D keeps (in, out)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name in _GPT2_TOP:
            out[_GPT2_TOP[name]] = t
            continue
        _, i, rest = name.split(".", 2)  # layers.{i}.attention.wqkv.weight
        stem, kind = rest.rsplit(".", 1)
        theirs = _GPT2_RENAMES[stem]
        if kind == "weight" and theirs in _GPT2_CONV1D:
            t = t.t()  # (out, in) -> Conv1D's (in, out)
        out[f"transformer.h.{i}.{theirs}.{kind}"] = t
    return out


GPT2_CULPRITS = {
    "tok_embeddings": "the token embedding matrix (wte): how tok_embeddings.weight was read or dequantised",
    "pos_embeddings": "the learned position embeddings (wpe): how pos_embeddings.weight was read, or which "
    "positions were looked up (an offset from start_pos; GPT-2 has no RoPE)",
    "embeddings": "the sum token + position embeddings that enters layer 0 (position embeddings added once, "
    "to every sequence of the batch)",
    "attention_norm": "the LayerNorm before attention (ln_1): its eps, its weight or its bias",
    "attention.q": "the query third of the fused projection wqkv (c_attn): its weight or bias, the Conv1D "
    "(in, out) transposition, or the q | k | v split order",
    "attention.k": "the key third of the fused projection wqkv (c_attn): its weight or bias, the Conv1D "
    "(in, out) transposition, or the q | k | v split order",
    "attention.v": "the value third of the fused projection wqkv (c_attn): its weight or bias, the Conv1D "
    "(in, out) transposition, or the q | k | v split order",
    "attention.probs": "the attention scores: the 1/sqrt(head_dim) scale or the causal mask",
    "attention.heads": "the weighted sum of values",
    "attention.out": "the attention output projection wo (attn.c_proj): its weight or bias, or the Conv1D "
    "(in, out) transposition",
    "resid_mid": "the residual connection around attention",
    "ffn_norm": "the LayerNorm before the MLP (ln_2): its eps, its weight or its bias",
    "feed_forward.up": "the MLP up projection w1 (mlp.c_fc): its weight or bias, or the Conv1D (in, out) "
    "transposition",
    "feed_forward.act": "the activation: GELU with the tanh approximation (gelu_new), not exact GELU",
    "feed_forward.out": "the MLP down projection w2 (mlp.c_proj): its weight or bias, or the Conv1D (in, out) "
    "transposition",
    "resid_post": "the residual connection around the MLP",
    "norm": "the final LayerNorm (ln_f): its eps, its weight or its bias",
    "logits": "the output matrix: tied to the token embedding (wte) or not, or how output.weight was read",
}

GPT2_FAMILY = Family(  # named so, not GPT2: that is our model class (llama.gpt2.GPT2)
    name="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    top={
        # wte's output: hidden_states[0] already has the positions added.
        "tok_embeddings": Source("module", "transformer.wte"),
        "pos_embeddings": Source("module", "transformer.wpe"),
        "embeddings": Source("hidden_states", index=0),
        # transformers applies ln_f to its last hidden state.
        "norm": Source("hidden_states", index=-1),
        "logits": Source("logits"),
    },
    per_layer={
        "attention_norm": Source("module", "ln_1"),
        "attention.q": Source("module", "attn.c_attn", layout=qkv_third(0), label="attn.c_attn output [:D]"),
        "attention.k": Source("module", "attn.c_attn", layout=qkv_third(1), label="attn.c_attn output [D:2D]"),
        "attention.v": Source("module", "attn.c_attn", layout=qkv_third(2), label="attn.c_attn output [2D:]"),
        "attention.probs": Source("attentions"),
        "attention.heads": Source("module", "attn.c_proj", io="input", layout=heads),
        "attention.out": Source("module", "attn.c_proj"),
        "resid_mid": Source("module", "ln_2", io="input"),
        "ffn_norm": Source("module", "ln_2"),
        "feed_forward.up": Source("module", "mlp.c_fc"),
        "feed_forward.act": Source("module", "mlp.act"),
        "feed_forward.out": Source("module", "mlp"),
        "resid_post": Source("hidden_states", index=1),  # hidden_states[i + 1]
    },
    embeddings="transformer.wte",
    positions="transformer.wpe",
    final_norm="transformer.ln_f",
    head="lm_head",
    rotary="",
    attn_weights_of="attn",
    culprits=GPT2_CULPRITS,
    config_pairs=(
        ("width (n_embd)", lambda a: a.n_embd, lambda c: c.n_embd),
        ("layers (n_layer)", lambda a: a.n_layer, lambda c: c.n_layer),
        ("heads (n_head)", lambda a: a.n_head, lambda c: c.n_head),
        ("MLP size (n_inner)", lambda a: a.hidden_dim, lambda c: c.n_inner or 4 * c.n_embd),
        ("vocabulary (vocab_size)", lambda a: a.vocab_size, lambda c: c.vocab_size),
        ("learned positions (n_positions)", lambda a: a.n_positions, lambda c: c.n_positions),
        ("norm eps (layer_norm_epsilon)", lambda a: float(a.layer_norm_epsilon), lambda c: float(c.layer_norm_epsilon)),
        ("activation (activation_function)", lambda a: _gelu_kind(a.activation_function),
         lambda c: _gelu_kind(c.activation_function)),
        ("tied embeddings (tie_word_embeddings)", lambda a: bool(a.tie_word_embeddings),
         lambda c: bool(c.tie_word_embeddings)),
    ),
    evidence={
        "tok_embeddings": ("vocabulary (vocab_size)",),
        "pos_embeddings": ("learned positions (n_positions)",),
        "attention_norm": ("norm eps (layer_norm_epsilon)",),
        "ffn_norm": ("norm eps (layer_norm_epsilon)",),
        "norm": ("norm eps (layer_norm_epsilon)",),
        "attention.q": ("heads (n_head)",),
        "attention.k": ("heads (n_head)",),
        "attention.v": ("heads (n_head)",),
        "attention.probs": ("heads (n_head)",),
        "feed_forward.up": ("MLP size (n_inner)",),
        "feed_forward.act": ("activation (activation_function)",),
        "logits": ("tied embeddings (tie_word_embeddings)", "vocabulary (vocab_size)"),
    },
    to_reference_state=gpt2_reference_state,
)

FAMILIES: tuple[Family, ...] = (LLAMA, GPT2_FAMILY)


def family_for_model(model: Any) -> Family:
    """The Family whose table covers one of our models (or its .args): the one named as
    llama.family names the model's family, so there is one rule for which family a model is."""
    from ..family import FamilyError, family_of

    try:
        name = family_of(model).name
    except FamilyError as e:
        raise KeyError(str(e)) from None
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise KeyError(f"no parity table for the {name} model family (tables: {', '.join(f.name for f in FAMILIES)})")


def family_for(model_type: str) -> Family:
    """The Family whose table covers a transformers model_type."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise KeyError(f"no parity table for transformers model_type {model_type!r} (known: {known})")


__all__ = [
    "Source",
    "Family",
    "FAMILIES",
    "LLAMA",
    "GPT2_FAMILY",
    "family_for",
    "family_for_model",
    "pairs_from_rotate_half",
    "rotate_half_from_pairs",
    "llama_reference_state",
    "gpt2_reference_state",
    "ours_rope_scaling",
]
