"""Kernel benchmark behind llama/speed.py: F.linear against FastLinear, matrix by matrix.

    python -m scripts.bench_kernels [--threads N] [--mb 400]

For each weight shape of SmolLM2-135M (576 wide, FFN 1536, 3 KV heads of 64, vocabulary
49152) and each dtype, enough distinct random matrices to fill --mb megabytes (so they come
from memory, not cache) are multiplied by one row (a decode step, reported as GB/s of
weights read) and by 256 rows (a prefill, reported as GFLOP/s). Best of 5 passes. Also the
read bandwidth of summing a 1 GiB tensor, the ceiling for the one-row numbers.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from llama.dtypes import dtype_name
from llama.speed import set_threads, use_fast_kernels

SHAPES = {  # (out, in) of SmolLM2-135M's matrices
    "wq, wo": (576, 576),
    "wk, wv": (192, 576),
    "w1, w3": (1536, 576),
    "w2": (576, 1536),
    "output": (49152, 576),
}


def best_seconds(fn, passes: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _run(layers: list[nn.Linear], x: torch.Tensor, plain: bool):
    """One pass over all the matrices: F.linear itself, or each module's own forward."""
    if plain:
        return lambda: [F.linear(x, layer.weight) for layer in layers]
    return lambda: [layer(x) for layer in layers]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--mb", type=float, default=400, help="megabytes of weights per shape")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    print(f"torch {torch.__version__}, {threads} threads")

    x = torch.ones(2**28)
    bandwidth = max(x.numel() * 4 / best_seconds(x.sum, 1) for _ in range(5))
    del x
    print(f"read bandwidth (sum of 1 GiB, best of 5): {bandwidth / 1e9:.1f} GB/s\n")

    print(f"{'dtype':<9}{'matrix':<8}{'shape':>13}  {'one row GB/s':>24}  {'256 rows GFLOP/s':>24}")
    print(f"{'':<9}{'':<8}{'':>13}  {'F.linear':>11}{'FastLinear':>13}  {'F.linear':>11}{'FastLinear':>13}")
    torch.manual_seed(0)
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            for name, (out_f, in_f) in SHAPES.items():
                count = max(1, int(args.mb * 1e6 / (out_f * in_f * 4)))
                layers = [nn.Linear(in_f, out_f, bias=False).to(dtype) for _ in range(count)]
                n_bytes = sum(l.weight.numel() * l.weight.element_size() for l in layers)
                one, many = torch.randn(1, 1, in_f, dtype=dtype), torch.randn(1, 256, in_f, dtype=dtype)
                flops = 2 * 256 * in_f * out_f * count

                plain_row = n_bytes / best_seconds(_run(layers, one, plain=True)) / 1e9
                plain_many = flops / best_seconds(_run(layers, many, plain=True)) / 1e9
                for layer in layers:
                    use_fast_kernels(layer)
                fast_row = n_bytes / best_seconds(_run(layers, one, plain=False)) / 1e9
                fast_many = flops / best_seconds(_run(layers, many, plain=False)) / 1e9
                shape = f"{out_f}x{in_f}"
                dname = dtype_name(dtype)
                print(f"{dname:<9}{name:<8}{shape:>13}  {plain_row:>11.1f}{fast_row:>13.1f}  "
                      f"{plain_many:>11.1f}{fast_many:>13.1f}")
                del layers


if __name__ == "__main__":
    main()
