"""Loading one rank's part of a checkpoint for tensor parallelism (llama.parallel).

    model = load_model(path, parallel="tensor")      # inside torchrun, on every rank

Each rank reads only its own slice of every split tensor (see llama.parallel for what is
split how) and never the whole model:

  * Meta folder with as many consolidated.NN.pth shards as ranks (Meta's own layout,
    e.g. 70B on 8 GPUs): rank r memory-maps consolidated.r.pth and nothing else. Meta's
    shards are exactly our slices, so the tensors are used as they are in the file.
  * Meta folder with another number of shards (13B's 2 files on 4 ranks, 70B's 8 on 2):
    every shard is memory-mapped and each rank copies its range out of the shards that
    overlap it, so only those bytes are read (a column slice reads every page of its
    matrix, though: its rows interleave with the other ranks' columns).
  * Hugging Face folder or GGUF file: the full tensor is opened lazily (memory-mapped
    where the format allows) and this rank's slice is copied out of it, one tensor at a
    time. Tensors the format must convert first (Hugging Face's q/k rows, dequantised
    GGUF blocks) exist in full for a moment, one at a time.

Re-sliced tensors are copies of exactly this rank's size, so once loading ends the
mappings close and the rank's memory is its share of the weights (docs/PARALLEL.md has
the measurements).

The steps are those of weights.checkpoint.build_model: build on the meta device, check
every name and full shape against the config (strictly), check that this rank's share
fits, then assign the slices (llama.parallel.assign_local). Every rank reports success
or its error to the others before returning, so a rank whose file is damaged makes all
of them raise the same error instead of leaving the rest waiting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from llama.model import Transformer
from llama.parallel import (
    ParallelContext,
    RankFailureError,
    TensorParallelError,
    assign_local,
    check_world_size,
    init_distributed,
    is_rank_failure,
    local_range,
    parallelize,
    rank_failure,
    shard_plan,
)

from .checkpoint import Checkpoint, available_memory, check_state, dtype_name, rebuild_rope, weights_on_meta
from .errors import CheckpointError, CheckpointNotFoundError, InsufficientMemoryError
from .meta import load_pth, meta_args, native_dtype, read_params, shard_keys, shard_paths, split_dim


@dataclass
class SlicedSource:
    """A checkpoint opened for one rank: full shapes for the checks, slices to read."""

    checkpoint: Checkpoint  # config, full shapes and names for check_state and messages
    shards: int | None  # Meta model-parallel files, None for other formats
    embedding_dim: int  # how tok_embeddings is split: 0 vocabulary rows, 1 width columns
    # (name, dtype, split dim or None) -> this rank's slice, in that dtype, on the CPU
    read_slice: Callable[[str, torch.dtype, int | None], torch.Tensor]
    reads_own_shard_only: bool = False


def _copied(t: torch.Tensor, source: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t (a slice of `source`) in `dtype`, in memory of its own size.

    Never a view: a view of a memory-mapped file would keep the whole mapping, and every
    page this rank touched while cutting out its slice (all pages of a column slice), in
    its resident memory for good; a view of a converted full tensor (q/k rows, dequantised
    blocks) would keep that tensor alive. Copied, the mapping closes once loading ends.
    """
    out = t.to(dtype)
    if out.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        out = out.clone(memory_format=torch.contiguous_format)
    return out


# ----------------------------------------------------------------------------------
# Meta folders
# ----------------------------------------------------------------------------------


