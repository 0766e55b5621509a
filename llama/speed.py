"""Running the same model faster: settings and kernels, not a second model.

Nothing here changes what llama/model.py computes or how it reads: the modules, parameter
names and state dict stay the same, and tests/test_speed.py checks the logits against
transformers with the fast kernels on. docs/PERFORMANCE.md has the measurements, and
scripts/bench.py the command that takes them.

Decoding one token multiplies a single (1, D) row by every weight matrix, so a token
costs the time it takes to stream all the weights from memory once. For float32 weights
on this project's CPU box, `F.linear` on one row goes to a matrix-vector kernel that
reads the weights at about 10 GB/s, a fraction of the machine's read bandwidth. The same
product written as a batched product -- the weight's rows split into two halves, each
half times the same column -- goes to another kernel that reads at 17-39 GB/s and gives
each half its own thread. For a prefill (many rows), torch's oneDNN matrix product is
1.2-1.55x faster here than the default BLAS one on all but the smallest matrices. Same
multiply-adds on the same weights in the same memory; results equal to float32 rounding
(sums taken in another order): within 1e-4 of transformers' logits on the tiny test
models, 1.5e-4 on SmolLM2-135M's 30 layers, where the plain kernels stay within 1e-4.

bfloat16 is left alone: `F.linear` already goes to oneDNN, and the batched form is slower.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_linear_op():
    """torch's oneDNN (mkldnn) linear, or None where this torch build lacks it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return None
        probe = torch.ones(2, 3)
        if not torch.equal(op(probe, torch.ones(4, 3), None, "none", [], ""), torch.full((2, 4), 3.0)):
            return None
        return op
    except (AttributeError, RuntimeError):
        return None


class FastLinear(nn.Linear):
    """nn.Linear that picks a faster CPU kernel for the same float32 product.

    One row (a decode step): the weight's rows are split into two halves and multiplied
    by the same column as a batched product (torch.bmm). Several rows (a prefill): torch's
    oneDNN matrix product instead of the default BLAS one. Whenever autograd needs the
    product (saliency, gradients), or oneDNN is missing, it is the plain F.linear.
    `use_fast_kernels` turns a model's float32 CPU nn.Linear modules into this class in
    place: same parameters, same names, same state dict.
    """

    _onednn = None  # set by use_fast_kernels: torch.ops.mkldnn._linear_pointwise or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (
            torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        ):  # moved to another device since, or autograd needs the product
            return F.linear(x, self.weight, self.bias)
        out_features, in_features = self.weight.shape
        if x.numel() == in_features and out_features % 2 == 0:
            return self._one_row(x)
        if self._onednn is not None and x.dtype == self.weight.dtype == torch.float32:
            return self._onednn(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def _one_row(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) holding one row
        out_features, in_features = self.weight.shape
        # (out, in) -> (2, out/2, in): the top and bottom halves of the weight's rows.
        halves = self.weight.view(2, out_features // 2, in_features)
        # The row as a column, (1, 1, in) -> (1, in, 1) by a transpose (not a reshape), then
        # shared by both halves: (2, in, 1), no copy. The transpose matters: a column with
        # this stride pattern goes to the fast batched kernel, a reshaped one to a slow one.
        column = x.reshape(1, 1, in_features).mT.expand(2, in_features, 1)
        y = torch.bmm(halves, column)  # (2, out/2, 1): each half times the same column
        y = y.reshape(*x.shape[:-1], out_features)  # (..., 1, in) -> (..., 1, out)
        return y if self.bias is None else y + self.bias


def use_fast_kernels(model: nn.Module) -> nn.Module:
    """Run a float32 CPU model's linear layers on the faster kernels of FastLinear.

    Swaps the class of each float32 CPU nn.Linear to FastLinear, in place: no weight is
    copied, moved or re-laid-out, a tied output/embedding matrix stays one parameter, and
    `use_standard_kernels(model)` undoes it. Other dtypes and devices are left as they
    are (for bfloat16, F.linear is already torch's fastest CPU kernel here). The fast
    kernels run under torch.no_grad() or torch.inference_mode(), as generation and the
    REPL run the model; with autograd on, the products stay F.linear. A tensor-parallel
    model (llama.parallel.is_parallel: DTensor weights) is left as it is. Returns the model.
    """
    from .parallel import is_parallel  # deferred: torch.distributed only when called

    if is_parallel(model):
        return model  # FastLinear's kernels have no DTensor rules
    FastLinear._onednn = _onednn_linear_op()
    for module in model.modules():
        w = getattr(module, "weight", None)
        if type(module) is nn.Linear and w.dtype == torch.float32 and w.device.type == "cpu":
            module.__class__ = FastLinear
    return model


def use_standard_kernels(model: nn.Module) -> nn.Module:
    """Undo use_fast_kernels: every FastLinear becomes a plain nn.Linear again."""
    for module in model.modules():
        if type(module) is FastLinear:
            module.__class__ = nn.Linear
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


__all__ = ["FastLinear", "use_fast_kernels", "use_standard_kernels", "set_threads"]
