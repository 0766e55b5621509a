"""Meta folders: params.json + consolidated.00.pth ... consolidated.NN.pth.

Meta publishes the larger models split for model-parallel inference (13B: 2 files, 70B: 8).
Each file holds a slice of every large matrix; merging puts the slices back together along
the dimension the reference code's parallel layers split:

    column-parallel (output features split, dim 0): wq, wk, wv, w1, w3, output
    row-parallel (input features split, dim 1):     wo, w2
    tok_embeddings:                                 dim 1 in Llama 1/2, dim 0 in Llama 3
    norms:                                          the same in every file (replicated)

`rope.freqs` (Llama 2's stored RoPE table) is ignored: the model computes its own. A
checkpoint without `output.weight` ties the output projection to the embedding.

Llama 3.1+ params.json says "use_scaled_rope": true but not the scale factor, which is 8
for Llama 3.1 and 32 for Llama 3.2 1B/3B. The factor comes from, in this order: the
caller (load_model(path, rope_scaling_factor=...)), a "rope_scaling_factor" field in
params.json, the config.json next to the folder when it is the original/ subfolder of a
Hugging Face repo, and finally llama.config.default_rope_scaling_factor (dim <= 3072 -> 32,
else 8). See docs/CHECKPOINTS.md.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from llama.config import ConfigError, ModelArgs, hf_rope_parameters, hf_rope_type, llama3_rope_fields
from llama.dtypes import SUPPORTED_DTYPES

from .checkpoint import Checkpoint
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
)

_SHARD = re.compile(r"^consolidated\.(\d+)\.pth$")
_DIM0 = ("attention.wq.", "attention.wk.", "attention.wv.", "feed_forward.w1.", "feed_forward.w3.")
_DIM1 = ("attention.wo.", "feed_forward.w2.")


def shard_paths(folder: Path) -> list[Path]:
    """consolidated.00.pth, .01, ... in order; raises if the numbering has a gap."""
    found = {}
    for p in folder.iterdir():
        m = _SHARD.match(p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        return []
    missing = [f"consolidated.{i:02d}.pth" for i in range(max(found) + 1) if i not in found]
    if missing:
        raise CheckpointNotFoundError(
            f"the Meta checkpoint in {folder} is incomplete: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing (found "
            f"{', '.join(p.name for _, p in sorted(found.items()))}). Download every shard."
        )
    return [found[i] for i in sorted(found)]


def is_meta_folder(folder: Path) -> bool:
    return (folder / "params.json").is_file() and any(_SHARD.match(p.name) for p in folder.iterdir())


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    """A .pth file of plain tensors, memory-mapped. Never unpickles anything else."""
    try:
        # weights_only=True: the unpickler accepts tensors and plain containers only, so a
        # malicious file cannot run code. There is deliberately no unsafe fallback.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path} holds objects other than plain tensors, and weights-only loading refused "
            f"them ({str(e).splitlines()[0]}). We never unpickle arbitrary objects, since "
            "that can run code. Save the checkpoint as a plain dict of tensors "
            "(torch.save(model.state_dict(), path)) from a source you trust."
        ) from None
    except RuntimeError as e:
        if "mmap" in str(e).lower():  # an old (pre-zip) .pth cannot be memory-mapped
            state = _load_unmapped(path)
        else:
            raise CorruptCheckpointError(
                f"cannot read {path}: {str(e).splitlines()[0]}. The file is probably "
                "truncated or damaged: download it again."
            ) from None
    except (EOFError, OSError, ValueError) as e:
        raise CorruptCheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}): truncated or damaged? Download it again."
        ) from None
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(
            f"{path} holds a {type(state).__name__}, not a dict of tensors as Meta's "
            "consolidated.NN.pth files do."
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UnsafeCheckpointError(
                f"{path} maps {key!r} to a {type(value).__name__}, not a tensor: expected a "
                "flat dict of tensors (Meta's format), e.g. torch.save(model.state_dict(), path)."
            )
    return state


def _load_unmapped(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path} holds objects other than plain tensors ({str(e).splitlines()[0]}); "
            "we only load plain tensors."
        ) from None
    except Exception as e:  # noqa: BLE001 - any other failure means a damaged file
        raise CorruptCheckpointError(f"cannot read {path}: {e}") from None


def split_dim(name: str, shard_shape: tuple[int, ...], dim: int) -> int | None:
    """The dimension Meta splits `name` along across shards; None if replicated."""
    if name == "tok_embeddings.weight":
        # Llama 3 splits the vocabulary (rows); Llama 1/2 split the width (columns).
        return 0 if shard_shape[1] == dim else 1
    if name == "output.weight" or any(part in name for part in _DIM0):
        return 0
    if any(part in name for part in _DIM1):
        return 1
    return None


def parent_rope(folder: Path) -> dict[str, Any]:
    """Llama-3 RoPE settings from ../config.json when folder is an HF repo's original/."""
    config_path = folder.parent / "config.json"
    if folder.name != "original" or not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    rope = hf_rope_parameters(config)
    if hf_rope_type(rope) != "llama3" or "factor" not in rope:
        return {}
    return llama3_rope_fields(rope)


