"""What every checkpoint format hands to the loader, and how the loader builds the model.

Each format reader (weights.meta, weights.hf, weights.gguf_file) opens its files and returns
a `Checkpoint`: the `ModelArgs`, the shape of every tensor under Meta's parameter names, and
a `read(name, dtype)` function that produces one tensor at a time, already in Meta's layout.
Nothing is read from disk before `read` is called, so the loader can check names, shapes
and memory first and refuse early:

    1. build the Transformer with its weight matrices on the meta device (no memory, no
       random init; see `_weights_on_meta`),
    2. compare its parameter names and shapes with the checkpoint's (strict),
    3. estimate the bytes the requested dtype needs and compare with what is available,
    4. read the tensors one by one (memory-mapped where the file's bytes can be used as
       they are) and `load_state_dict(..., assign=True)` them into the model,
    5. rebuild the RoPE table, which lives outside the state dict, on the real device.

At no point are two full copies of the weights alive: a tensor that must be converted
(dtype cast, q/k row order, shard merge, dequantisation) is converted on its own.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode

from llama import dtypes
from llama.config import ModelArgs
from llama.dtypes import SUPPORTED_DTYPES, dtype_name
from llama.model import Transformer, without_stored_rope_table

from .errors import CheckpointError, InsufficientMemoryError, StateDictMismatchError
from .families import model_class

# ---------------------------------------------------------------------------------------
# dtypes: the names and the supported set are llama.dtypes'; a bad one is a CheckpointError
# ---------------------------------------------------------------------------------------


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'float32' | 'bfloat16' | 'float16' (or torch dtypes, or None = the checkpoint's)."""
    return dtypes.parse_dtype(dtype, error=CheckpointError)


# ---------------------------------------------------------------------------------------
# The contract between format readers and the loader
# ---------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """An opened checkpoint: config, tensor shapes and a lazy reader, in Meta's names."""

    format: str  # "meta", "hf" or "gguf"
    path: Path  # the folder or file it came from
    args: ModelArgs
    # Meta name -> shape, for every tensor the checkpoint holds. A tensor whose name has no
    # Meta counterpart keeps its file name here, so the strict check can report it.
    shapes: dict[str, tuple[int, ...]]
    # The dtype `load_model(dtype=None)` gives: that of the checkpoint's weight matrices
    # (float32 for quantised GGUF tensors, which can only be dequantised).
    native_dtype: torch.dtype
    # (Meta name, dtype) -> the tensor in Meta's row layout, in that dtype, on the CPU.
    read: Callable[[str, torch.dtype], torch.Tensor]
    # Meta name -> the name in the file, for error messages ("q_proj" is easier to find).
    file_names: dict[str, str] = field(default_factory=dict)
    # Extra words for a shape mismatch (e.g. "is a shard missing?").
    shape_hint: str = ""
    # Which model it becomes: "llama" (llama.model.Transformer) or "gpt2" (llama.gpt2.GPT2),
    # decided by the rule in weights.families.
    family: str = "llama"

    def describe(self, name: str) -> str:
        original = self.file_names.get(name)
        return f"{name} ({original} in the file)" if original and original != name else name


# ---------------------------------------------------------------------------------------
# Memory estimate
# ---------------------------------------------------------------------------------------

