"""Kernel choice by measurement: time the candidates on the real weights, keep the fastest
of those that compute what F.linear computes.

`FastLinear` is nn.Linear with a different forward: it asks its `Plan` which kernel to run.
A plan belongs to one group of same-shaped linear layers of a model (all 30 `wq` of
SmolLM2, say) and holds one choice per (rows bucket, thread count, dtype). The first time
a key is seen -- in the first forward pass that needs it -- the plan calibrates:

1. Which candidates agree with F.linear, checked on that very input and the group's first
   weight (see `check`): each result element within float32 rounding of F.linear's, and,
   unless `same_accuracy=False`, on average at most ACCURACY_RATIO times as far from the
   exact (float64) product as F.linear. A candidate that fails, raises, or returns another
   shape or dtype is out.
2. How long each remaining candidate takes for one pass over the group's weights -- every
   one of them, so a one-row product reads them from memory as decoding does, not from a
   cache that one matrix would fit in. Candidates alternate round by round and each keeps
   its fastest round (the minimum, since a busy machine only ever makes things slower).
3. The fastest is chosen only if it beats F.linear by a margin (10%); otherwise F.linear.

Choices are kept for the process, keyed by CPU model, torch version, threads, shape,
dtype, rows bucket and group size, and optionally in a JSON file (`cache`). A choice read
back from either is checked again on the first real input before it is used.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

MARGIN = 0.10  # a candidate must be this much faster than F.linear to be chosen
ROUNDS = 5  # timing rounds per candidate (fewer when a round is slow, see BUDGET_S)
BUDGET_S = 0.3  # rough time allowed for timing one group at one rows bucket
ACCURACY_RATIO = 1.25  # "as accurate as F.linear": mean error at most this times F.linear's
CHECK_ROWS = 8  # rows of the real input compared with the float64 product
MANY_ROWS_MODULES = 4  # compute-bound products (16+ rows) are timed on this many weights


# ---------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), as /proc/cpuinfo says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key() -> str:
    """What a kernel choice depends on besides the product itself."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.backends.cpu.get_cpu_capability()}"


def rows_bucket(rows: int) -> str:
    """One row is a decode step; more are a prefill (or a batch), in rough size classes."""
    if rows == 1:
        return "1"
    if rows < 16:
        return "2-15"
    if rows < 128:
        return "16-127"
    return "128+"


# ---------------------------------------------------------------------------------------
# Agreement with F.linear
# ---------------------------------------------------------------------------------------


def check(kernel: kernels.Kernel, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          same_accuracy: bool = True) -> str | None:
    """None if `kernel` computes what F.linear computes on this input; else why not.

    Within float32 rounding, element by element: |y - y_linear| <= 4 sqrt(in) u (|x| |W|^T
    + |b|) + 2 u_out |y_linear|, with u the float32 unit roundoff and u_out that of the
    output dtype. (Summing `in` products in another order moves the sum by about sqrt(in) u
    times the sum of their magnitudes; a kernel that rounds its inputs to bfloat16 moves it
    by ~sqrt(in) 2^-9 times that, tens of thousands of times more.) With same_accuracy, also:
    over the first CHECK_ROWS rows, the mean error against the float64 product is at most
    ACCURACY_RATIO times F.linear's. (Measured: oneDNN's float32 matrix product on the AMD
    box sums with 1.5x F.linear's error, which 30 layers of SmolLM2 turn into logits 1.5e-4
    from transformers' where F.linear stays at 4.5e-5.)
    """
    in_features = weight.shape[1]
    x = x.reshape(-1, in_features)
    try:
        got = kernel(x, weight, bias)
    except Exception as e:  # noqa: BLE001 - a kernel that cannot run here is simply out
        return f"raised {type(e).__name__}: {e}"
    ref = F.linear(x, weight, bias)
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return f"gave {tuple(got.shape)} {got.dtype}, F.linear {tuple(ref.shape)} {ref.dtype}"
    # The sum of the products' magnitudes, (rows, out); float32 is plenty for a bound.
    scale = F.linear(x.abs().float(), weight.abs().float(), None if bias is None else bias.abs().float())
    u32 = torch.finfo(torch.float32).eps / 2
    u_out = torch.finfo(ref.dtype).eps / 2
    bound = 4 * math.sqrt(in_features) * u32 * scale + 2 * u_out * ref.float().abs()
    diff = (got.float() - ref.float()).abs()
    finite = torch.isfinite(ref)
    if not torch.equal(finite, torch.isfinite(got)) or (diff[finite] > bound[finite]).any():
        worst = (diff / bound.clamp_min(1e-30))[finite].max().item() if finite.any() else float("inf")
        return f"differs from F.linear by up to {worst:.3g}x what float32 rounding allows"
    if same_accuracy:
        rows = slice(0, CHECK_ROWS)
        exact = F.linear(x[rows].double(), weight.double(), None if bias is None else bias.double())
        norm = scale[rows].double().clamp_min(1e-300)
        ok = finite[rows]

        def mean_error(y: torch.Tensor) -> float:
            return ((y[rows].double() - exact).abs() / norm)[ok].mean().item()

        err, err_ref = mean_error(got), mean_error(ref)
        if err > ACCURACY_RATIO * err_ref + 0.01 * u32:  # (the floor: both exact still compare)
            return f"less accurate than F.linear (mean relative error {err:.3g} against {err_ref:.3g})"
    return None


