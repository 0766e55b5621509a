"""The process group: joining it, its timeout, what a failed collective means, and the
channel front ends use to let rank 0 decide for every rank. (Part of llama.parallel.)"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT_ENV = "LLAMA_TP_TIMEOUT"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 600.0


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
# When another rank fails
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


# ----------------------------------------------------------------------------------
# Front ends: rank 0 decides, every rank follows
# ----------------------------------------------------------------------------------


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
                first = (str(e).splitlines() or [""])[0][:200]
                if self.is_main:
                    raise RankFailureError(
                        f"rank 0: lost another rank while handing it the input ({first}): "
                        "it has probably died; look at its output above."
                    ) from e
                raise RankFailureError(
                    f"rank {self.rank}: lost rank 0 while waiting for its input "
                    f"({first}): rank 0 has probably exited."
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


def torchrun_world_size() -> int:
    """The number of ranks torchrun started this process among (WORLD_SIZE), 1 otherwise.

    Front ends load with parallel="tensor" when this is more than 1.
    """
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main() -> bool:
    """True on rank 0, or when no process group is running (a front end prints if so)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
