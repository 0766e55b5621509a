"""Kernel benchmark behind llama/speed: every candidate kernel, matrix by matrix.

    python -m scripts.bench_kernels [--threads N] [--mb 400] [--shapes smollm2|llama2-7b]

For each weight shape (SmolLM2-135M's by default: 576 wide, FFN 1536, 3 KV heads of 64,
vocabulary 49152; or Llama-2-7B's) and each dtype, enough distinct random matrices to fill
--mb megabytes (so they come from memory, not cache) are multiplied by one row (a decode
step, reported as GB/s of weights read) and by 256 rows (a prefill, GFLOP/s), with every
candidate of llama.speed.kernels that applies, best of 5 passes. Then the weights-as-stored
kernels (llama.speed.stored) on the same shapes: int8 rows and 4-bit groups of 32, with
bfloat16 activations, reported as GB/s of the float32 weights they stand for (so the
columns compare time per product) and as GB/s of the bytes they really read. Also the read
bandwidth of summing a 1 GiB tensor, the ceiling for the one-row numbers, and the CPU model.
Calibration inside llama.speed.optimize makes the same measurement on a model's real weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from llama.dtypes import dtype_name
from llama.speed import set_threads
from llama.speed.calibrate import cpu_model
from llama.speed.kernels import CANDIDATES
from llama.speed.stored import Int4Linear, Int8Linear

SHAPES = {
    "smollm2": {"wq, wo": (576, 576), "wk, wv": (192, 576), "w1, w3": (1536, 576), "w2": (576, 1536),
                "output": (49152, 576)},
    "llama2-7b": {"wq..wo": (4096, 4096), "w1, w3": (11008, 4096), "w2": (4096, 11008), "output": (32000, 4096)},
}


def best_seconds(fn, passes: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--mb", type=float, default=400, help="megabytes of float32 weights per shape")
    parser.add_argument("--shapes", choices=list(SHAPES), default="smollm2")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    print(f"cpu {cpu_model()}, torch {torch.__version__}, {threads} threads")

    x = torch.ones(2**28)
    bandwidth = max(x.numel() * 4 / best_seconds(x.sum, 1) for _ in range(5))
    del x
    print(f"read bandwidth (sum of 1 GiB, best of 5): {bandwidth / 1e9:.1f} GB/s\n")

    torch.manual_seed(0)
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            dname = dtype_name(dtype)
            for name, (out_f, in_f) in SHAPES[args.shapes].items():
                count = max(1, int(args.mb * 1e6 / (out_f * in_f * 4)))
                weights = [torch.randn(out_f, in_f).to(dtype) for _ in range(count)]
                n_bytes = sum(w.numel() * w.element_size() for w in weights)
                flops = 2 * 256 * in_f * out_f * count
                one, many = torch.randn(1, 1, in_f, dtype=dtype), torch.randn(1, 256, in_f, dtype=dtype)
                cells = []
                for k in CANDIDATES:
                    for x, label, work in ((one, "row GB/s", n_bytes), (many, "256 GFLOP/s", flops)):
                        if k.applies(x, weights[0]):
                            rate = work / best_seconds(lambda: [k(x, w, None) for w in weights]) / 1e9
                            cells.append(f"{k.name} {label.split()[0]} {rate:.1f}")
                print(f"{dname:9}{name:8}{out_f:>6}x{in_f:<6} " + "  ".join(cells), flush=True)
                del weights
        print("\nweights as stored (bfloat16 activations), one row: GB/s of float32 weights | GB/s really read")
        for name, (out_f, in_f) in SHAPES[args.shapes].items():
            count = max(1, int(args.mb * 1e6 / (out_f * in_f * 4)))
            f32_bytes = count * out_f * in_f * 4
            cells = []
            for cls in (Int8Linear, Int4Linear):
                layers = [cls.from_float(torch.randn(out_f, in_f) * 0.02) for _ in range(count)]
                stored = sum(layer.stored_bytes() for layer in layers)
                x = torch.randn(1, 1, in_f)
                seconds = best_seconds(lambda: [layer(x) for layer in layers])
                cells.append(f"{cls.kind} {f32_bytes / seconds / 1e9:.1f} | {stored / seconds / 1e9:.1f}")
                del layers
            print(f"{name:8}{out_f:>6}x{in_f:<6} " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
