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
gguf.quants.dequantize to float32, one tensor at a time; F32/F16/BF16 tensors are views
of the memory-mapped file.

The container (metadata, tensor table, where the data starts, the magic bytes) is parsed by
tokenizer.gguf_container, which the tokenizer uses for the vocabulary: the GGUF format is the
same for both, so it is written once. (weights imports that module; tokenizer never
imports weights.) We do not use gguf.GGUFReader for it: it turns every element of the
49k-token vocabulary into a numpy view and takes many seconds per file. The gguf package
still supplies what each ggml type means: block sizes and dequantisation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llama.config import LLAMA3_ROPE_DEFAULTS, ConfigError, ModelArgs, llama3_rope_fields
from tokenizer.gguf_container import GGUF_MAGIC, is_gguf, read_gguf

from .checkpoint import Checkpoint
from .hf_layout import hf_to_meta_tensor, qk_heads, rename_tensor
from .errors import CheckpointError, CorruptCheckpointError

MAGIC = GGUF_MAGIC  # b"GGUF" (the container reader's constant, re-exported)
ARCHITECTURES = ("llama", "qwen2")
# Architectures whose GGUF q/k rows are in rotate-half order (llama.cpp: NEOX rope type).
ROTATE_HALF = ("qwen2",)

# A per-layer GGUF tensor name: (layer number, part, "weight" | "bias"); every architecture's.
GGUF_LAYER = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
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


def gguf_to_meta_name(name: str) -> str | None:
    """Meta's name for a GGUF tensor name (None: no counterpart)."""
    return rename_tensor(name, GGUF_LAYER, _LAYER_NAMES, _TOP_NAMES)


def _damaged(path: Path, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} starts like a GGUF file but cannot be read ({why}). "
        "It is probably truncated or damaged: download it again."
    )