def open_meta_sliced(folder: Path, ctx: ParallelContext, **overrides: Any) -> SlicedSource:
    params = read_params(folder)  # params.json, names and config: the rules of open_meta
    paths = shard_paths(folder)
    if not paths:
        raise CheckpointNotFoundError(f"{folder} has params.json but no consolidated.NN.pth file")
    n = len(paths)
    own_only = n == ctx.world_size
    # Meta's layout, one shard per rank: open this rank's file alone. Otherwise map them all
    # (mapping reads no tensor data; only the ranges cut out below are ever touched).
    opened = {ctx.rank: load_pth(paths[ctx.rank])} if own_only else {i: load_pth(p) for i, p in enumerate(paths)}
    sample = next(iter(opened.values()))
    keys = shard_keys(folder, paths, opened)

    dim = params["dim"]
    file_dims: dict[str, int | None] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name in keys:
        shape = tuple(sample[name].shape)
        d = split_dim(name, shape, dim) if n > 1 else None
        if d is not None and d >= len(shape):
            d = None
        file_dims[name] = d
        if d is not None:
            total = shape[d] * n if own_only else sum(s[name].shape[d] for s in opened.values())
            shape = shape[:d] + (total,) + shape[d + 1 :]
        shapes[name] = shape
    args = meta_args(folder, params, shapes, overrides)

    # The embedding is split the way the files split it (as Meta's reference does), except
    # that a tied one must be split by vocabulary rows, like the output it doubles as.
    emb_file = file_dims["tok_embeddings.weight"]
    embedding_dim = emb_file if emb_file is not None and not (args.tie_embeddings and emb_file == 1) else 0
    if own_only and emb_file != embedding_dim:
        own_only = False
        opened = {i: load_pth(p) for i, p in enumerate(paths)}
    native = native_dtype(sample)
    shards = [opened[i] for i in sorted(opened)]

    def read_slice(name: str, dtype: torch.dtype, d: int | None) -> torch.Tensor:
        fd = file_dims.get(name)
        if own_only:
            # This rank's shard *is* its slice (a split tensor) or a copy (a norm).
            return opened[ctx.rank][name].to(dtype)
        pieces = [s[name] for s in shards]
        if d is None or fd is None:
            t = pieces[0]  # replicated in the files (a norm, or a single-file checkpoint)
            if d is None:
                return _copied(t, t, dtype)
            lo, hi = local_range(t.shape[d], ctx.world_size, ctx.rank)
            return _copied(t.narrow(d, lo, hi - lo), t, dtype)
        lo, hi = local_range(shapes[name][d], ctx.world_size, ctx.rank)
        if fd == d:
            # The files hold consecutive ranges along d: take the parts that overlap ours.
            parts, start = [], 0
            for p in pieces:
                a, b = max(lo, start), min(hi, start + p.shape[d])
                if a < b:
                    parts.append((p.narrow(d, a - start, b - a), p))
                start += p.shape[d]
            if len(parts) == 1:
                return _copied(parts[0][0], parts[0][1], dtype)
            return torch.cat([part for part, _ in parts], dim=d).to(dtype)
        # Split along another dimension in the files (a tied Llama 2-style embedding):
        # our range of d from every file, joined along the files' dimension.
        return torch.cat([p.narrow(d, lo, hi - lo) for p in pieces], dim=fd).to(dtype)

    hint = (
        f"(The checkpoint has {n} shard(s); consolidated.{ctx.rank:02d}.pth was read as this "
        f"rank's slice, one of {n}.) " if own_only else f"(The checkpoint has {n} shard file(s).) "
    )
    ckpt = Checkpoint(
        format="meta",
        path=folder,
        args=args,
        shapes=shapes,
        native_dtype=native,
        read=_no_full_reads,
        shape_hint=hint,
    )
    return SlicedSource(ckpt, n, embedding_dim, read_slice, reads_own_shard_only=own_only)


def _no_full_reads(name: str, dtype: torch.dtype) -> torch.Tensor:  # pragma: no cover
    raise AssertionError("the tensor-parallel loader reads slices, never whole tensors")


# ----------------------------------------------------------------------------------
# Other formats: slice full tensors as they are read
# ----------------------------------------------------------------------------------


def open_other_sliced(ckpt: Checkpoint, ctx: ParallelContext) -> SlicedSource:
    def read_slice(name: str, dtype: torch.dtype, d: int | None) -> torch.Tensor:
        # The file's own dtype: a memory-mapped view where the format allows, so casting
        # (below) touches only this rank's part.
        full = ckpt.read(name, ckpt.native_dtype)
        if d is None:
            return _copied(full, full, dtype)
        lo, hi = local_range(full.shape[d], ctx.world_size, ctx.rank)
        return _copied(full.narrow(d, lo, hi - lo), full, dtype)

    return SlicedSource(ckpt, None, 0, read_slice)


# ----------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------


def _local_numel(shape: tuple[int, ...], d: int | None, ctx: ParallelContext) -> int:
    n = 1
    for i, s in enumerate(shape):
        if i == d:
            lo, hi = local_range(s, ctx.world_size, ctx.rank)
            s = hi - lo
        n *= s
    return n


