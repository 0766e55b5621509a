"""The capture file: one .safetensors file holding the tensors and, as JSON metadata, the
context they were taken in (prompt, token ids, pieces, config, checkpoint, dtype, model).

safetensors sorts tensors by name; load_capture puts hook names back in forward order,
computed from the model class and layer count the file records (`llama.taps.hook_order`,
the same function behind model.hook_names()), so no model or weights are needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..dtypes import dtype_name
from ..taps import model_class_name
from .names import HookError, check_model
from .record import ActivationCache

CAPTURE_FORMAT = "llama-from-scratch/capture"
CAPTURE_VERSION = "1"
# Files written before captures recorded their model's class came from this one.
DEFAULT_MODEL_CLASS = "llama.model:Transformer"


@dataclass
class Capture:
    """A capture read back from disk: the tensors and the context they were taken in.

    context keys: prompt, token_ids (list[int] for one sequence, list of lists for a
    batch), pieces, config (model.args as a dict), checkpoint, dtype (the model's dtype
    when captured, e.g. "bfloat16"), format, version; when saved with model=: family
    ("llama", "gpt2"), model_class ("llama.model:Transformer") and n_layers; plus anything
    passed as extra.
    """

    tensors: dict[str, torch.Tensor]
    context: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        return ActivationCache(self.tensors)[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def keys(self):
        return self.tensors.keys()


def save_capture(
    path: str | Path,
    cache: Mapping[str, torch.Tensor],
    tokens: Any = None,
    pieces: Sequence[str] | None = None,
    prompt: str | None = None,
    model: torch.nn.Module | None = None,
    checkpoint: str | None = None,
    dtype: str | torch.dtype | None = None,
    config: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a capture and its context to one .safetensors file; returns the path.

    Tensors are stored as captured (float32 stays float32, bfloat16 stays bfloat16). The
    context goes in the file's metadata as JSON under the key "context". `model` supplies
    config (model.args) and dtype when they are not given; `tokenizer` supplies pieces.
    """
    from safetensors.torch import save_file

    if not isinstance(cache, Mapping) or not cache:
        raise HookError("save_capture() needs a non-empty {name: tensor} capture")
    token_ids: Any = None
    if tokens is not None:
        t = torch.as_tensor(tokens)
        token_ids = t.reshape(-1).tolist() if t.dim() <= 1 or t.shape[0] == 1 else t.tolist()
    if pieces is None and tokenizer is not None and token_ids and isinstance(token_ids[0], int):
        pieces = [tokenizer.id_to_piece(i) for i in token_ids]
    model_info: dict[str, Any] = {}
    if model is not None:
        check_model(model)
        if config is None:
            config = model.args.to_dict()
        if dtype is None:
            dtype = model.tok_embeddings.weight.dtype
        # What load_capture needs for the forward order without the model (see capture_order).
        model_info = {
            "family": getattr(type(model), "family", None),
            "model_class": model_class_name(model),
            "n_layers": model.args.n_layers,
        }
    if isinstance(dtype, torch.dtype):
        dtype = dtype_name(dtype)
    context = {
        "format": CAPTURE_FORMAT,
        "version": CAPTURE_VERSION,
        "prompt": prompt,
        "token_ids": token_ids,
        "pieces": list(pieces) if pieces is not None else None,
        "config": dict(config) if config is not None else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "dtype": dtype,
        **model_info,
    }
    for key, value in (extra or {}).items():
        if key in context:
            raise HookError(f"extra key {key!r} clashes with a context field; rename it")
        context[key] = value
    try:
        context_json = json.dumps(context)
    except TypeError as e:
        raise HookError(f"the capture's context must be JSON-serialisable: {e}") from None

    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, value in cache.items():
        if not isinstance(value, torch.Tensor):
            raise HookError(f"capture entry {name!r} is {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen_storage:  # safetensors refuses tensors that share memory
            t = t.clone()
        seen_storage.add(t.untyped_storage().data_ptr())
        tensors[str(name)] = t
    path = Path(path)
    if path.suffix != ".safetensors":
        raise HookError(f"capture files end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": CAPTURE_FORMAT, "context": context_json})
    return path


def load_capture(path: str | Path, device: str | torch.device = "cpu") -> Capture:
    """Read a file written by save_capture: Capture(tensors, context)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"capture file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise HookError(
            f"{str(path)!r} is not a safetensors file ({e}); captures are written by "
            "llama.hooks.save_capture"
        ) from None
    if metadata.get("format") != CAPTURE_FORMAT or "context" not in metadata:
        raise HookError(
            f"{str(path)!r} is a safetensors file but not a capture (no "
            f"format={CAPTURE_FORMAT!r} metadata): was it written by save_capture?"
        )
    context = json.loads(metadata["context"])
    tensors = load_file(str(path), device=str(device))
    # Keep forward order when the names are hook names (safetensors sorts them by name).
    order = capture_order(list(tensors), context)
    return Capture({k: tensors[k] for k in order}, context)


def capture_order(names: Sequence[str], context: Mapping[str, Any]) -> list[str]:
    """`names` in the forward order of the model the capture came from; names that are not
    hook points of it (anything a user saved besides) follow, sorted.

    The order is `llama.taps.hook_order(model class, n_layers)`, both read from the context:
    model_class and n_layers (written since files record them), else a Llama Transformer
    and config["n_layers"], else the highest layer index among the names.
    """
    from ..taps import hook_order, model_class

    config = context.get("config") or {}
    n_layers = context.get("n_layers") or (config.get("n_layers") if isinstance(config, Mapping) else None)
    if not n_layers:
        layer_ids = [int(p[1]) for p in (n.split(".") for n in names)
                     if p[0] == "layers" and len(p) > 2 and p[1].isdigit()]
        n_layers = 1 + max(layer_ids, default=-1)
    try:
        cls = model_class(context.get("model_class") or DEFAULT_MODEL_CLASS)
    except (LookupError, ImportError):
        cls = model_class(DEFAULT_MODEL_CLASS)  # a class renamed since: Llama's order is close
    rank = {n: i for i, n in enumerate(hook_order(cls, int(n_layers)))}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


__all__ = ["CAPTURE_FORMAT", "CAPTURE_VERSION", "Capture", "save_capture", "load_capture",
           "capture_order"]
