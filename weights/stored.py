"""Load a checkpoint with its weights as stored: a GGUF file's 4-bit blocks stay 4-bit.

    from weights.stored import load_stored
    model = load_stored(path)                     # a Q4_0 / Q4_1 / Q4_K GGUF, or anything
    model = load_stored(path, requantize="int4")  # also make the other weights 4-bit

`weights.load_model` dequantizes a GGUF file to float32 (a 7B Q4 file of 3.8 GB becomes
27 GB). Here every linear layer becomes a llama.speed.stored layer instead, which keeps its
weights as integers and multiplies them on torch's integer CPU kernels:

- Q4_0, Q4_1, Q4_K matrices: their own 4-bit values and per-32 scales (weights.gguf_blocks),
  as torch's int4 kernel takes them, bit for bit (the kernel's scales are bfloat16, so each
  group's scale and zero are rounded to bfloat16).
- every other linear weight -- Q8_0, Q5/Q6 formats, float16/float32 tensors, and all of a
  Hugging Face or Meta checkpoint -- is read as float (one tensor at a time) and quantized
  per `requantize`: "int8" (default: row-wise int8), "int4" (groups of 32), or None (kept as
  a float32 nn.Linear).

Embeddings and norms are float32. The result is a llama.model.Transformer like any other
(hooks, generation, analysis), on the CPU only. How far its logits are from the dequantized
float32 model's is measured in docs/PERFORMANCE.md and held by tests/test_speed_stored.py.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from llama.model import Transformer
from llama.speed.stored import KINDS, Int4Linear, int4_fits, replace_module, stored_from_float

from .checkpoint import Checkpoint, available_memory, check_state, rebuild_rope, weights_on_meta
from .errors import CheckpointError, InsufficientMemoryError
from .gguf_blocks import FORMATS, four_bit_groups
from .gguf_file import ROTATE_HALF
from .hf_layout import hf_to_meta_tensor


def _linear_names(model: Transformer) -> dict[str, nn.Linear]:
    """Meta weight name -> the nn.Linear it belongs to ("layers.0.attention.wq.weight" -> wq)."""
    return {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


class _RawGGUF:
    """The 4-bit tensors of a GGUF file, as raw bytes of the memory-mapped file."""

    def __init__(self, path: os.PathLike) -> None:
        import gguf

        from tokenizer.gguf_container import read_gguf

        file = read_gguf(path, strings=False)
        self.infos = {t.name: t for t in file.tensors}
        self.data_offset = file.data_offset
        self.types = {t.name: gguf.GGMLQuantizationType(t.ggml_type).name for t in file.tensors}
        self.map = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        self.arch = file.metadata.get("general.architecture")

    def four_bit(self, gguf_name: str) -> tuple[str, np.ndarray] | None:
        """(format, bytes) of a 4-bit matrix, or None for any other tensor."""
        fmt = self.types.get(gguf_name)
        if fmt not in FORMATS:
            return None
        import gguf

        info = self.infos[gguf_name]
        block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[fmt]]
        start = self.data_offset + info.offset
        return fmt, self.map[start : start + info.n_elements // block_size * type_size]


def _check_memory(ckpt: Checkpoint, model: Transformer) -> None:
    """Refuse early what cannot fit: about the file's size plus float32 embeddings."""
    available = available_memory(torch.device("cpu"))
    if available is None:
        return
    size = ckpt.path.stat().st_size if ckpt.path.is_file() else sum(
        f.stat().st_size for f in ckpt.path.iterdir() if f.is_file()
    )
    emb = model.args.vocab_size * model.args.dim * 4
    needed = size + emb + 64 * 2**20
    if needed > available:
        raise InsufficientMemoryError(
            f"loading {ckpt.path} with its weights as stored needs about {needed / 2**30:.2f} GiB, "
            f"but only {available / 2**30:.2f} GiB is available: free some memory or pick a smaller model."
        )


