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

How. `llama.model` stays the single-device model; this package changes it from outside
(plan.py: what is split how; model.py: applying it, hooks, the parallel classes;
group.py: the process group, failures, and the channel front ends use):

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
    - inputs: each forward first compares a fingerprint of its tokens across ranks (one
      small all-gather), so ranks given different inputs stop with TensorParallelError
      instead of mixing their results.

Every rank must run the same program: the same calls, on the same tokens, with the same
hooks installed (SPMD). Launch with torchrun (see docs/PARALLEL.md):

    torchrun --nproc-per-node 2 my_script.py          # inside: load_model(path, parallel="tensor")

`parallelize(model)` applies the same to a model already in memory on every rank (tests,
notebooks); `weights.load_model(path, parallel="tensor")` loads only each rank's part.
`InputChannel` lets rank 0 read input and hand it to every rank (front ends).
"""

from __future__ import annotations

from .group import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV,
    InputChannel,
    ParallelContext,
    RankFailureError,
    TensorParallelError,
    default_backend,
    init_distributed,
    is_main,
    is_rank_failure,
    rank_failure,
    shutdown,
    timeout_seconds,
    torchrun_world_size,
)
from .model import (
    TensorParallelAttention,
    TensorParallelFeedForward,
    TensorParallelTransformer,
    assign_local,
    is_parallel,
    parallelize,
)
from .plan import check_world_size, local_range, module_plan, shard_plan, valid_world_sizes

__all__ = [
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT_S",
    "TensorParallelError",
    "RankFailureError",
    "ParallelContext",
    "default_backend",
    "timeout_seconds",
    "init_distributed",
    "valid_world_sizes",
    "check_world_size",
    "shard_plan",
    "local_range",
    "module_plan",
    "parallelize",
    "assign_local",
    "TensorParallelAttention",
    "TensorParallelFeedForward",
    "TensorParallelTransformer",
    "is_rank_failure",
    "rank_failure",
    "is_main",
    "InputChannel",
    "shutdown",
    "torchrun_world_size",
    "is_parallel",
]
