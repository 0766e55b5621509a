"""Write a model as a Meta folder or a Hugging Face folder (what llama-convert uses).

    save_meta(state, args, "out/")              params.json + consolidated.00.pth
    save_meta(state, args, "out/", n_shards=2)  split the way Meta splits 13B/70B
    save_hf(state, args, "out/")                config.json + model.safetensors
    save_hf(state, args, "out/", max_shard_bytes=2**30)   shards + index
    convert(src, "out/", to="meta" | "hf")      any checkpoint load_model reads -> either

`state` uses Meta's names and row layout (our Transformer's state_dict). Tensors are
written bit for bit: Meta -> HF -> Meta and HF -> Meta -> HF give back identical bytes, and
transformers' from_pretrained reads what save_hf writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from llama.config import ModelArgs
from llama.dtypes import dtype_name

from .checkpoint import build_model, parse_dtype
from .hf_layout import meta_to_hf_name, meta_to_hf_tensor
from .errors import CheckpointError
from .meta import split_dim
from .safetensors_file import CODES

# The fields Meta's own params.json files use.
META_FIELDS = (
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "multiple_of",
    "ffn_dim_multiplier",
    "norm_eps",
    "rope_theta",
    "use_scaled_rope",
)


def meta_params(args: ModelArgs) -> dict[str, Any]:
    """params.json for `args`: Meta's fields, plus any of our fields whose value a reader of
    Meta's fields alone would get wrong (ffn_hidden_dim when Meta's formula gives another
    size, tie_embeddings, attention_bias, a RoPE factor other than the default rule, ...)."""
    params = {name: getattr(args, name) for name in META_FIELDS}
    if params["ffn_dim_multiplier"] is None:
        del params["ffn_dim_multiplier"]
    if not params["use_scaled_rope"]:
        del params["use_scaled_rope"]
    inferred = ModelArgs(**params)
    for f in dataclasses.fields(ModelArgs):
        if f.name not in params and getattr(args, f.name) != getattr(inferred, f.name):
            params[f.name] = getattr(args, f.name)
    return params


def llama3_style_embeddings(args: ModelArgs) -> bool:
    """Whether Meta would split tok_embeddings by rows (Llama 3) rather than columns
    (Llama 1/2). Llama 3's signature: its 128k vocabulary and rope_theta 500000."""
    return args.vocab_size > 100_000 or args.rope_theta >= 500_000


def _owned(t: torch.Tensor) -> torch.Tensor:
    """A tensor that owns exactly its bytes: torch.save writes a view's whole storage."""
    t = t.detach().contiguous()
    if t.untyped_storage().nbytes() != t.nbytes or t.storage_offset() != 0:
        t = t.clone()
    return t


def _prepare_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CheckpointError(
                f"{out} exists and is not empty: choose a new folder (or pass overwrite=True / --force)."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_meta(
    state: dict[str, torch.Tensor],
    args: ModelArgs,
    out_dir: str | os.PathLike,
    n_shards: int = 1,
    llama3_embeddings: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """params.json + consolidated.NN.pth, split into n_shards as Meta's model-parallel files."""
    if n_shards < 1:
        raise CheckpointError(f"n_shards must be at least 1, got {n_shards}")
    out = _prepare_dir(out_dir, overwrite)
    if llama3_embeddings is None:
        llama3_embeddings = llama3_style_embeddings(args)
    # A tied output matrix is written as the embedding's own tensor (torch.save stores a
    # shared storage once) where both are split the same way: one file or Llama 3 rows.
    tied = (
        args.tie_embeddings
        and "output.weight" in state
        and (n_shards == 1 or llama3_embeddings)
        and torch.equal(state["output.weight"], state["tok_embeddings.weight"])
    )
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n_shards)]
    for name, tensor in state.items():
        if name == "output.weight" and tied:
            continue  # stored below as the same tensor object: written once
        if n_shards == 1:
            shards[0][name] = _owned(tensor)
            continue
        if name == "tok_embeddings.weight":
            d = 0 if llama3_embeddings else 1
        else:
            d = split_dim(name, tuple(tensor.shape), args.dim)
            if d is not None and d >= tensor.dim():
                d = None
        if d is None:  # replicated (norms)
            for s in shards:
                s[name] = _owned(tensor)
            continue
        if tensor.shape[d] % n_shards:
            raise CheckpointError(
                f"cannot split {name} of shape {tuple(tensor.shape)} into {n_shards} equal "
                f"slices along dim {d}: choose a shard count that divides {tensor.shape[d]}"
            )
        for s, piece in zip(shards, tensor.chunk(n_shards, dim=d)):
            s[name] = _owned(piece)
    if tied:
        for s in shards:
            s["output.weight"] = s["tok_embeddings.weight"]  # one storage, two names
    (out / "params.json").write_text(json.dumps(meta_params(args), indent=2) + "\n")
    for i, s in enumerate(shards):
        torch.save(s, out / f"consolidated.{i:02d}.pth")
    return out