MEMORY_ENV = "LLAMA_AVAILABLE_MEMORY"  # override for tests and containers, e.g. "8GiB"
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def _parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise CheckpointError(f"{MEMORY_ENV}={text!r} is not a size: write e.g. 8589934592 or 8GiB")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[unit]
    return int(float(m.group(1)) * scale)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device`, or None where we cannot tell (then no check).

    CPU: MemAvailable from /proc/meminfo (Linux), which counts the page cache the kernel can
    drop, so memory-mapped checkpoint pages are not double counted. The environment
    variable LLAMA_AVAILABLE_MEMORY overrides it (tests use it; so can containers whose
    /proc/meminfo shows the host's memory).
    """
    override = os.environ.get(MEMORY_ENV)
    if override:
        return _parse_size(override)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts in kB
    except OSError:
        return None
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(model: Transformer, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse, before anything is read, a model that would not fit on `device`."""
    available = available_memory(device)
    if available is None:
        return
    n_params = model.num_params()  # a tied embedding/output matrix counted once
    itemsize = torch.empty((), dtype=dtype).element_size()
    # The weights, plus what the first forward pass allocates besides them: the RoPE table
    # and a margin for activations. Small next to the weights for any real model.
    rope = model.args.max_seq_len * model.args.head_dim // 2 * 8  # complex64 table
    needed = n_params * itemsize + rope + 64 * 2**20
    if needed > available:
        smaller = ""
        if itemsize == 4:
            smaller = (
                f" In bfloat16 it would need about {_gib(n_params * 2 + rope + 64 * 2**20)}:"
                " load_model(path, dtype='bfloat16')."
            )
        raise InsufficientMemoryError(
            f"this model has {n_params / 1e9:.2f}B parameters and needs about {_gib(needed)} "
            f"in {dtype_name(dtype)} on {device}, but only {_gib(available)} is available. "
            f"Free some memory, or pick a smaller dtype or model.{smaller}"
        )


# ---------------------------------------------------------------------------------------
# Strict names and shapes
# ---------------------------------------------------------------------------------------


def _list(names: list[str], ckpt: Checkpoint, limit: int = 8) -> str:
    shown = ", ".join(ckpt.describe(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _config_summary(args: ModelArgs) -> str:
    return (
        f"dim={args.dim}, n_layers={args.n_layers}, n_heads={args.n_heads}, "
        f"n_kv_heads={args.n_kv_heads}, ffn hidden={args.hidden_dim}, vocab_size={args.vocab_size}"
    )


def check_state(model: Transformer, ckpt: Checkpoint) -> list[str]:
    """The names to read, after checking them against the model; raises on any mismatch."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    present = without_stored_rope_table(ckpt.shapes)  # Llama 2's RoPE table: we compute ours
    optional = set()
    if model.args.tie_embeddings:
        # A tied checkpoint may or may not store the output matrix separately.
        optional.add("output.weight")
    missing = sorted(set(expected) - set(present) - optional)
    unexpected = sorted(set(present) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {_list(missing, ckpt)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {_list(unexpected, ckpt)}")
        raise StateDictMismatchError(
            f"the {ckpt.format} checkpoint {ckpt.path} does not match its config "
            f"({_config_summary(model.args)}): " + "; ".join(parts) + ". "
            "Is the checkpoint complete, and does the config belong to it?"
        )
    for name, shape in present.items():
        if tuple(shape) != expected[name]:
            raise StateDictMismatchError(
                f"tensor {ckpt.describe(name)} in {ckpt.path} has shape {tuple(shape)}, but "
                f"the config ({_config_summary(model.args)}) needs {expected[name]}. "
                f"{ckpt.shape_hint}Check that config and weights belong together."
            )
    return list(present)


# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------


def rebuild_rope(model: Transformer, device: torch.device) -> None:
    """Recompute the RoPE table (a non-persistent buffer, left on the meta device by the
    meta-device build) on the device the weights now live on."""
    if not hasattr(model, "build_freqs_cis"):
        return  # no RoPE table (GPT-2 learns its positions: they are weights)
    # build_freqs_cis is the model's own recipe for the table, so this cannot drift from it.
    table = model.build_freqs_cis(device)
    model.register_buffer("freqs_cis", table, persistent=False)


class _weights_on_meta(TorchFunctionMode):
    """Build a model whose large parameters have shapes but no storage, without running
    any random initialisation (the checkpoint overwrites every parameter anyway).

    Inside `with _weights_on_meta():`
      * torch.empty(...) makes a meta tensor. nn.Linear and nn.Embedding allocate their
        weights with it, and its values are undefined anyway, so nothing is lost.
      * torch.nn.init's functions (and Tensor.normal_/uniform_) return their tensor as is.

    Why not simply `with torch.device("meta")`? Then *every* tensor operation of the
    constructor runs on the meta device, and some of them (normal_ for nn.Embedding, the
    divisions that build the RoPE table) have meta kernels written in Python that import
    torch._dynamo on first use: about 3 seconds, a large share of loading a small model.
    Here the small tensors (RMSNorm's ones, the RoPE table) are computed on the CPU as
    usual; the parameters are replaced by the checkpoint's and the table is rebuilt.
    """

    _SKIP = frozenset(
        {
            *(getattr(torch.nn.init, n) for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")),
            torch.Tensor.normal_,
            torch.Tensor.uniform_,
        }
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._SKIP:
            return args[0] if args else kwargs["tensor"]  # the tensor, left uninitialised
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


# The same context under a public name, for loaders in other modules (weights.stored).
weights_on_meta = _weights_on_meta


def build_model(
    ckpt: Checkpoint,
    dtype: torch.dtype | None,
    device: torch.device,
    check_mem: bool = True,
) -> Transformer:
    """Checkpoint -> eval-mode Transformer, following the steps in the module docstring."""
    dtype = ckpt.native_dtype if dtype is None else dtype
    with _weights_on_meta():
        model = model_class(ckpt.family)(ckpt.args)  # weight matrices with shapes but no storage
    names = check_state(model, ckpt)
    if check_mem:
        check_memory(model, dtype, device)

    state: dict[str, torch.Tensor] = {}
    for name in names:
        tensor = ckpt.read(name, dtype)
        if tensor.dtype != dtype:  # readers normally cast; be sure
            tensor = tensor.to(dtype)
        state[name] = tensor.to(device)
    # assign=True: the parameters *become* these tensors (memory-mapped ones included)
    # instead of being copied into freshly allocated storage.
    model.load_state_dict(state, strict=True, assign=True)
    rebuild_rope(model, device)
    return model.eval()


__all__ = [
    "Checkpoint",
    "build_model",
    "check_state",
    "check_memory",
    "available_memory",
    "parse_dtype",
    "dtype_name",
    "rebuild_rope",
    "weights_on_meta",
    "SUPPORTED_DTYPES",
    "MEMORY_ENV",
]
