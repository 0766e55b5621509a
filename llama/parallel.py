"""Tensor parallelism: the same readable model, split across processes by torch.distributed.

Each process (a "rank", one per GPU, or per CPU socket with gloo) holds a 1/world slice of
every large matrix and runs the same forward pass on the same tokens; collectives stitch
the slices together so that every rank ends up with the full logits. This follows the
layout of Meta's reference code (its model-parallel shards are exactly these slices):

    wq, wk, wv, w1, w3   split by output rows (ColwiseParallel): each rank computes
                         H/world query heads, KV/world key/value heads, F/world of the FFN
    wo, w2               split by input columns (RowwiseParallel): each rank multiplies its
                         own heads / FFN slice, then an all-reduce sums the partial outputs
    tok_embeddings       Llama 3 (VocabParallelEmbedding): rows of the vocabulary, each rank
                         looks up the ids it holds, an all-reduce fills in the rest;
                         Llama 1/2 (ParallelEmbedding): columns of D, then an all-gather
    output               split by vocabulary rows (ColumnParallelLinear), logits all-gathered
    norms, RoPE table    replicated (small)

How. `llama.model` stays the single-device model; this module changes it from outside:

  * `torch.distributed.tensor.parallel.parallelize_module` applies ColwiseParallel /
    RowwiseParallel plans on a one-dimensional DeviceMesh. The weights become DTensors:
    `model.state_dict()` and `model.num_params()` still report the full shapes, and code
    that multiplies a weight by a plain tensor fails loudly ("mixed torch.Tensor and
    DTensor") instead of silently using a slice. The plans' input/output hooks hand plain
    local tensors between layers, so the attention code is untouched.
  * The attention module must split its projections into H/world and KV/world heads: the
    local counts are set on each `Attention` instance (`n_heads`, `n_kv_heads`; n_rep and
    head_dim are unchanged), nothing in model.py knows about parallelism. Each rank's KV
    cache then holds its own kv heads.
  * Where the tensor-parallel API falls short we use plain DTensor redistributions:
    - loading: parallelize_module distributes full tensors that every rank must already
      hold. The loader (weights/parallel.py) instead applies the plan to a model on the
      meta device and assigns each rank's slice with `DTensor.from_local`, so no rank
      ever materialises the whole model (`assign_local`).
    - hooks: a hook on a head-split intermediate (q, k, v, q_rot, k_rot, scores, probs,
      heads; gate, up, act of the FFN) would see only this rank's heads. The Attention and
      FeedForward instances get a `tap` that all-gathers the value first, so captures see
      the full tensor under the usual name (on every rank, rank 0 included), and an
      intervention sees the full tensor too; each rank keeps its own heads of the result,
      so an edit of head h takes effect on the rank that holds head h. Only hooked tap
      points pay for the gather.
    - failures: a collective that times out or loses its peer raises RankFailureError
      with a message, instead of a deep gloo/NCCL traceback or a hang (the timeout is the
      process group's: LLAMA_TP_TIMEOUT seconds, default 600).

Every rank must run the same program: the same calls, on the same tokens, with the same
hooks installed (SPMD). Launch with torchrun (see docs/PARALLEL.md):

    torchrun --nproc-per-node 2 my_script.py          # inside: load_model(path, parallel="tensor")

`parallelize(model)` applies the same to a model already in memory on every rank (tests,
notebooks); `weights.load_model(path, parallel="tensor")` loads only each rank's part.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .config import ModelArgs
from .model import Attention, FeedForward, Transformer

TIMEOUT_ENV = "LLAMA_TP_TIMEOUT"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 600.0

# Parameter name (after "layers.N.") -> the dimension split across ranks.
_LAYER_SPLIT = {
    "attention.wq.weight": 0, "attention.wq.bias": 0,
    "attention.wk.weight": 0, "attention.wk.bias": 0,
    "attention.wv.weight": 0, "attention.wv.bias": 0,
    "attention.wo.weight": 1,
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,
    "feed_forward.w2.weight": 1,
}  # fmt: skip


class TensorParallelError(ValueError):
    """A tensor-parallel set-up that cannot work (world size, launch, shard layout)."""


class RankFailureError(RuntimeError):
    """A collective failed: another rank died, hung or was interrupted."""


@dataclass(frozen=True)
class ParallelContext:
    """Who this process is in the tensor-parallel group."""

    mesh: Any  # torch.distributed.device_mesh.DeviceMesh, one dimension of world_size
    rank: int
    world_size: int
    device: torch.device
    timeout_s: float

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reads input and prints (front ends check this)."""
        return self.rank == 0


# ----------------------------------------------------------------------------------
# Process group
# ----------------------------------------------------------------------------------