def hf_config(args: ModelArgs, dtype: torch.dtype) -> dict[str, Any]:
    config = args.to_hf_config()
    config["torch_dtype"] = dtype_name(dtype)
    return config


def save_hf(
    state: dict[str, torch.Tensor],
    args: ModelArgs,
    out_dir: str | os.PathLike,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """config.json + model.safetensors (or shards of at most max_shard_bytes + index)."""
    from safetensors.torch import save_file

    out = _prepare_dir(out_dir, overwrite)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "output.weight" and args.tie_embeddings:
            continue  # Hugging Face ties by leaving lm_head out
        if tensor.dtype not in CODES:
            raise CheckpointError(f"{name} has dtype {tensor.dtype}, which safetensors files here do not hold")
        # q/k rows go back to rotate-half order; everything else is written as it is.
        tensors[meta_to_hf_name(name)] = meta_to_hf_tensor(name, tensor.detach(), args).contiguous()
    dtype = state["tok_embeddings.weight"].dtype
    (out / "config.json").write_text(json.dumps(hf_config(args, dtype), indent=2) + "\n")
    metadata = {"format": "pt"}  # what transformers expects to find

    total = sum(t.nbytes for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(out / "model.safetensors"), metadata=metadata)
        return out
    # Greedy sharding in name order, as save_pretrained does.
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        if groups[-1] and size + t.nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = t
        size += t.nbytes
    weight_map = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(out / file), metadata=metadata)
        weight_map.update({name: file for name in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def convert(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    to: str,
    dtype: str | torch.dtype | None = None,
    n_shards: int = 1,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Read any checkpoint load_model reads and write it as a Meta or HF folder."""
    from . import open_checkpoint

    if to not in ("meta", "hf"):
        raise CheckpointError(f"unknown target format {to!r}: use 'meta' or 'hf'")
    ckpt = open_checkpoint(src, **overrides)
    if ckpt.family != "llama":
        raise CheckpointError(
            f"{src} is a {ckpt.family} checkpoint; llama-convert writes Llama-family layouts "
            "only (GPT-2 loads directly with load_model, from its HF folder or GGUF file)."
        )
    if Path(out_dir).resolve() == ckpt.path.resolve():
        raise CheckpointError(f"the output folder {out_dir} is the checkpoint being read: pick another")
    model = build_model(ckpt, parse_dtype(dtype), torch.device("cpu"))
    state = model.state_dict()
    if to == "meta":
        return save_meta(state, model.args, out_dir, n_shards=n_shards, overwrite=overwrite)
    return save_hf(state, model.args, out_dir, max_shard_bytes=max_shard_bytes, overwrite=overwrite)


__all__ = ["save_meta", "save_hf", "convert", "meta_params", "hf_config", "llama3_style_embeddings"]
