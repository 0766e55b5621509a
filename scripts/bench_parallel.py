"""Memory per rank under tensor parallelism: does each rank hold about 1/world of the model?

    # 1. a random checkpoint (default: ~0.5B parameters, bfloat16, ~1 GB), any layout
    python scripts/bench_parallel.py write /tmp/tp-bench/meta4 --format meta --shards 4
    python scripts/bench_parallel.py write /tmp/tp-bench/hf --format hf
    # 2. load it: one process, or N ranks under torchrun (each rank measures itself)
    python scripts/bench_parallel.py measure /tmp/tp-bench/meta4
    torchrun --standalone --nproc-per-node 4 scripts/bench_parallel.py measure /tmp/tp-bench/meta4

Per rank it reports the bytes of the weights it holds (local slices of the DTensors), its
resident memory (RSS) before loading, after loading and after a forward pass (a 32-token
prefill and 8 decode steps), split into anonymous memory (RssAnon: tensors the process
allocated) and file-backed pages (RssFile: memory-mapped checkpoint pages, which the
kernel shares with the page cache and can drop), the peak RSS (ru_maxrss, which counts
both) and the peak anonymous memory while loading (sampled). Output in docs/PARALLEL.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

MiB = 2**20


def status() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile (MiB) of this process, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class AnonPeak:
    """The largest RssAnon seen while running (sampled every 5 ms by a thread): memory the
    process itself allocated, without the page cache that ru_maxrss also counts."""

    def __enter__(self) -> "AnonPeak":
        import threading

        self.peak, self._stop = status()["RssAnon"], threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, status()["RssAnon"])

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status()["RssAnon"])


def write(args: argparse.Namespace) -> None:
    import torch

    from llama.config import ModelArgs
    from llama.model import Transformer
    from weights.checkpoint import weights_on_meta
    from weights.save import save_hf, save_meta

    margs = ModelArgs(dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
                      vocab_size=args.vocab, ffn_hidden_dim=args.hidden, max_seq_len=512)
    with weights_on_meta():
        shapes = {n: tuple(t.shape) for n, t in Transformer(margs).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in shapes.items():  # one tensor at a time, straight to bfloat16
        t = torch.randn(shape, generator=gen) * (0.02 if len(shape) > 1 else 0.1)
        state[name] = (t + 1 if len(shape) == 1 else t).to(torch.bfloat16)
    n = sum(t.numel() for t in state.values())
    if args.format == "meta":
        save_meta(state, margs, args.out, n_shards=args.shards, overwrite=True)
    else:
        save_hf(state, margs, args.out, overwrite=True)
    print(f"wrote {args.out}: {n / 1e6:.0f}M parameters, {n * 2 / MiB:.0f} MiB in bfloat16 ({args.format}"
          + (f", {args.shards} shards" if args.format == "meta" else "") + ")")


def measure(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.tensor  # noqa: F401 - imported before the "before" snapshot
    from torch.distributed.tensor import DTensor

    import llama.parallel  # noqa: F401
    from weights import load_model

    parallel = "tensor" if "RANK" in os.environ else None
    before = status()
    t0 = time.perf_counter()
    with AnonPeak() as anon:
        model = load_model(args.path, dtype=args.dtype, parallel=parallel)
    load_s = time.perf_counter() - t0
    loaded = status()
    held = sum((p.to_local() if isinstance(p, DTensor) else p).nbytes for p in model.parameters())
    full = model.num_params() * next(model.parameters()).element_size()
    tokens = torch.randint(0, model.args.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(tokens, last_only=True)
        for i in range(8):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            logits = model(nxt, start_pos=32 + i)
    run_s = time.perf_counter() - t0
    after = status()
    report = {
        "rank": dist.get_rank() if parallel else 0,
        "world": dist.get_world_size() if parallel else 1,
        "weights_held_mib": held / MiB,
        "model_mib": full / MiB,
        "rss_before_mib": before["VmRSS"],
        "rss_loaded_mib": loaded["VmRSS"],
        "anon_loaded_mib": loaded["RssAnon"],
        "file_loaded_mib": loaded["RssFile"],
        "rss_after_forward_mib": after["VmRSS"],
        "anon_after_forward_mib": after["RssAnon"],
        "file_after_forward_mib": after["RssFile"],
        "peak_rss_mib": peak_rss_mib(),
        "peak_anon_load_mib": anon.peak,
        "load_s": load_s,
        "forward_s": run_s,
    }
    reports = [report]
    if parallel:
        reports = [None] * dist.get_world_size()
        dist.all_gather_object(reports, report)
        llama.parallel.shutdown()
    if report["rank"] != 0:
        return
    print(f"{args.path} ({args.dtype or 'checkpoint dtype'}), {report['world']} process(es); "
          f"model {report['model_mib']:.0f} MiB of weights; MiB per rank:")
    print("rank  held  held/model  RSS before  RSS loaded (anon + file)  RSS after fwd (anon + file)  peak RSS  peak anon (load)  load s  fwd s")
    for r in reports:
        print(f"{r['rank']:>4}  {r['weights_held_mib']:>4.0f}  {r['weights_held_mib'] / r['model_mib']:>10.3f}"
              f"  {r['rss_before_mib']:>10.0f}  {r['rss_loaded_mib']:>10.0f} ({r['anon_loaded_mib']:.0f} + {r['file_loaded_mib']:.0f})"
              f"  {r['rss_after_forward_mib']:>13.0f} ({r['anon_after_forward_mib']:.0f} + {r['file_after_forward_mib']:.0f})"
              f"  {r['peak_rss_mib']:>8.0f}  {r['peak_anon_load_mib']:>16.0f}  {r['load_s']:>6.1f}  {r['forward_s']:>5.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write a random bfloat16 checkpoint")
    w.add_argument("out")
    w.add_argument("--format", choices=["meta", "hf"], default="meta")
    w.add_argument("--shards", type=int, default=1, help="Meta model-parallel files")
    w.add_argument("--dim", type=int, default=2048)
    w.add_argument("--layers", type=int, default=8)
    w.add_argument("--heads", type=int, default=16)
    w.add_argument("--kv-heads", type=int, default=8)
    w.add_argument("--hidden", type=int, default=5632)
    w.add_argument("--vocab", type=int, default=32000)
    m = sub.add_parser("measure", help="load it (under torchrun: parallel='tensor') and report memory")
    m.add_argument("path")
    m.add_argument("--dtype", default=None, help="e.g. float32 (default: the checkpoint's)")
    m.add_argument("--json", default=None, help="also write every rank's numbers here")
    args = p.parse_args(argv)
    (write if args.cmd == "write" else measure)(args)


if __name__ == "__main__":
    sys.exit(main())
