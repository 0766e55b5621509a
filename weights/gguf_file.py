"""GGUF files (llama.cpp, Ollama): config from the metadata, tensors dequantised.

A GGUF file starts with the magic bytes b"GGUF", then key/value metadata
({arch}.embedding_length, {arch}.block_count, ...), then tensor descriptions and data.
We recognise it by those bytes, never by its name: Ollama stores models as
extension-less blobs named sha256-....

Tensor names and what they are in Meta's vocabulary:

    token_embd            tok_embeddings          blk.N.attn_norm    layers.N.attention_norm
    blk.N.attn_q/k/v      layers.N.attention.wq/wk/wv (+ .bias in qwen2)
    blk.N.attn_output     layers.N.attention.wo   blk.N.ffn_norm     layers.N.ffn_norm
    blk.N.ffn_gate/up     layers.N.feed_forward.w1/w3
    blk.N.ffn_down        layers.N.feed_forward.w2
    output_norm           norm                    output             output (absent: tied)

Two traps:
  * Shapes. GGUF lists dimensions innermost first (ggml's ne[0] = number of columns), so
    a (rows, cols) matrix is described as [cols, rows]. The gguf package's arrays already
    have numpy's (rows, cols) order; dequantised blocks are reshaped to it.
  * q/k row order. llama.cpp's converter reorders Hugging Face's rotate-half rows of llama
    q/k back into Meta's interleaved order (it runs llama with "normal" RoPE), so those
    load as they are. Architectures it runs with NEOX-style (rotate-half) RoPE, like qwen2,
    keep Hugging Face's order and are reordered here like an HF checkpoint.

Quantised tensors (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, ...) are dequantised with
gguf.quants.dequantize to float32, one tensor at a time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llama.config import ConfigError, ModelArgs

from .checkpoint import Checkpoint
from .convert import _qk_heads, hf_to_meta_tensor
from .errors import CheckpointError, CorruptCheckpointError

MAGIC = b"GGUF"
ARCHITECTURES = ("llama", "qwen2")
# Architectures whose GGUF q/k rows are in rotate-half order (llama.cpp: NEOX rope type).
ROTATE_HALF = ("qwen2",)

_LAYER = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_LAYER_NAMES = {
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
}
_TOP_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def gguf_to_meta_name(name: str) -> str | None:
    m = _LAYER.match(name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    stem, _, kind = name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{kind}"
    return None


def _reader(path: Path):
    import gguf

    try:
        # mode "c": a copy-on-write memory map, so arrays are writable for torch while the
        # file is never modified.
        return gguf.GGUFReader(path, "c")
    except Exception as e:  # noqa: BLE001 - gguf raises many kinds of errors on bad files
        raise CorruptCheckpointError(
            f"{path} starts like a GGUF file but cannot be read ({type(e).__name__}: {e}). "
            "It is probably truncated or damaged: download it again."
        ) from None


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.get_field(key)
    if f is None:
        return default
    value = f.contents()
    return value


def rope_scaling_from_freqs(freqs: np.ndarray, args_base: dict[str, Any], head_dim: int) -> dict[str, Any]:
    """Llama 3.1 GGUF files store the RoPE scaling as a tensor (rope_freqs: one divisor per
    frequency) instead of metadata. Recover Meta's parameters from it, and check that our
    formula reproduces every divisor, so an unknown scheme is refused rather than guessed."""
    from llama.model import rope_inv_freq

    factor = float(freqs.max())
    params = dict(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)
    base = rope_inv_freq(head_dim, args_base["rope_theta"])
    ours = base / rope_inv_freq(head_dim, args_base["rope_theta"], params)
    if ours.shape != (len(freqs),) or not torch.allclose(ours, torch.from_numpy(freqs).float(), rtol=1e-3):
        raise CheckpointError(
            "this GGUF file scales RoPE with a rope_freqs tensor that does not follow Llama 3's "
            "rule (factor, low_freq_factor 1, high_freq_factor 4, original length 8192): "
            "this RoPE variant is not supported."
        )
    return dict(
        use_scaled_rope=True,
        rope_scaling_factor=factor,
        rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0,
        rope_original_max_seq_len=8192,
    )


def open_gguf(path: Path, **overrides: Any) -> Checkpoint:
    import gguf
    from gguf import GGMLQuantizationType as Q

    reader = _reader(path)
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{path} is a GGUF model of architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}."
        )

    def meta(key: str, default: Any = None, required: bool = False) -> Any:
        value = _field(reader, f"{arch}.{key}", default)
        if value is None and required:
            raise CorruptCheckpointError(f"{path} lacks the GGUF metadata key {arch}.{key}")
        return value

    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise CorruptCheckpointError(f"{path} has no token_embd.weight tensor: not a language model?")

    def np_shape(t) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(t.shape.tolist()))  # ggml order -> (rows, cols)

    dim = int(meta("embedding_length", required=True))
    n_heads = int(meta("attention.head_count", required=True))
    head_dim = dim // n_heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        value = meta(key)
        if value is not None and int(value) != head_dim:
            raise CheckpointError(
                f"{path}: {arch}.{key} = {value} but embedding_length / head_count = {head_dim}: "
                "partial rotary embeddings or decoupled head sizes are not supported."
            )
    scaling_type = meta("rope.scaling.type")
    if scaling_type not in (None, "none"):
        raise CheckpointError(
            f"{path} uses RoPE scaling of type {scaling_type!r}, which is not supported "
            "(Llama 3's scaling, stored as a rope_freqs tensor, is)."
        )
    fields: dict[str, Any] = dict(
        dim=dim,
        n_layers=int(meta("block_count", required=True)),
        n_heads=n_heads,
        n_kv_heads=int(meta("attention.head_count_kv", n_heads)),
        # The embedding matrix, not the metadata, says how many rows the vocabulary has.
        vocab_size=np_shape(tensors["token_embd.weight"])[0],
        ffn_hidden_dim=int(meta("feed_forward_length", required=True)),
        norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        max_seq_len=int(meta("context_length", 4096)),
        tie_embeddings="output.weight" not in tensors,
        attention_bias=arch == "qwen2",
    )
    if "rope_freqs.weight" in tensors:
        freqs = gguf.quants.dequantize(tensors["rope_freqs.weight"].data, tensors["rope_freqs.weight"].tensor_type)
        fields.update(rope_scaling_from_freqs(np.asarray(freqs).reshape(-1), fields, head_dim))
    fields.update(overrides)
    try:
        args = ModelArgs(**fields)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None

    names: dict[str, str] = {}  # Meta name -> GGUF name
    for name in tensors:
        if name == "rope_freqs.weight":
            continue  # turned into args above
        names[gguf_to_meta_name(name) or name] = name
    shapes = {m: np_shape(tensors[g]) for m, g in names.items()}

    matrix_types = {tensors[g].tensor_type for g in names.values() if len(tensors[g].shape) > 1}
    native = {frozenset({Q.F16}): torch.float16, frozenset({Q.BF16}): torch.bfloat16}.get(
        frozenset(matrix_types), torch.float32
    )
    rotate_half = arch in ROTATE_HALF

    def read(meta_name: str, dtype: torch.dtype) -> torch.Tensor:
        t = tensors[names[meta_name]]
        shape = shapes[meta_name]
        if t.tensor_type in (Q.F32, Q.F16):
            tensor = torch.from_numpy(t.data).reshape(shape)  # a view of the mapped file
        elif t.tensor_type == Q.BF16:
            # numpy has no bfloat16: the package hands out raw bytes, which torch can view.
            tensor = torch.from_numpy(t.data).view(torch.bfloat16).reshape(shape)
        else:
            try:
                values = gguf.quants.dequantize(t.data, t.tensor_type)
            except NotImplementedError:
                raise CheckpointError(
                    f"{path}: tensor {t.name} is stored as {t.tensor_type.name}, which the gguf "
                    "package cannot dequantise."
                ) from None
            tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape)
        if rotate_half and _qk_heads(meta_name, args) is not None:
            tensor = hf_to_meta_tensor(meta_name, tensor, args)  # rotate-half -> interleaved
        return tensor.to(dtype)

    return Checkpoint(
        format="gguf",
        path=path,
        args=args,
        shapes=shapes,
        native_dtype=native,
        read=read,
        file_names=names,
    )


__all__ = ["open_gguf", "is_gguf", "gguf_to_meta_name", "MAGIC", "ARCHITECTURES"]
