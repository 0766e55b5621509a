"""Running the same model faster: settings and memory layouts, not a second model.

Nothing here changes what llama/model.py computes or how it reads; these functions change
how tensors are laid out in memory and how torch is configured, and tests/test_speed.py
checks that the logits stay equal.

Why the weight layout matters (measured on this project's 2-core CPU box, see
docs/PERFORMANCE.md): decoding one token multiplies a (1, D) row by every weight matrix,
so its speed is how fast the weights stream from memory. For float32, torch's CPU
matrix-vector product reads a weight stored input-major ("column-major": weight.t() is
contiguous) at close to the machine's memory bandwidth, but the usual output-major
nn.Linear layout at about half of it for large matrices such as the (V, D) output
projection. `decode_layout(model)` re-stores float32 weights input-major: same shapes, same
values, same module code, only the strides differ. bfloat16 matrix-vector products are the
other way round on CPU (input-major is many times slower), so they are left alone.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def _input_major(weight: torch.Tensor) -> torch.Tensor:
    """The same (out, in) matrix stored so that weight.t() is contiguous."""
    return weight.detach().t().contiguous().t()


def decode_layout(model: nn.Module) -> nn.Module:
    """Re-store the float32 CPU Linear weights input-major, in place, one at a time.

    Peak extra memory is one weight matrix. A tied output/embedding matrix is re-stored
    once and shared again (the embedding lookup of a few rows does not care about the
    layout). Returns the model.
    """
    done: dict[int, nn.Parameter] = {}  # id(original parameter) -> its re-stored twin
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight
        if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2:
            continue
        if id(w) not in done:
            done[id(w)] = nn.Parameter(_input_major(w), requires_grad=w.requires_grad)
        module.weight = done[id(w)]
    embeddings = getattr(model, "tok_embeddings", None)
    if embeddings is not None and id(embeddings.weight) in done:
        embeddings.weight = done[id(embeddings.weight)]  # keep the tie
    return model


def set_threads(n: int | None = None) -> int:
    """Use n intra-op threads (default: every core this process may run on). Returns n."""
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            n = os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


__all__ = ["decode_layout", "set_threads"]
