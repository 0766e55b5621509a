"""Applying the plan to a built model, hooks on split intermediates, and the parallel
model classes. (Part of llama.parallel.)"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..hooks.dispatch import tap_hooks
from ..model import Attention, FeedForward, Transformer
from .group import (
    ParallelContext,
    RankFailureError,
    TensorParallelError,
    init_distributed,
    is_rank_failure,
    rank_failure,
)
from .plan import check_world_size, local_range, module_plan, shard_plan

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
    plan = module_plan(args, embedding_dim)
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


def _gathered_tap(module: Any, name: str, value: torch.Tensor, dim: int) -> torch.Tensor:
    from torch.distributed.tensor import DTensor, Replicate, Shard

    observed, edited = tap_hooks(module, name)  # only hooked points pay for a gather
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


def _concrete(value: torch.Tensor) -> torch.Tensor:
    """The value itself, not a collective still in flight.

    The plans' outputs (after an all-reduce or all-gather) are torch's
    AsyncCollectiveTensor, waited for at the first operation on them; a hook may read the
    storage first (captures compare storages to decide whether to copy), which such a
    tensor does not have yet. So a hooked point gets a finished copy (only hooked points:
    without hooks the tap returns before this).
    """
    if not callable(getattr(value, "wait", None)):  # AsyncCollectiveTensor.wait(); plain tensors have none
        return value
    # Any operation waits for it; wait() itself would cut the autograd graph (gradients at
    # these points), a copy through the usual dispatch keeps it.
    return value.clone()


def _tap(module: Any, name: str, value: torch.Tensor) -> torch.Tensor:
    """A TensorParallel* module's tap (after the usual no-hooks test)."""
    dim = module.split_taps.get(name)
    if dim is None:
        return module._tap_fn(name, _concrete(value))  # whole on every rank already
    return _gathered_tap(module, name, value, dim)


class TensorParallelAttention(Attention):
    """Attention over this rank's heads; hooks on head-split values see all the heads."""

    # Local tap name -> the dimension that holds the heads.
    split_taps = {"q": 2, "k": 2, "v": 2, "q_rot": 2, "k_rot": 2, "heads": 2, "scores": 1, "probs": 1}

    def tap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self._tap_fn is None:
            return value  # no hooks: the usual one attribute test
        return _tap(self, name, value)


class TensorParallelFeedForward(FeedForward):
    """SwiGLU over this rank's slice of F; hooks on gate/up/act see the whole of F."""

    split_taps = {"gate": 2, "up": 2, "act": 2}

    def tap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self._tap_fn is None:
            return value
        return _tap(self, name, value)


# ----------------------------------------------------------------------------------
# The model, and what happens when another rank fails
# ----------------------------------------------------------------------------------

class TensorParallelTransformer(Transformer):
    """The Transformer with its weights split across ranks (`model.tp` says how).

    forward gives every rank the full float32 logits (B, T, V). Every rank must call it
    with the same tokens and start_pos, and with the same hooks installed.
    """

    tp: ParallelContext
    split_taps: dict[str, int] = {}  # the model's own points (embeddings, norm, logits) are whole
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

    def tap(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self._tap_fn is None:
            return value
        return _tap(self, name, value)

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


def is_parallel(model: nn.Module) -> bool:
    """Is `model` split across ranks (its weights DTensors)?

    Code that needs each weight whole in this process must check this first and leave
    such a model alone: llama.speed.optimize (its kernels call oneDNN, bmm and integer
    products on the weight, which DTensor has no rules for), anything that multiplies a
    weight by a plain tensor.
    """
    if isinstance(model, TensorParallelTransformer):
        return True
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without torch.distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())

