"""Hugging Face <-> Meta parameter names and q/k row layouts (the HF layout mapping).

This module only maps names and row orders, one tensor at a time; reading checkpoints is
weights.hf / weights.gguf_file, writing them (what llama-convert does) is weights.save.

Two things differ between a Hugging Face Llama checkpoint and Meta's:

1. Names: `model.layers.3.self_attn.q_proj.weight` is Meta's `layers.3.attention.wq.weight`.
2. The order of the rows of wq and wk (and of Qwen2's q/k biases). Meta's RoPE rotates
   *adjacent* pairs of a head's features, (x0, x1), (x2, x3), ... (read as complex numbers).
   Hugging Face's "rotate-half" RoPE rotates x_j with x_{j + Hd/2}. Meta's conversion script
   therefore reorders each head's rows so that the rotate-half code computes the same thing:
   the rows for x0, x2, x4, ... come first, then x1, x3, x5, ... . We undo that reordering
   once, here, at load time, so our complex-number RoPE sees Meta's layout. Query rows are
   grouped by the n_heads query heads, key rows by the n_kv_heads key/value heads.

Checkpoints trained with rotate-half in the first place (Qwen2) are converted the same way:
interleaving their rows makes the complex-number RoPE compute exactly their rotation.
"""

from __future__ import annotations

import re

import torch

from llama.config import ModelArgs
from llama.model import without_stored_rope_table


class ConversionError(ValueError):
    """A state dict whose keys or shapes do not fit the expected layout."""


def rotate_half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of each head [x0 x2 x4 .. | x1 x3 x5 ..] -> [x0 x1 x2 x3 ..]. w: (n_heads*Hd, ...) or (n_heads*Hd,)."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ConversionError(f"{rows} rows cannot be split into {n_heads} heads of even size")
    half = rows // n_heads // 2
    # (H*Hd, ...) -> (H, 2, Hd/2, ...) -> (H, Hd/2, 2, ...) -> (H*Hd, ...)
    return w.reshape(n_heads, 2, half, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def interleaved_to_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of rotate_half_to_interleaved: Meta's row order -> Hugging Face's."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ConversionError(f"{rows} rows cannot be split into {n_heads} heads of even size")
    half = rows // n_heads // 2
    # (H*Hd, ...) -> (H, Hd/2, 2, ...) -> (H, 2, Hd/2, ...) -> (H*Hd, ...)
    return w.reshape(n_heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# Hugging Face name (after "model.layers.N.") -> Meta name (after "layers.N.").
_LAYER_NAMES = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP_NAMES = {
    "model.embed_tokens": "tok_embeddings",
    "model.norm": "norm",
    "lm_head": "output",
}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_META_LAYER = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias)$")


def rename_tensor(
    name: str,
    layer_pattern: re.Pattern,
    layer_names: dict[str, str],
    top_names: dict[str, str],
    layer_prefix: str = "layers",
) -> str | None:
    """A tensor's name in another vocabulary, from two tables, or None if neither knows it.

    layer_pattern matches a per-layer name as (layer number, part, "weight" | "bias"); the
    part is looked up in layer_names and the result is "{layer_prefix}.N.{new part}.{kind}".
    Any other name is "stem.kind" with the stem looked up in top_names. Every format's
    mapping (Hugging Face, GGUF) is these two tables.
    """
    m = layer_pattern.match(name)
    if m and m.group(2) in layer_names:
        return f"{layer_prefix}.{m.group(1)}.{layer_names[m.group(2)]}.{m.group(3)}"
    stem, _, kind = name.rpartition(".")
    if stem in top_names:
        return f"{top_names[stem]}.{kind}"
    return None


_META_TO_HF_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_META_TO_HF_TOP = {v: k for k, v in _TOP_NAMES.items()}


def hf_to_meta_name(name: str) -> str | None:
    """Meta's name for a Hugging Face parameter name; None for buffers we rebuild ourselves."""
    if name.endswith("rotary_emb.inv_freq"):
        return None  # old transformers versions saved the RoPE table; we compute it
    meta = rename_tensor(name, _HF_LAYER, _LAYER_NAMES, _TOP_NAMES)
    if meta is None:
        raise ConversionError(
            f"unexpected tensor {name!r} in a Hugging Face Llama/Qwen2 checkpoint: it has no "
            "counterpart in this model"
        )
    return meta


def meta_to_hf_name(name: str) -> str:
    hf = rename_tensor(name, _META_LAYER, _META_TO_HF_LAYER, _META_TO_HF_TOP, "model.layers")
    if hf is None:
        raise ConversionError(f"unexpected tensor {name!r} in a Meta-format state dict")
    return hf


def qk_heads(meta_name: str, args: ModelArgs) -> int | None:
    """Heads to regroup by if this tensor's rows need the RoPE reordering (wq: n_heads,
    wk: n_kv_heads, and their biases), else None."""
    if ".attention.wq." in meta_name:
        return args.n_heads
    if ".attention.wk." in meta_name:
        return args.n_kv_heads
    return None


def hf_to_meta_tensor(meta_name: str, tensor: torch.Tensor, args: ModelArgs) -> torch.Tensor:
    heads = qk_heads(meta_name, args)
    return tensor if heads is None else rotate_half_to_interleaved(tensor, heads)


def meta_to_hf_tensor(meta_name: str, tensor: torch.Tensor, args: ModelArgs) -> torch.Tensor:
    heads = qk_heads(meta_name, args)
    return tensor if heads is None else interleaved_to_rotate_half(tensor, heads)


def hf_to_meta_state_dict(state_dict: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face Llama/Qwen2/Mistral state dict to Meta's names and layout."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        meta_name = hf_to_meta_name(name)
        if meta_name is not None:
            out[meta_name] = hf_to_meta_tensor(meta_name, tensor, args)
    return out


def meta_to_hf_state_dict(state_dict: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Meta names and layout -> Hugging Face's (the inverse of hf_to_meta_state_dict)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in without_stored_rope_table(state_dict).items():
        out[meta_to_hf_name(name)] = meta_to_hf_tensor(name, tensor, args)
    return out


__all__ = [
    "ConversionError",
    "rotate_half_to_interleaved",
    "interleaved_to_rotate_half",
    "rename_tensor",
    "hf_to_meta_name",
    "meta_to_hf_name",
    "qk_heads",
    "hf_to_meta_tensor",
    "meta_to_hf_tensor",
    "hf_to_meta_state_dict",
    "meta_to_hf_state_dict",
]