# ---------------------------------------------------------------------------------------
# Choices, for the process and on disk
# ---------------------------------------------------------------------------------------

_DECISIONS: dict[str, str] = {}  # key -> kernel name, this process
_DISK: dict[Path, dict] = {}  # cache file -> its entries, read once


def default_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llama-from-scratch" / "kernels.json"


def _read_disk(path: Path) -> dict:
    if path not in _DISK:
        try:
            data = json.loads(path.read_text())
            _DISK[path] = data.get("entries", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _DISK[path] = {}
    return _DISK[path]


def _write_disk(path: Path, key: str, entry: dict) -> None:
    entries = _read_disk(path)
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=1, sort_keys=True))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a cache that cannot be written only costs a calibration next time


def _by_name(name: str) -> kernels.Kernel | None:
    return next((k for k in kernels.CANDIDATES if k.name == name), None)


def forget_choices() -> None:
    """Drop every choice this process has made or read (tests; a changed machine load)."""
    _DECISIONS.clear()
    _DISK.clear()


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------


def _time_pass(kernel: kernels.Kernel, x: torch.Tensor, modules: list[nn.Linear]) -> float:
    """Seconds for one pass of `kernel` over the weights of `modules`."""
    t0 = time.perf_counter()
    for m in modules:
        kernel(x, m.weight, m.bias)
    return time.perf_counter() - t0


def time_candidates(candidates: list[kernels.Kernel], x: torch.Tensor, modules: list[nn.Linear]) -> dict[str, float]:
    """Fastest pass of each candidate, rounds alternating between them. -> name -> seconds."""
    best = {k.name: math.inf for k in candidates}
    started = time.perf_counter()
    for k in candidates:  # warm-up: first calls allocate and pick code paths
        _time_pass(k, x, modules)
    rounds, running = 0, list(candidates)
    while rounds < ROUNDS:
        for k in running:
            best[k.name] = min(best[k.name], _time_pass(k, x, modules))
        rounds += 1
        # A candidate at twice the best time so far cannot win: stop timing it (F.linear,
        # the reference, always stays).
        fastest = min(best[k.name] for k in running)
        running = [k for k in running if k is kernels.LINEAR or best[k.name] < 2 * fastest]
        if rounds >= 2 and time.perf_counter() - started > BUDGET_S:
            break
    return best


# ---------------------------------------------------------------------------------------
# One group of same-shaped layers
# ---------------------------------------------------------------------------------------