def load_stored(
    path: str | os.PathLike,
    *,
    requantize: str | None = "int8",
    device: str | torch.device = "cpu",
    check_memory: bool = True,
    **overrides: Any,
) -> Transformer:
    """Load a checkpoint with integer linear layers (module docstring). Eval mode, CPU."""
    from . import load_model, open_checkpoint

    if requantize not in (None, *KINDS):
        raise CheckpointError(f"requantize must be 'int8', 'int4' or None, got {requantize!r}")
    if torch.device(device).type != "cpu":
        raise CheckpointError(
            f"weights as stored run on torch's CPU kernels, so device must be 'cpu', got {device!r}; "
            "use weights.load_model(path, device=...) for other devices."
        )
    ckpt = open_checkpoint(path, **overrides)
    if ckpt.family != "llama":
        raise CheckpointError(
            f"{path} is a {ckpt.family} checkpoint; load_stored keeps Llama-family weights as "
            "stored only: load this one with weights.load_model."
        )
    if ckpt.format != "gguf":
        # Nothing to keep as stored: load (memory-mapped where the file allows), then
        # quantize layer by layer, so at most one layer exists twice.
        model = load_model(path, dtype=None, check_memory=check_memory, **overrides)
        if requantize is not None:
            for name, module in list(_linear_names(model).items()):
                new = stored_from_float(module.weight, module.bias, requantize)
                if new is not None:
                    replace_module(model, name.removesuffix(".weight"), new)
        _float32_rest(model)
        return model

    raw = _RawGGUF(ckpt.path)
    with weights_on_meta():
        model = Transformer(ckpt.args)  # weight matrices with shapes only, no memory
    names = check_state(model, ckpt)
    if check_memory:
        _check_memory(ckpt, model)
    linears = _linear_names(model)
    rotate_half = raw.arch in ROTATE_HALF
    if "output.weight" in linears and "output.weight" not in names:
        names.append("output.weight")  # tied: the output layer is made from token_embd

    state: dict[str, torch.Tensor] = {}
    replaced: set[str] = set()
    for name in names:
        if name not in linears:
            if not (name.endswith(".bias") and name.removesuffix(".bias") + ".weight" in linears):
                state[name] = ckpt.read(name, torch.float32)
            continue
        module_name = name.removesuffix(".weight")
        source = name if name in ckpt.file_names else "tok_embeddings.weight"  # tied output
        bias_name = f"{module_name}.bias"
        bias = ckpt.read(bias_name, torch.float32) if bias_name in ckpt.shapes else None
        rows, cols = linears[name].weight.shape
        blocks = raw.four_bit(ckpt.file_names[source])
        new: nn.Module | None = None
        if blocks is not None and int4_fits(rows, cols):
            fmt, data = blocks
            q, scale, zero = four_bit_groups(data, fmt, (rows, cols))
            if rotate_half:  # the same row reordering the float loader does (weights.hf_layout)
                q, scale, zero = (hf_to_meta_tensor(name, t, ckpt.args) for t in (q, scale, zero))
            new = Int4Linear(q, scale, zero, 32, bias)
        elif requantize is not None:
            with torch.no_grad():
                new = stored_from_float(ckpt.read(source, torch.float32), bias, requantize)
        if new is None:  # keep it float: an ordinary nn.Linear
            layer = nn.Linear(cols, rows, bias=bias is not None)
            layer.weight = nn.Parameter(ckpt.read(source, torch.float32))
            if bias is not None:
                layer.bias = nn.Parameter(bias)
            new = layer
        replace_module(model, module_name, new)
        replaced.add(module_name)
    # nn.Module's own loading, not Transformer.load_state_dict: that one re-ties the output
    # to the embedding, and the output is an integer layer now.
    missing = nn.Module.load_state_dict(model, state, strict=False, assign=True).missing_keys
    not_loaded = [k for k in missing if k.rpartition(".")[0] not in replaced]
    if not_loaded:
        raise CheckpointError(f"{ckpt.path}: tensors not loaded: {', '.join(not_loaded)}")
    if ckpt.args.tie_embeddings and type(model.output) is nn.Linear:
        model.output.weight = model.tok_embeddings.weight  # a float output stays tied
    rebuild_rope(model, torch.device("cpu"))
    return model.eval()


def _float32_rest(model: Transformer) -> None:
    """Embeddings and norms (every parameter outside the integer layers) in float32."""
    from llama.speed.stored import StoredLinear

    for module in model.modules():
        if isinstance(module, StoredLinear):
            continue
        for key, p in list(module._parameters.items()):
            if p is not None and p.is_floating_point() and p.dtype != torch.float32:
                module._parameters[key] = nn.Parameter(p.detach().float(), requires_grad=p.requires_grad)
    if model.args.tie_embeddings and type(model.output) is nn.Linear:
        model.output.weight = model.tok_embeddings.weight


__all__ = ["load_stored"]