def default_backend(device: torch.device | str) -> str:
    """NCCL for GPUs (with gloo beside it for CPU tensors), gloo for the CPU."""
    return "cpu:gloo,cuda:nccl" if torch.device(device).type == "cuda" else "gloo"


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise TensorParallelError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds > 0, e.g. 600")
    return value


def init_distributed(device: torch.device | str = "cpu") -> ParallelContext:
    """Join (or reuse) the process group torchrun set up; a 1-D DeviceMesh over all ranks.

    device "cpu" -> gloo; "cuda" -> each rank takes cuda:LOCAL_RANK and NCCL. The process
    group's timeout comes from LLAMA_TP_TIMEOUT (seconds, default 600): a rank that waits
    longer than that for the others gives up with RankFailureError.
    """
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_available():
        raise TensorParallelError("this torch build has no torch.distributed: tensor parallelism needs it")
    device = torch.device(device)
    timeout = timeout_seconds()
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise TensorParallelError(
                "parallel='tensor' runs one process per rank, started by torchrun: e.g. "
                "`torchrun --nproc-per-node 2 your_script.py` (several machines: see "
                "docs/PARALLEL.md). This process was not started that way (RANK and "
                "WORLD_SIZE are not set). Without torchrun, load the model without parallel=."
            )
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise TensorParallelError("device 'cuda' was asked for, but CUDA is not available: use 'cpu' (gloo)")
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.index is None:
                if local >= torch.cuda.device_count():
                    raise TensorParallelError(
                        f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                        "start at most that many processes per node (--nproc-per-node)"
                    )
                device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group(
            default_backend(device), timeout=datetime.timedelta(seconds=timeout)
        )
    elif device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    world = dist.get_world_size()
    mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("tp",))
    return ParallelContext(mesh, dist.get_rank(), world, device, timeout)


# ----------------------------------------------------------------------------------
# What is split how
# ----------------------------------------------------------------------------------


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


def _module_plan(args: ModelArgs, embedding_dim: int) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------
# Applying the plan
# ----------------------------------------------------------------------------------


def parallelize(
    model: Transformer, ctx: ParallelContext | None = None, embedding_dim: int = 0
) -> "TensorParallelTransformer":
    """Split `model` in place across the ranks of `ctx` (default: init_distributed(...)).

    Works on a model with its full weights on every rank (each rank keeps its slice; the
    values come from rank 0) and on a model built on the meta device (the loader then
    fills in each rank's slice with `assign_local`). Returns the same object, now a
    TensorParallelTransformer.
    """
    from torch.distributed.tensor.parallel import parallelize_module

    if isinstance(model, TensorParallelTransformer):
        raise TensorParallelError("this model is already tensor-parallel")
    if not isinstance(model, Transformer):
        raise TypeError(f"parallelize() takes a llama.model.Transformer, got {type(model).__name__}")
    if ctx is None:
        ctx = init_distributed(model.tok_embeddings.weight.device)
    args = model.args
    check_world_size(args, ctx.world_size, embedding_dim=embedding_dim)
    shard_plan(args, embedding_dim)  # validates the embedding choice against tying
    tied = args.tie_embeddings
    plan = _module_plan(args, embedding_dim)
    # (With one rank this still makes DTensor parameters, unsplit: the same code path.)
    parallelize_module(model, ctx.mesh, plan)
    if tied:
        model.output.weight = model.tok_embeddings.weight  # both split by vocabulary rows
    _localise(model, ctx)
    return model  # type: ignore[return-value]


def _localise(model: Transformer, ctx: ParallelContext) -> None:
    """Local head counts, gathering taps and failure messages, set from outside model.py."""
    w = ctx.world_size
    for layer in model.layers:
        attention = layer.attention
        attention.n_heads = model.args.n_heads // w  # this rank's query heads
        attention.n_kv_heads = model.args.n_kv_heads // w  # and key/value heads
        # n_rep (query heads per kv head) and head_dim are the same as in one process:
        # rank r holds query heads r*H/w .. and exactly the kv heads they share.
        attention.__class__ = TensorParallelAttention
        layer.feed_forward.__class__ = TensorParallelFeedForward
        attention.tp, layer.feed_forward.tp = ctx, ctx
    model.__class__ = TensorParallelTransformer
    model.tp = ctx