class Plan:
    """The kernel choices for one group of same-shaped nn.Linear layers of a model."""

    def __init__(self, modules: list[nn.Linear], same_accuracy: bool = True, cache_file: Path | None = None):
        self.modules = modules
        self.same_accuracy = same_accuracy
        self.cache_file = cache_file
        self.choices: dict[tuple, kernels.Kernel] = {}  # (bucket, threads, dtype) -> kernel
        self.report: dict[tuple, dict] = {}  # same keys -> what calibration saw (for docs, tests)

    def key_string(self, key: tuple) -> str:
        bucket, threads, dtype = key
        out_f, in_f = self.modules[0].weight.shape
        bias = self.modules[0].bias is not None
        return (f"{machine_key()} | threads {threads} | {str(dtype).removeprefix('torch.')} "
                f"{out_f}x{in_f}{' +bias' if bias else ''} | {len(self.modules)} layers | rows {bucket}"
                f"{'' if self.same_accuracy else ' | rounding only'}")

    def kernel_for(self, x: torch.Tensor, weight: torch.Tensor) -> kernels.Kernel:
        key = (rows_bucket(x.numel() // weight.shape[1]), torch.get_num_threads(), weight.dtype)
        kernel = self.choices.get(key)
        if kernel is None:
            kernel = self.choices[key] = self._choose(key, x)
        return kernel

    def _choose(self, key: tuple, x: torch.Tensor) -> kernels.Kernel:
        text = self.key_string(key)
        first = self.modules[0]
        remembered = _DECISIONS.get(text)
        if remembered is None and self.cache_file is not None:
            remembered = _read_disk(self.cache_file).get(text, {}).get("kernel")
        if remembered is not None:
            kernel = _by_name(remembered)
            # Checked again on this real input: a cache file is only a hint.
            if kernel is not None and check(kernel, x, first.weight, first.bias, self.same_accuracy) is None:
                self.report[key] = {"kernel": kernel.name, "from": "cache"}
                _DECISIONS[text] = kernel.name
                return kernel
        return self._calibrate(key, text, x)

    def _calibrate(self, key: tuple, text: str, x: torch.Tensor) -> kernels.Kernel:
        first = self.modules[0]
        refused = {}
        eligible = []
        for k in kernels.candidates_for(x, first.weight):
            why = None if k is kernels.LINEAR else check(k, x, first.weight, first.bias, self.same_accuracy)
            if why is None:
                eligible.append(k)
            else:
                refused[k.name] = why
        if kernels.LINEAR not in eligible:
            eligible.insert(0, kernels.LINEAR)
        seconds: dict[str, float] = {}
        chosen = kernels.LINEAR
        if len(eligible) > 1:
            many = key[0] not in ("1", "2-15")  # compute-bound: a few weights are enough
            modules = self.modules[:MANY_ROWS_MODULES] if many else self.modules
            seconds = time_candidates(eligible, x, modules)
            fastest = min(eligible, key=lambda k: seconds[k.name])
            if seconds[fastest.name] < (1 - MARGIN) * seconds[kernels.LINEAR.name]:
                chosen = fastest
        self.report[key] = {"kernel": chosen.name, "from": "calibration", "seconds": seconds, "refused": refused}
        _DECISIONS[text] = chosen.name
        if self.cache_file is not None:
            _write_disk(self.cache_file, text, {"kernel": chosen.name, "seconds": seconds, "refused": refused})
        return chosen


class FastLinear(nn.Linear):
    """nn.Linear whose product runs on the kernel measured fastest for its shape here.

    Same parameters, names and state dict as nn.Linear: `llama.speed.optimize` turns a
    model's CPU nn.Linear layers into this class in place (no weight is copied) and
    `use_standard_kernels` turns them back. With autograd recording (gradients, saliency),
    on another device, or for mixed dtypes, the product is the plain F.linear.
    """

    _plan: Plan | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, plan = self.weight, self._plan
        if (
            plan is None
            or x.device.type != "cpu"
            or x.dtype != weight.dtype
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        ):
            return F.linear(x, weight, self.bias)
        return plan.kernel_for(x, weight)(x, weight, self.bias)


def plan_model(model: nn.Module, same_accuracy: bool = True, cache_file: Path | None = None) -> list[Plan]:
    """Turn every CPU nn.Linear of `model` into a FastLinear, one Plan per group of layers
    with the same weight shape and bias. Returns the plans."""
    groups: dict[tuple, list[nn.Linear]] = {}
    for module in model.modules():
        if type(module) in (nn.Linear, FastLinear) and module.weight.device.type == "cpu":
            if module.weight.is_floating_point():
                key = (tuple(module.weight.shape), module.bias is not None)
                groups.setdefault(key, []).append(module)
    plans = []
    for modules in groups.values():
        plan = Plan(modules, same_accuracy, cache_file)
        for m in modules:
            m.__class__ = FastLinear
            m._plan = plan
        plans.append(plan)
    return plans


def unplan_model(model: nn.Module) -> None:
    for module in model.modules():
        if type(module) is FastLinear:
            module.__class__ = nn.Linear
            module.__dict__.pop("_plan", None)


__all__ = [
    "FastLinear",
    "Plan",
    "check",
    "cpu_model",
    "machine_key",
    "rows_bucket",
    "plan_model",
    "unplan_model",
    "forget_choices",
    "default_cache_file",
    "time_candidates",
]