# The rules below are shared by open_meta (merging) and weights.parallel (one rank's slice).


def read_params(folder: Path) -> dict[str, Any]:
    """params.json of a Meta folder as a dict with an integer 'dim', or a clear error."""
    params_path = folder / "params.json"
    try:
        params = json.loads(params_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"cannot read {params_path}: {e}") from None
    if not isinstance(params, dict):
        raise CorruptCheckpointError(f"{params_path} is not a JSON object")
    if not isinstance(params.get("dim"), int):
        raise CorruptCheckpointError(f"{params_path} has no integer 'dim'")
    return params


def shard_keys(folder: Path, paths: list[Path], shards: dict[int, dict[str, torch.Tensor]]) -> set[str]:
    """The tensor names every opened shard (file index -> its tensors) holds; an error if
    they differ or are not a Llama checkpoint's."""
    first = min(shards)
    keys = set(shards[first])
    for i, s in shards.items():
        if set(s) != keys:
            diff = sorted(keys ^ set(s))[:5]
            raise CorruptCheckpointError(
                f"{paths[i].name} and {paths[first].name} in {folder} hold different tensors "
                f"(e.g. {', '.join(diff)}): the shards do not belong together."
            )
    if "tok_embeddings.weight" not in keys:
        raise CorruptCheckpointError(f"{paths[first]} has no tok_embeddings.weight: not a Llama checkpoint?")
    return keys


def meta_args(folder: Path, params: dict[str, Any], shapes: dict[str, tuple[int, ...]],
              overrides: dict[str, Any]) -> ModelArgs:
    """ModelArgs from params.json, the merged tensor shapes and the caller's overrides."""
    fields = dict(params)
    if fields.get("vocab_size", -1) == -1:
        # Llama 2's params.json leaves the vocabulary to the tokenizer: read it off the
        # embedding matrix instead.
        fields["vocab_size"] = shapes["tok_embeddings.weight"][0]
    if "output.weight" not in shapes:
        # No output matrix (as in Llama 3.2 1B/3B, which tie it): use the embedding.
        fields["tie_embeddings"] = True
    if fields.get("use_scaled_rope") or overrides.get("use_scaled_rope"):
        if "rope_scaling_factor" not in fields and "rope_scaling_factor" not in overrides:
            fields.update(parent_rope(folder))
    fields.update(overrides)
    try:
        return ModelArgs(**fields)
    except ConfigError as e:
        raise CheckpointError(f"{folder / 'params.json'}: {e}") from None


def native_dtype(shard: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype the checkpoint stores its weights in (float32 for anything unusual)."""
    native = shard["tok_embeddings.weight"].dtype
    return native if native in SUPPORTED_DTYPES else torch.float32


def open_meta(folder: Path, **overrides: Any) -> Checkpoint:
    params = read_params(folder)
    paths = shard_paths(folder)
    if not paths:
        raise CheckpointNotFoundError(f"{folder} has params.json but no consolidated.NN.pth file")
    shards = [load_pth(p) for p in paths]
    keys = shard_keys(folder, paths, dict(enumerate(shards)))
    dim = params["dim"]

    # Shapes after merging, computed from the shard shapes (nothing read yet).
    shapes: dict[str, tuple[int, ...]] = {}
    dims: dict[str, int | None] = {}
    for name in keys:
        shape = tuple(shards[0][name].shape)
        d = split_dim(name, shape, dim) if len(shards) > 1 else None
        if d is not None and d >= len(shape):
            d = None  # e.g. a bias: nothing to merge along dim 1
        dims[name] = d
        if d is not None:
            shape = shape[:d] + (sum(s[name].shape[d] for s in shards),) + shape[d + 1 :]
        shapes[name] = shape

    args = meta_args(folder, params, shapes, overrides)
    native = native_dtype(shards[0])

    def read(name: str, dtype: torch.dtype) -> torch.Tensor:
        d = dims[name]
        if d is None:
            tensor = shards[0][name]  # one file, or a replicated norm: the mapped tensor
        else:
            tensor = torch.cat([s[name] for s in shards], dim=d)  # merge the slices
        return tensor.to(dtype)

    # A missing last shard leaves no gap in the numbering, only too-small merged tensors.
    hint = (
        f"(The tensors were merged from {len(paths)} file(s), {paths[0].name}"
        f"{' .. ' + paths[-1].name if len(paths) > 1 else ''}; if the checkpoint has "
        "more shards, one is missing.) "
    )
    return Checkpoint(
        format="meta",
        path=folder,
        args=args,
        shapes=shapes,
        native_dtype=native,
        read=read,
        shape_hint=hint,
    )


__all__ = ["open_meta", "is_meta_folder", "load_pth", "shard_paths", "split_dim", "parent_rope",
           "read_params", "shard_keys", "meta_args", "native_dtype"]