def assign_local(model: Transformer, name: str, local: torch.Tensor) -> None:
    """Make parameter `name` this rank's slice `local` (after parallelize on a meta model).

    A split parameter becomes DTensor.from_local(local) with the placement the plan gave it;
    a replicated one (norms) a plain parameter. The slice's shape is checked.
    """
    from torch.distributed.tensor import DTensor

    module_name, _, pname = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = getattr(module, pname)
    ctx: ParallelContext = model.tp  # type: ignore[attr-defined]
    if isinstance(old, DTensor):
        placement = old.placements[0]
        expected = list(old.shape)
        if hasattr(placement, "dim"):
            lo, hi = local_range(old.shape[placement.dim], ctx.world_size, ctx.rank)
            expected[placement.dim] = hi - lo
        if list(local.shape) != expected:
            raise TensorParallelError(
                f"rank {ctx.rank}: the slice of {name} has shape {tuple(local.shape)}, but "
                f"{tuple(expected)} of the full {tuple(old.shape)} belongs to this rank"
            )
        value = DTensor.from_local(
            local, ctx.mesh, old.placements, run_check=False, shape=old.shape, stride=old.stride()
        )
    else:
        if tuple(local.shape) != tuple(old.shape):
            raise TensorParallelError(f"{name} has shape {tuple(local.shape)}, expected {tuple(old.shape)}")
        value = local
    module.register_parameter(pname, nn.Parameter(value, requires_grad=old.requires_grad))


# ----------------------------------------------------------------------------------
# Hooks on split intermediates
# ----------------------------------------------------------------------------------


def _hook_kinds(tap_fn: Any, local: str) -> tuple[bool, bool]:
    """(is `local` observed?, is it edited?) by this module's llama.hooks dispatcher.

    Reads the dispatcher's lists of (hook set, {local name: full name}); if the hook
    machinery looks different, answer (True, True): gathering is then always done, which
    is correct, only slower.
    """
    editors = getattr(tap_fn, "editors", None)
    observers = getattr(tap_fn, "observers", None)
    if not isinstance(editors, list) or not isinstance(observers, list) or getattr(tap_fn, "prev", None) is not None:
        return True, True
    try:
        edited = any(local in names for _, names in editors)
        observed = any(local in names for _, names in observers)
    except (TypeError, ValueError):
        return True, True
    return observed, edited


def _gathered_tap(module: Any, name: str, value: torch.Tensor, dim: int) -> torch.Tensor:
    from torch.distributed.tensor import DTensor, Replicate, Shard

    observed, edited = _hook_kinds(module._tap_fn, name)
    if not (observed or edited):
        return module._tap_fn(name, value)
    ctx: ParallelContext = module.tp
    # All ranks' heads, in order: what one process would have computed (differentiable).
    full = DTensor.from_local(value, ctx.mesh, [Shard(dim)], run_check=False).full_tensor()
    new = module._tap_fn(name, full)
    if not edited:
        return value  # observers only: the model goes on with its own slice
    # Keep this rank's heads of the (possibly edited) full tensor. Replicate -> Shard is a
    # local slice forwards and an all-gather backwards, so gradients at this point are the
    # full gradients on every rank, as in one process.
    local = DTensor.from_local(new, ctx.mesh, [Replicate()], run_check=False)
    return local.redistribute(ctx.mesh, [Shard(dim)]).to_local().contiguous()


class TensorParallelAttention(Attention):
    """Attention over this rank's heads; hooks on head-split values see all the heads."""

    # Local tap name -> the dimension that holds the heads.
    split_taps = {"q": 2, "k": 2, "v": 2, "q_rot": 2, "k_rot": 2, "heads": 2, "scores": 1, "probs": 1}

    def tap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self._tap_fn is None:
            return value  # no hooks: the usual one attribute test
        dim = self.split_taps.get(name)
        return self._tap_fn(name, value) if dim is None else _gathered_tap(self, name, value, dim)


class TensorParallelFeedForward(FeedForward):
    """SwiGLU over this rank's slice of F; hooks on gate/up/act see the whole of F."""

    split_taps = {"gate": 2, "up": 2, "act": 2}

    def tap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self._tap_fn is None:
            return value
        dim = self.split_taps.get(name)
        return self._tap_fn(name, value) if dim is None else _gathered_tap(self, name, value, dim)


# ----------------------------------------------------------------------------------
# The model, and what happens when another rank fails
# ----------------------------------------------------------------------------------

_FAILURE_SIGNS = ("timed out", "timeout", "connection", "broken pipe", "gloo/transport", "nccl", "socket", "peer")


def is_rank_failure(error: BaseException) -> bool:
    """Does this exception come from a collective whose peers are gone or stuck?"""
    if isinstance(error, RankFailureError):
        return True
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error).lower() for s in _FAILURE_SIGNS)


