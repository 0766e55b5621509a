"""Hugging Face folders: config.json + model.safetensors (or shards with their index).

    config.json                          -> ModelArgs.from_hf_config (llama, qwen2, mistral)
    model.safetensors                    one file, or
    model.safetensors.index.json         {"weight_map": {tensor name: shard file}} and
    model-00001-of-00002.safetensors ... the shards it names

Names are mapped to Meta's by weights.hf_layout; the rows of q_proj and k_proj (and Qwen2's
q/k biases) are put back from the rotate-half order into Meta's interleaved order. A
checkpoint without lm_head.weight ties the output projection to the embedding, whatever
tie_word_embeddings says (transformers does the same).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from llama.config import ConfigError, ModelArgs
from llama.dtypes import SUPPORTED_DTYPES

from .checkpoint import Checkpoint
from .hf_layout import ConversionError, hf_to_meta_name, hf_to_meta_tensor, qk_heads
from .errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError
from .safetensors_file import SafetensorsFile

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        (folder / SINGLE).is_file() or (folder / INDEX).is_file() or any(folder.glob("*.safetensors"))
    )


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"cannot read {what} {path}: {e}") from None


def read_hf_config(folder: Path, config_class: Any = ModelArgs, **overrides: Any) -> Any:
    """folder/config.json as a config_class (ModelArgs, or llama.gpt2.GPT2Config), with
    errors that name the file."""
    config = read_json(folder / "config.json", "the Hugging Face config")
    try:
        return config_class.from_hf_config(config, **overrides)
    except ConfigError as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None


def shard_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> file, from the index when there is one ({} for a single file, whose
    own header lists its tensors). Shared by the Llama and GPT-2 Hugging Face readers."""
    if (folder / INDEX).is_file():
        index = read_json(folder / INDEX, "the shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CorruptCheckpointError(f"{folder / INDEX} has no 'weight_map': the index is damaged")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CheckpointNotFoundError(
                f"the sharded checkpoint in {folder} is incomplete: {INDEX} lists "
                f"{len(files)} shard files, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing. Download the missing "
                "shard(s) into the folder."
            )
        return {name: folder / file for name, file in weight_map.items()}
    if (folder / SINGLE).is_file():
        return {}  # filled in from the file's own header
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return {}
    raise CheckpointNotFoundError(
        f"{folder} has a config.json but {'no' if not candidates else 'several'} .safetensors "
        f"file(s) and no {INDEX}: expected {SINGLE}, or shards with their index."
    )


def tensor_files(folder: Path) -> dict[str, SafetensorsFile]:
    """Tensor name -> the opened safetensors file that holds it, each file opened once;
    checks that every shard holds what the index says. Shared by the Llama and GPT-2
    Hugging Face readers."""
    by_name = shard_files(folder)
    if not by_name:
        single = folder / SINGLE if (folder / SINGLE).is_file() else next(folder.glob("*.safetensors"))
        file = SafetensorsFile(single)
        return {name: file for name in file.shapes}
    files = {p: SafetensorsFile(p) for p in sorted(set(by_name.values()))}
    for name, path in by_name.items():
        if name not in files[path].shapes:
            raise CorruptCheckpointError(
                f"{INDEX} says {name!r} is in {path.name}, but that file does not hold it: "
                "the shards and the index do not belong together."
            )
    return {name: files[path] for name, path in by_name.items()}


def open_hf(folder: Path, **overrides: Any) -> Checkpoint:
    args = read_hf_config(folder, **overrides)
    by_name = tensor_files(folder)  # Hugging Face name -> its file

    # Hugging Face name -> Meta name (None: a buffer we rebuild, e.g. rotary_emb.inv_freq).
    meta_names: dict[str, str] = {}
    for hf_name in by_name:
        try:
            meta = hf_to_meta_name(hf_name)
        except ConversionError:
            meta = hf_name  # no Meta counterpart: the strict check reports it as unexpected
        if meta is not None:
            meta_names[meta] = hf_name

    if "output.weight" not in meta_names and not args.tie_embeddings:
        # No lm_head: the output projection is the embedding matrix.
        args = dataclasses.replace(args, tie_embeddings=True)

    shapes = {meta: by_name[hf].shapes[hf] for meta, hf in meta_names.items()}
    elements: Counter[torch.dtype] = Counter()
    for hf_name, file in by_name.items():
        elements[file.dtypes[hf_name]] += torch.Size(file.shapes[hf_name]).numel()
    native = elements.most_common(1)[0][0] if elements else torch.float32
    if native not in SUPPORTED_DTYPES:
        native = torch.float32

    def read(meta_name: str, dtype: torch.dtype) -> torch.Tensor:
        hf_name = meta_names[meta_name]
        file = by_name[hf_name]
        if file.dtypes[hf_name] == dtype and qk_heads(meta_name, args) is None:
            return file.view(hf_name)  # the file's bytes, used in place
        # Converted anyway: read into fresh memory, reorder q/k rows, cast.
        return hf_to_meta_tensor(meta_name, file.read(hf_name), args).to(dtype)

    return Checkpoint(
        format="hf",
        path=folder,
        args=args,
        shapes=shapes,
        native_dtype=native,
        read=read,
        file_names=meta_names,
    )


__all__ = ["open_hf", "is_hf_folder", "read_hf_config", "read_json", "shard_files", "tensor_files", "INDEX", "SINGLE"]