class TensorData:
    """The GGUF tensor table plus the file, memory-mapped: raw bytes of one tensor at a time
    (the Llama and GPT-2 GGUF readers both read through it)."""

    def __init__(self, path: Path):
        import gguf

        try:
            self.file = read_gguf(path, strings=False)  # the vocabulary is not needed here
        except ValueError as e:
            raise _damaged(path, str(e).removeprefix(f"{path}: ")) from None
        self.path = path
        self.infos = {t.name: t for t in self.file.tensors}
        self.types: dict[str, Any] = {}  # name -> gguf.GGMLQuantizationType
        self.nbytes: dict[str, int] = {}
        data_size = self.file.file_size - self.file.data_offset
        # Check every tensor's byte range now, so a truncated file fails before loading.
        for t in self.file.tensors:
            try:
                qtype = gguf.GGMLQuantizationType(t.ggml_type)
                block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise CheckpointError(
                    f"{path}: tensor {t.name} has ggml type {t.ggml_type}, which the installed "
                    "gguf package does not know (a newer quantisation? try upgrading gguf)."
                ) from None
            if not t.dims or t.dims[0] % block_size:
                raise _damaged(path, f"tensor {t.name} has dims {t.dims}, not whole {qtype.name} blocks")
            self.types[t.name] = qtype
            self.nbytes[t.name] = t.n_elements // block_size * type_size
            if t.offset + self.nbytes[t.name] > data_size:
                raise _damaged(
                    path,
                    f"tensor {t.name} needs bytes up to {self.file.data_offset + t.offset + self.nbytes[t.name]} "
                    f"but the file has {self.file.file_size}",
                )
        # mode "c": a copy-on-write memory map, so arrays are writable for torch while the
        # file is never modified.
        # (.view(np.ndarray): plain arrays; numpy.memmap slices carry per-slice overhead.)
        self.map = np.memmap(path, dtype=np.uint8, mode="c").view(np.ndarray) if self.file.tensors else None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a flat uint8 view of the mapped file (nothing copied)."""
        start = self.file.data_offset + self.infos[name].offset
        return self.map[start : start + self.nbytes[name]]

    def numpy(self, name: str) -> np.ndarray:
        """The tensor as numpy, in (rows, cols) order: a view for F32/F16/BF16 (BF16 as raw
        uint16, since numpy has no bfloat16), otherwise dequantised to float32."""
        import gguf
        from gguf import GGMLQuantizationType as Q

        qtype, shape, raw = self.types[name], self.infos[name].shape, self.raw(name)
        if qtype in (Q.F32, Q.F16, Q.BF16):
            dtype = {Q.F32: np.float32, Q.F16: np.float16, Q.BF16: np.uint16}[qtype]
            return raw.view(dtype).reshape(shape)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = raw.size // type_size
        # Blocks dequantise independently, so we may hand gguf any grouping of whole blocks.
        # gguf works through 16 rows per Python-level step; "rows" of up to 4096 blocks
        # (at most ~2M values per step) instead of one matrix row each make that loop much
        # shorter (SmolLM2-135M Q4_1: ~0.7 s instead of ~2-3 s).
        per_row = math.gcd(n_blocks, 4096)
        try:
            values = gguf.quants.dequantize(raw.reshape(n_blocks // per_row, per_row * type_size), qtype)
        except NotImplementedError:
            raise CheckpointError(
                f"{self.path}: tensor {name} is stored as {qtype.name}, which the gguf "
                "package cannot dequantise."
            ) from None
        return values.reshape(shape)


def rope_scaling_from_freqs(freqs: np.ndarray, args_base: dict[str, Any], head_dim: int) -> dict[str, Any]:
    """Llama 3.1 GGUF files store the RoPE scaling as a tensor (rope_freqs: one divisor per
    frequency) instead of metadata. Recover Meta's parameters from it, and check that our
    formula reproduces every divisor, so an unknown scheme is refused rather than guessed."""
    from llama.model import rope_inv_freq

    factor = float(freqs.max())
    # The file stores only the divisors: the other constants must be Llama 3's own.
    params = {"factor": factor, **LLAMA3_ROPE_DEFAULTS}
    base = rope_inv_freq(head_dim, args_base["rope_theta"])
    ours = base / rope_inv_freq(head_dim, args_base["rope_theta"], params)
    if ours.shape != (len(freqs),) or not torch.allclose(ours, torch.from_numpy(freqs).float(), rtol=1e-3):
        d = LLAMA3_ROPE_DEFAULTS
        raise CheckpointError(
            "this GGUF file scales RoPE with a rope_freqs tensor that does not follow Llama 3's "
            f"rule (factor, low_freq_factor {d['low_freq_factor']:g}, high_freq_factor "
            f"{d['high_freq_factor']:g}, original length {d['original_max_seq_len']:g}): "
            "this RoPE variant is not supported."
        )
    return llama3_rope_fields({"factor": factor})


def open_gguf(path: Path, **overrides: Any) -> Checkpoint:
    from gguf import GGMLQuantizationType as Q

    data = TensorData(path)
    metadata = data.file.metadata
    arch = metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{path} is a GGUF model of architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}."
        )

    def meta(key: str, default: Any = None, required: bool = False) -> Any:
        value = metadata.get(f"{arch}.{key}", default)
        if value is None and required:
            raise CorruptCheckpointError(f"{path} lacks the GGUF metadata key {arch}.{key}")
        return value

    tensors = data.infos  # GGUF name -> GGUFTensorInfo
    if "token_embd.weight" not in tensors:
        raise CorruptCheckpointError(f"{path} has no token_embd.weight tensor: not a language model?")

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
        vocab_size=tensors["token_embd.weight"].shape[0],
        ffn_hidden_dim=int(meta("feed_forward_length", required=True)),
        norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        max_seq_len=int(meta("context_length", 4096)),
        tie_embeddings="output.weight" not in tensors,
        attention_bias=arch == "qwen2",
    )
    if "rope_freqs.weight" in tensors:
        freqs = data.numpy("rope_freqs.weight").astype(np.float32).reshape(-1)
        fields.update(rope_scaling_from_freqs(freqs, fields, head_dim))
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
    shapes = {m: tensors[g].shape for m, g in names.items()}

    matrix_types = {data.types[g] for g in names.values() if len(tensors[g].dims) > 1}
    native = {frozenset({Q.F16}): torch.float16, frozenset({Q.BF16}): torch.bfloat16}.get(
        frozenset(matrix_types), torch.float32
    )
    rotate_half = arch in ROTATE_HALF

    def read(meta_name: str, dtype: torch.dtype) -> torch.Tensor:
        name = names[meta_name]
        tensor = torch.from_numpy(data.numpy(name))  # shares memory: the map or the dequantised copy
        if data.types[name] == Q.BF16:
            tensor = tensor.view(torch.bfloat16)  # the raw uint16 bits, reinterpreted
        if rotate_half and qk_heads(meta_name, args) is not None:
            tensor = hf_to_meta_tensor(meta_name, tensor, args)  # rotate-half -> interleaved
        return tensor.to(dtype)  # no copy when the dtype already matches

    return Checkpoint(
        format="gguf",
        path=path,
        args=args,
        shapes=shapes,
        native_dtype=native,
        read=read,
        file_names=names,
    )


__all__ = ["open_gguf", "is_gguf", "gguf_to_meta_name", "TensorData", "GGUF_LAYER", "MAGIC", "ARCHITECTURES"]
