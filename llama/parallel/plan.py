"""What is split how: world-size rules, the parameter plan, the ranges each rank holds,
and the torch.distributed.tensor.parallel styles per module. (Part of llama.parallel.)"""

from __future__ import annotations

from typing import Any

from ..config import ModelArgs
from .group import TensorParallelError

# Parameter name (after "layers.N.") -> the dimension split across ranks.
_LAYER_SPLIT = {
    "attention.wq.weight": 0, "attention.wq.bias": 0,
    "attention.wk.weight": 0, "attention.wk.bias": 0,
    "attention.wv.weight": 0, "attention.wv.bias": 0,
    "attention.wo.weight": 1,
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,
    "feed_forward.w2.weight": 1,
}  # fmt: skip


def _divided_sizes(args: ModelArgs, embedding_dim: int) -> dict[str, int]:
    sizes = {
        "n_heads = {} (query heads)": args.n_heads,
        "n_kv_heads = {} (key/value heads)": args.n_kv_heads,
        "hidden_dim = {} (feed-forward width)": args.hidden_dim,
    }
    if embedding_dim == 1:  # Llama 1/2 style: the embedding's columns are split
        sizes["dim = {} (model width; the embedding is split by columns)"] = args.dim
    return sizes


def valid_world_sizes(args: ModelArgs, embedding_dim: int = 0) -> list[int]:
    """The numbers of ranks this model can be split over (each divides every split size)."""
    sizes = _divided_sizes(args, embedding_dim)
    return [w for w in range(1, min(sizes.values()) + 1) if all(v % w == 0 for v in sizes.values())]


def check_world_size(
    args: ModelArgs, world_size: int, *, shards: int | None = None, embedding_dim: int = 0
) -> None:
    """Raise TensorParallelError, naming the counts that would work, unless world_size
    divides the heads, the kv heads and the FFN width (and D for a column-split embedding).

    The vocabulary need not divide: its last slice is simply shorter.
    shards: how many model-parallel files the checkpoint has (Meta's consolidated.NN.pth),
        mentioned when it differs from world_size.
    """
    sizes = _divided_sizes(args, embedding_dim)
    bad = [label.format(v) for label, v in sizes.items() if v % world_size]
    if not bad:
        return
    works = ", ".join(map(str, valid_world_sizes(args, embedding_dim)))
    msg = (
        f"this model cannot be split over {world_size} processes: tensor parallelism gives "
        f"each rank an equal share of the heads and of the feed-forward width, and "
        f"{world_size} does not divide {', '.join(bad)}. World sizes that work for this "
        f"model: {works}."
    )
    if shards is not None and shards != world_size:
        msg += (
            f" The checkpoint is stored as {shards} model-parallel shard(s); they can be "
            f"re-sliced for any of those world sizes (and with {shards} processes each rank "
            f"reads just its own shard), but not for {world_size}."
        )
    msg += " Launch with `torchrun --nproc-per-node N` (over several nodes: N per node x nodes)."
    raise TensorParallelError(msg)


def shard_plan(args: ModelArgs, embedding_dim: int = 0) -> dict[str, int | None]:
    """{parameter name: dimension split across ranks (None: replicated)} for the model.

    embedding_dim: 0 = vocabulary rows (Llama 3, and required when the output is tied to
    the embedding), 1 = model-width columns (Llama 1/2's ParallelEmbedding).
    """
    if embedding_dim not in (0, 1):
        raise TensorParallelError(f"embedding_dim must be 0 (vocabulary) or 1 (width), got {embedding_dim!r}")
    if embedding_dim == 1 and args.tie_embeddings:
        raise TensorParallelError(
            "a tied embedding doubles as the output, which is split by vocabulary rows: "
            "use embedding_dim=0"
        )
    plan: dict[str, int | None] = {"tok_embeddings.weight": embedding_dim, "norm.weight": None}
    if not args.tie_embeddings:
        plan["output.weight"] = 0
    for i in range(args.n_layers):
        for suffix in ("attention_norm.weight", "ffn_norm.weight"):
            plan[f"layers.{i}.{suffix}"] = None
        for suffix, d in _LAYER_SPLIT.items():
            if suffix.endswith(".bias") and not args.attention_bias:
                continue
            plan[f"layers.{i}.{suffix}"] = d
    return plan


def local_range(size: int, world_size: int, rank: int) -> tuple[int, int]:
    """[lo, hi) of a dimension of `size` held by `rank`: torch.chunk's split, as DTensor's
    Shard uses it (equal slices; with a remainder the last ranks hold less)."""
    step = -(-size // world_size)  # ceil
    lo = min(rank * step, size)
    return lo, min(lo + step, size)


def module_plan(args: ModelArgs, embedding_dim: int) -> dict[str, Any]:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    if embedding_dim == 0:
        # Rows of the vocabulary: a rank looks up only the ids it holds (zeros elsewhere);
        # the all-reduce of the partial sums gives every rank the full embeddings. The
        # input ids are the same on every rank (Replicate), not a shard.
        embedding = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    else:
        # Columns of D: every rank looks up every id, a D/world slice; all-gather them.
        embedding = ColwiseParallel(output_layouts=Replicate())
    plan: dict[str, Any] = {
        "tok_embeddings": embedding,
        # Vocabulary rows; the logits are all-gathered so every rank has all of them.
        "output": ColwiseParallel(output_layouts=Replicate()),
    }
    for i in range(args.n_layers):
        p = f"layers.{i}"
        # Local outputs stay local (this rank's heads / FFN slice) ...
        plan[f"{p}.attention.wq"] = ColwiseParallel()
        plan[f"{p}.attention.wk"] = ColwiseParallel()
        plan[f"{p}.attention.wv"] = ColwiseParallel()
        plan[f"{p}.feed_forward.w1"] = ColwiseParallel()
        plan[f"{p}.feed_forward.w3"] = ColwiseParallel()
        # ... until wo and w2 multiply them and all-reduce the partial results.
        plan[f"{p}.attention.wo"] = RowwiseParallel()
        plan[f"{p}.feed_forward.w2"] = RowwiseParallel()
    return plan
