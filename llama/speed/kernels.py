"""The candidate kernels for one linear product, y = x W^T + b.

Every candidate computes the same multiply-adds on the same weights in the same memory
(nothing is copied or re-laid-out); they differ in which torch kernel runs them, and so in
the order the products are summed. Which one is fastest depends on the machine: on the
AMD EPYC box the project started on, the batched one-row product reads float32 weights 2-4x
faster than F.linear, while on an Intel Xeon it halves the speed. So nothing here is
chosen by assumption: llama.speed.calibrate times the candidates on the real weights and
checks each against F.linear before it may be used.

A kernel is a function (x, weight, bias) -> y with x of shape (..., in), weight (out, in)
and y (..., out), plus a test of whether it applies to an input at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Fn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Kernel:
    name: str
    fn: Fn
    # (x, weight) -> whether this kernel can compute the product at all.
    applies: Callable[[torch.Tensor, torch.Tensor], bool]
    about: str

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.fn(x, weight, bias)


def _always(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return True


LINEAR = Kernel("linear", F.linear, _always, "F.linear: the reference every other candidate must equal")


def _one_row(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.numel() == weight.shape[1]


def split_rows(parts: int) -> Kernel:
    """One row times the weight, written as a batched product over `parts` blocks of rows."""

    def fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out_features, in_features = weight.shape
        # (out, in) -> (parts, out/parts, in): consecutive blocks of the weight's rows, a view.
        blocks = weight.view(parts, out_features // parts, in_features)
        # The row as a column, (1, 1, in) -> (1, in, 1) by a transpose (not a reshape), shared
        # by every block: (parts, in, 1), no copy. A column with this stride pattern goes to
        # the fast batched kernel on the AMD box; a reshaped one to a slow one.
        column = x.reshape(1, 1, in_features).mT.expand(parts, in_features, 1)
        y = torch.bmm(blocks, column)  # (parts, out/parts, 1): each block times the column
        y = y.reshape(*x.shape[:-1], out_features)  # (..., in) with one row -> (..., out)
        return y if bias is None else y + bias

    def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
        return _one_row(x, weight) and weight.shape[0] % parts == 0 and weight.is_contiguous()

    return Kernel(f"bmm{parts}", fn, applies, f"one row as a batched product over {parts} blocks of rows")


def _mv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = torch.mv(weight, x.reshape(-1)).reshape(*x.shape[:-1], weight.shape[0])  # (..., in) -> (..., out)
    return y if bias is None else y + bias


MV = Kernel("mv", _mv, _one_row, "one row as torch.mv (matrix times vector)")


def _onednn_op():
    """torch's oneDNN (mkldnn) linear, or None where this torch build lacks it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return None
        probe = op(torch.ones(2, 3), torch.ones(4, 3), None, "none", [], "")
        return op if torch.equal(probe, torch.full((2, 4), 3.0)) else None
    except (AttributeError, RuntimeError):
        return None


_ONEDNN = _onednn_op()


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _ONEDNN(x, weight, bias, "none", [], "")


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _ONEDNN is not None and weight.is_contiguous()


ONEDNN = Kernel("onednn", _onednn, _onednn_applies, "torch's oneDNN matrix product instead of the default BLAS one")


# Candidates in the order they are tried; F.linear first (it is the reference and the default).
CANDIDATES: list[Kernel] = [LINEAR, split_rows(2), split_rows(4), MV, ONEDNN]
BY_NAME = {k.name: k for k in CANDIDATES}


def candidates_for(x: torch.Tensor, weight: torch.Tensor) -> list[Kernel]:
    """The candidates that apply to this input (F.linear always first)."""
    return [k for k in CANDIDATES if k.applies(x, weight)]


__all__ = ["Kernel", "LINEAR", "ONEDNN", "MV", "CANDIDATES", "BY_NAME", "split_rows", "candidates_for"]
