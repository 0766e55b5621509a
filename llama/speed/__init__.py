"""Running the same model faster: `optimize(model)`, and nothing else to remember.

    from llama.speed import optimize
    model = optimize(load_model(path))                 # same results, to float32 rounding
    model = optimize(model, quantize="int8")           # opt-in: integer weights (see below)
    model = optimize(model, compile=True)              # opt-in: a compiled decode step

What `optimize` does by default changes which kernels compute the model's products, never
what they compute (beyond float32 rounding), and never how llama/model.py reads: modules,
parameter names and the state dict stay the same.

- Kernel choice by measurement (llama.speed.calibrate). Machines differ: the batched one-row
  product that reads float32 weights 2-4x faster than F.linear on the AMD EPYC box this
  project started on halves the speed on an Intel Xeon. So each group of same-shaped layers
  times its candidate kernels (llama.speed.kernels) on its own weights the first time a rows
  count, dtype and thread count is seen, and keeps the fastest -- among those that equal
  F.linear within float32 rounding and are as accurate as F.linear, checked on that input.
- Threads: `threads=N` sets torch's intra-op threads first (choices are per thread count).

Opt-in, because they change results beyond float32 rounding or take time up front:

- `quantize="int8" | "int4"`: weights as stored (llama.speed.stored). Every linear layer
  keeps its weight as int8 (one scale per row) or 4-bit groups of 32 and runs on torch's
  integer CPU kernels with bfloat16 activations; the rest of the model stays in float.
  For a GGUF file's own 4-bit blocks, load with `weights.stored.load_stored(path)` instead.
- `compile=True`: torch.compile of a decode step with fixed shapes (llama.speed.compiled);
  falls back to the eager model, with a warning, where no compiler works.

Accuracy, measured on SmolLM2-135M over tests/test_weights_smollm2.py's prompts against a
float64 run of the same weights (scripts/bench_accuracy.py): transformers' float32 logits
are 8.9e-5 from it; ours with F.linear 8.9e-5 (6.6e-5 token by token); ours after
`optimize` 8.6e-5 (7.9e-5). Letting in kernels that are within float32 rounding but less
accurate (same_accuracy=False: oneDNN's float32 prefill here) gives 1.5e-4. Against
transformers directly, two float32 runs ~9e-5 from the exact logits in different directions
can be up to ~1.1e-4 apart, which is why tests hold optimize to 2e-4 on the default model
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .calibrate import FastLinear, Plan, cpu_model, default_cache_file, forget_choices, plan_model, unplan_model
from .stored import Int4Linear, Int8Linear, StoredLinear, quantize_model, stored_layers


def set_threads(n: int | None = None) -> int:
    """Use n intra-op threads (default: every core this process may run on). Returns n."""
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            n = os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def optimize(
    model: nn.Module,
    *,
    kernels: bool = True,
    threads: int | None = None,
    cache: bool | str | os.PathLike | None = None,
    same_accuracy: bool = True,
    quantize: str | None = None,
    compile: bool = False,
) -> nn.Module:
    """Make `model` faster in place and return it.

    kernels: choose each linear layer's kernel by measurement (default). Applies to float
        CPU nn.Linear layers; the product is plain F.linear whenever autograd records it.
    threads: set torch's intra-op thread count first (None: leave it).
    cache: also keep kernel choices on disk, keyed by CPU model and torch version: True for
        ~/.cache/llama-from-scratch/kernels.json, or a file path. A stored choice is checked
        against F.linear again on the first real input before it is used.
    same_accuracy: a kernel must also be as accurate as F.linear against the float64 product
        (default); False allows any kernel within float32 rounding of F.linear (on the AMD box
        that admits oneDNN for prefill: 9-21% faster, logits 1.5e-4 from transformers').
    quantize: None (default), "int8" or "int4": weights as stored (llama.speed.stored).
        Changes results beyond float32 rounding: see docs/PERFORMANCE.md for how far.
    compile: torch.compile a fixed-shape decode step (llama.speed.compiled).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize takes a model (torch.nn.Module), got {type(model).__name__}")
    from ..parallel import is_parallel  # deferred: torch.distributed only when called

    if is_parallel(model):  # DTensor weights (llama.parallel): no kernel here has rules for them
        if quantize is not None or compile:
            raise ValueError("optimize(quantize=..., compile=True) cannot change a tensor-parallel "
                             "model (its weights are split across ranks); run it as it is")
        return model  # the plain kernels, as loaded
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        set_threads(threads)
    if quantize is not None:
        quantize_model(model, quantize)
    if kernels:
        cache_file = None
        if cache is True:
            cache_file = default_cache_file()
        elif cache not in (None, False):
            cache_file = Path(cache)
        plan_model(model, same_accuracy=same_accuracy, cache_file=cache_file)
    if compile:
        from .compiled import compile_decode

        try:
            compile_decode(model)
        except Exception as e:  # noqa: BLE001 - no compiler, an unsupported model: run eagerly
            warnings.warn(f"llama.speed.optimize(compile=True): running uncompiled ({e})", stacklevel=2)
    return model


def use_fast_kernels(model: nn.Module) -> nn.Module:
    """The measured kernel choice alone: `optimize(model)`. Kept for older callers."""
    return optimize(model)


def use_standard_kernels(model: nn.Module) -> nn.Module:
    """Undo the kernel choice: every FastLinear becomes a plain nn.Linear again (and a
    compiled decode step, if any, is dropped). Quantized layers stay quantized."""
    from .compiled import uncompile_decode

    uncompile_decode(model)
    unplan_model(model)
    return model


@contextlib.contextmanager
def plain_kernels(model: nn.Module):
    """For the duration of a `with` block, every product of an optimized model is plain
    F.linear; afterwards the measured choices are back as they were, with nothing
    recalibrated or checked again (use_standard_kernels + optimize would start afresh).
    For comparing the two on the same loaded model, as llama-bench's ours_plain row does."""
    saved = [(m, m._plan) for m in model.modules() if type(m) is FastLinear]
    for m, _ in saved:
        m._plan = None  # FastLinear.forward: no plan -> F.linear
    try:
        yield model
    finally:
        for m, plan in saved:
            m._plan = plan


def kernel_report(model: nn.Module) -> list[dict]:
    """What calibration chose for each group of layers so far: shape, key, kernel, timings."""
    out, seen = [], set()
    for module in model.modules():
        plan = getattr(module, "_plan", None)
        if isinstance(plan, Plan) and id(plan) not in seen:
            seen.add(id(plan))
            for key, entry in plan.report.items():
                out.append({"shape": tuple(plan.modules[0].weight.shape), "layers": len(plan.modules),
                            "rows": key[0], "threads": key[1], "dtype": str(key[2]).removeprefix("torch."), **entry})
    return out


__all__ = [
    "optimize",
    "set_threads",
    "use_fast_kernels",
    "use_standard_kernels",
    "plain_kernels",
    "kernel_report",
    "forget_choices",
    "cpu_model",
    "FastLinear",
    "StoredLinear",
    "Int8Linear",
    "Int4Linear",
    "quantize_model",
    "stored_layers",
]