def _check_rank_memory(model: Transformer, plan: dict, dtype: torch.dtype, ctx: ParallelContext) -> None:
    available = available_memory(ctx.device)
    if available is None:
        return
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    local = sum(_local_numel(shapes[name], d, ctx) for name, d in plan.items())
    itemsize = torch.empty((), dtype=dtype).element_size()
    rope = model.args.max_seq_len * model.args.head_dim // 2 * 8
    needed = local * itemsize + rope + 64 * 2**20
    # Ranks on one machine share its memory (GPUs each have their own).
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if ctx.device.type == "cpu" else 1
    if needed * sharing > available:
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        raise InsufficientMemoryError(
            f"rank {ctx.rank}: its share of the model needs about {gib(needed)} in "
            f"{dtype_name(dtype)} on {ctx.device}"
            + (f", times {sharing} ranks on this machine" if sharing > 1 else "")
            + f", but only {gib(available)} is available. Use more ranks (or machines), "
            "a smaller dtype (dtype='bfloat16'), or free some memory."
        )


def _load_local(path: Any, dtype: torch.dtype | None, ctx: ParallelContext, check_mem: bool, overrides: dict) -> Transformer:
    from . import detect_format, open_checkpoint

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a checkpoint path must be a str or Path, got {type(path).__name__}")
    kind, where = detect_format(path)
    if kind == "meta":
        source = open_meta_sliced(where, ctx, **overrides)
    else:
        source = open_other_sliced(open_checkpoint(where, **overrides), ctx)
    ckpt = source.checkpoint
    if ckpt.family != "llama":
        raise TensorParallelError(
            f"{path}: tensor parallelism splits Llama-family models (Llama, Qwen2, SmolLM2 ...); "
            f"this is a {ckpt.family} checkpoint: load it without parallel= in one process"
        )
    args = ckpt.args
    check_world_size(args, ctx.world_size, shards=source.shards, embedding_dim=source.embedding_dim)
    dtype = ckpt.native_dtype if dtype is None else dtype

    with weights_on_meta():
        model = Transformer(args)  # shapes, no storage
    names = [n for n in check_state(model, ckpt) if n != "rope.freqs"]
    plan = shard_plan(args, source.embedding_dim)
    if check_mem:
        _check_rank_memory(model, plan, dtype, ctx)
    parallelize(model, ctx, embedding_dim=source.embedding_dim)  # DTensors on the meta device

    tied_output = None
    for name in names:
        if name == "output.weight" and args.tie_embeddings:
            tied_output = source.read_slice(name, dtype, 0)  # compared with the embedding below
            continue
        local = source.read_slice(name, dtype, plan[name])
        assign_local(model, name, local.to(ctx.device))
    if args.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
        if tied_output is not None and not torch.equal(
            tied_output, model.tok_embeddings.weight.to_local().to(tied_output.device)
        ):
            raise CheckpointError(
                "tie_embeddings is set but the checkpoint's output.weight differs from "
                "tok_embeddings.weight: load with tie_embeddings=False"
            )
    rebuild_rope(model, ctx.device)
    return model.eval()


def _agree(ctx: ParallelContext, error: BaseException | None) -> None:
    """Every rank learns whether every other rank loaded; raise the same error everywhere."""
    import torch.distributed as dist

    mine = None if error is None else f"{type(error).__name__}: {error}"
    statuses: list[str | None] = [None] * ctx.world_size
    try:
        dist.all_gather_object(statuses, mine)
    except RuntimeError as e:
        if is_rank_failure(e):
            if error is not None:
                # Our own error says more; the others may have raised theirs and left the
                # collective already (all ranks often fail the same check at once).
                raise error from None
            raise rank_failure(ctx, e, "loading the model") from e
        raise
    if error is not None:
        raise error
    for rank, status in enumerate(statuses):
        if status is not None:
            cls = TensorParallelError if status.startswith("TensorParallelError") else CheckpointError
            raise cls(f"rank {rank} could not load its part of the model, so no rank can run it. {status}")


def load_tensor_parallel(
    path: Any,
    dtype: torch.dtype | None,
    device: torch.device,
    check_memory: bool = True,
    **overrides: Any,
) -> Transformer:
    """weights.load_model(path, parallel="tensor"): this rank's part, full logits everywhere."""
    ctx = init_distributed(device)
    model, error = None, None
    try:
        model = _load_local(path, dtype, ctx, check_memory, overrides)
    except RankFailureError:
        raise
    except Exception as e:  # noqa: BLE001 - reported to every rank, then re-raised
        error = e
    _agree(ctx, error)
    return model  # type: ignore[return-value]


__all__ = ["load_tensor_parallel", "open_meta_sliced", "open_other_sliced", "SlicedSource"]