def rank_failure(ctx: ParallelContext, error: BaseException, doing: str) -> RankFailureError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return RankFailureError(
        f"rank {ctx.rank} of {ctx.world_size}: {doing} needs all ranks, and the collective "
        f"failed ({first}). Another rank has probably died, hung or been interrupted: look "
        f"at its output above. This rank stops instead of waiting (a collective waits at "
        f"most {ctx.timeout_s:g} s; set {TIMEOUT_ENV} to change that)."
    )


class TensorParallelTransformer(Transformer):
    """The Transformer with its weights split across ranks (`model.tp` says how).

    forward gives every rank the full float32 logits (B, T, V). Every rank must call it
    with the same tokens and start_pos, and with the same hooks installed.
    """

    tp: ParallelContext
    # Compare every call's input across ranks first (one small all-gather): ranks that were
    # given different tokens would otherwise mix their results into wrong logits silently.
    check_inputs = True

    def forward(self, tokens: torch.Tensor, start_pos: int = 0, last_only: bool = False) -> torch.Tensor:
        try:
            if self.check_inputs:
                self._check_same_input(tokens, start_pos, last_only)
            return super().forward(tokens, start_pos, last_only)
        except RuntimeError as e:
            if is_rank_failure(e) and not isinstance(e, RankFailureError):
                raise rank_failure(self.tp, e, "the forward pass") from e
            raise

    def _check_same_input(self, tokens: torch.Tensor, start_pos: int, last_only: bool) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or not isinstance(start_pos, int):
            return  # _check_input explains that, identically on every rank
        ids = tokens.to(torch.int64).flatten()
        weights = torch.arange(1, ids.numel() + 1, device=ids.device, dtype=torch.int64)
        mine = torch.stack([  # a fingerprint: shape, position, flags and two checksums
            torch.tensor(tokens.shape[0]), torch.tensor(tokens.shape[1]), torch.tensor(start_pos),
            torch.tensor(int(last_only)), ids.sum().cpu(), (ids * weights).sum().cpu(),
        ]).to(self.tp.device)
        every = [torch.empty_like(mine) for _ in range(self.tp.world_size)]
        dist.all_gather(every, mine)
        differ = [r for r, other in enumerate(every) if not torch.equal(other, every[0])]
        if differ:
            raise TensorParallelError(
                f"rank {self.tp.rank}: the ranks called the model with different inputs (rank "
                f"{differ[0]} differs from rank 0 in tokens, their shape, start_pos or "
                "last_only). Every rank must run the same call on the same tokens: let rank 0 "
                "read the input and broadcast it (torch.distributed.broadcast_object_list)."
            )

    def extra_repr(self) -> str:
        return f"tensor parallel: rank {self.tp.rank} of {self.tp.world_size} on {self.tp.device}"


class InputChannel:
    """Rank 0 decides, every rank follows: how a front end drives the ranks under torchrun.

        channel = InputChannel()                      # on every rank (a collective)
        while (line := channel.share(input("> ") if channel.is_main else None)) is not None:
            result = session_step(line)               # the same call on every rank
            if channel.is_main:
                print(result)

    `share(value)` broadcasts rank 0's value (any picklable object: a line, a command, a
    sampling seed, a "stop" flag) and returns it on every rank. It runs over a gloo group
    of its own whose timeout (`wait_s`, default a week) is for waiting on a person typing,
    not LLAMA_TP_TIMEOUT: the model's collectives keep the short one.
    """

    def __init__(self, wait_s: float = 7 * 24 * 3600.0) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise TensorParallelError("InputChannel needs the process group: load the model with parallel='tensor' first")
        self.rank = dist.get_rank()
        self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=wait_s))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, value: Any = None) -> Any:
        box = [value if self.is_main else None]
        try:
            dist.broadcast_object_list(box, src=0, group=self.group)
        except RuntimeError as e:
            if is_rank_failure(e):
                raise RankFailureError(
                    f"rank {self.rank}: lost rank 0 while waiting for its input "
                    f"({(str(e).splitlines() or [''])[0][:200]}): rank 0 has probably exited."
                ) from e
            raise
        return box[0]


def shutdown() -> None:
    """Leave the process group at the end of a script, on every rank (after a barrier, so
    no rank tears its connections down while another still uses them)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0, or when no process group is running (a front end prints if so)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


__all__ = [
    "TIMEOUT_ENV",
    "TensorParallelError",
    "RankFailureError",
    "ParallelContext",
    "default_backend",
    "init_distributed",
    "valid_world_sizes",
    "check_world_size",
    "shard_plan",
    "local_range",
    "parallelize",
    "assign_local",
    "TensorParallelAttention",
    "TensorParallelFeedForward",
    "TensorParallelTransformer",
    "is_rank_failure",
    "is_main",
    "InputChannel",
    "shutdown",
]
