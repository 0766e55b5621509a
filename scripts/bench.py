"""llama-bench: our model and transformers on the same checkpoint, side by side.

    llama-bench [--model PATH] [--dtype float32|bfloat16|float16] [--repeats N]
                [--json FILE] [--no-transformers] [--compare-kernels]

Measures, for each implementation (transformers only when it is installed and can read
the checkpoint):
  load      wall time and peak RSS of loading, each in a fresh subprocess
  prefill   tokens/s for one forward pass over a 256-token prompt (next-token logits only,
            as generation does)
  decode    tokens/s for 128 greedy tokens after a short prompt, batch 1, timed from the
            first generated token to the last (so prefill is excluded)
and this machine's memory-bandwidth roofline for decoding: measured read bandwidth
divided by the bytes of weights each token must read. Runs of the two implementations
alternate and each number is the median of --repeats runs, so the ratios hold on a noisy
machine. Our model runs with llama.speed.use_fast_kernels (--compare-kernels adds a row
without them). docs/PERFORMANCE.md records the numbers measured on the project's CPU box.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from llama.dtypes import DTYPE_NAMES

PREFILL_TOKENS = 256
DECODE_TOKENS = 128
SHORT_PROMPT = 8


# ----------------------------------------------------------------------------------
# Loading (in subprocesses, so peak RSS belongs to one load only)
# ----------------------------------------------------------------------------------


def _peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load_ours(path: str, dtype: str | None):
    from llama.speed import use_fast_kernels
    from weights import load_model

    return use_fast_kernels(load_model(path, dtype=dtype))  # float32: faster CPU kernels


def _hf_source(path: str) -> dict:
    p = Path(path)
    if p.is_file():
        return {"pretrained_model_name_or_path": str(p.parent), "gguf_file": p.name}
    if (p / "config.json").exists():
        return {"pretrained_model_name_or_path": str(p)}
    raise RuntimeError("transformers reads GGUF files and Hugging Face folders, not Meta's format")


def _load_hf(path: str, dtype: str | None):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    return AutoModelForCausalLM.from_pretrained(**_hf_source(path), dtype=torch_dtype).eval()


def _child_load(impl: str, path: str, dtype: str | None) -> None:
    t0 = time.perf_counter()
    (_load_ours if impl == "ours" else _load_hf)(path, dtype)
    seconds = time.perf_counter() - t0
    print(json.dumps({"load_s": seconds, "peak_rss_bytes": _peak_rss_bytes()}))


def measure_load(impl: str, path: str, dtype: str | None, repeats: int) -> dict:
    """Median load time and peak RSS over `repeats` fresh subprocesses."""
    cmd = [sys.executable, "-m", "scripts.bench", "--_load", impl, "--model", path]
    if dtype:
        cmd += ["--dtype", dtype]
    root = Path(__file__).resolve().parent.parent
    runs = []
    for _ in range(repeats):
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines()
            return {"error": lines[-1] if lines else "failed"}
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "load_s": statistics.median(r["load_s"] for r in runs),
        "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in runs),
        "load_s_samples": [r["load_s"] for r in runs],
    }


# ----------------------------------------------------------------------------------
# Prefill and decode
# ----------------------------------------------------------------------------------


class _Clock:
    """Times the tokens of a generation as they come (a transformers streamer, too)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:  # transformers' streamer interface
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def rate(self) -> float:
        """Tokens per second over the decode steps (first generated token excluded)."""
        if len(self.times) < 2:
            return float("nan")
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def _prompt(vocab: int, n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(100, min(vocab, 30000), (n,), generator=gen).tolist()


def prefill_ours(model, ids: list[int]) -> float:
    tokens = torch.tensor([ids])
    model.reset_cache()
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(tokens, last_only=True)
        return len(ids) / (time.perf_counter() - t0)


def prefill_hf(model, ids: list[int]) -> float:
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(tokens, logits_to_keep=1, use_cache=True)
        return len(ids) / (time.perf_counter() - t0)


def decode_ours(model, ids: list[int]) -> float:
    from llama.generate import generate

    clock = _Clock()
    clock.put(ids)
    with torch.inference_mode():
        for _ in generate(model, ids, DECODE_TOKENS, stop_ids=()):
            clock.put(None)
    return clock.rate()


def decode_hf(model, ids: list[int]) -> float:
    clock = _Clock()
    with torch.inference_mode():
        model.generate(
            torch.tensor([ids]),
            max_new_tokens=DECODE_TOKENS,
            min_new_tokens=DECODE_TOKENS,
            do_sample=False,
            streamer=clock,
            pad_token_id=0,
        )
    return clock.rate()


def _with_plain_kernels(measure):
    """The same measurement on the same model (same weights in the same memory), with every
    product through F.linear instead of llama.speed's kernels."""
    from llama.speed import use_fast_kernels, use_standard_kernels

    def run(model, ids: list[int]) -> float:
        use_standard_kernels(model)
        try:
            return measure(model, ids)
        finally:
            use_fast_kernels(model)

    return run


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s for summing a large float32 tensor (best of repeats): the read ceiling.

    The best, not the median: the roofline is an upper bound, and on a shared machine the
    slow runs measure the neighbours, not the memory.
    """
    x = torch.ones(int(gib * 2**30) // 4)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        rates.append(x.numel() * 4 / (time.perf_counter() - t0))
    return max(rates)


def weight_bytes(model) -> int:
    """Bytes of weights one decode step reads (a tied matrix once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ----------------------------------------------------------------------------------


def run(path: str, dtype: str | None, repeats: int, with_hf: bool, plain: bool = False) -> dict:
    from llama.speed import set_threads

    threads = set_threads()
    result: dict = {
        "model": str(path),
        "dtype": dtype or "checkpoint",
        "threads": threads,
        "torch": torch.__version__,
        "repeats": repeats,
        "prefill_tokens": PREFILL_TOKENS,
        "decode_tokens": DECODE_TOKENS,
    }
    # name -> (model, prefill measurement, decode measurement)
    result["ours"] = {"load": measure_load("ours", path, dtype, repeats)}
    ours = _load_ours(path, dtype)
    impls = {"ours": (ours, prefill_ours, decode_ours)}
    if plain:  # our very model, with its kernels switched back for each measurement
        result["ours_plain"] = {}
        impls["ours_plain"] = (ours, _with_plain_kernels(prefill_ours), _with_plain_kernels(decode_ours))
    if with_hf:
        try:
            import transformers  # noqa: F401

            _hf_source(path)
            load = measure_load("transformers", path, dtype, repeats)
            if "error" in load:
                raise RuntimeError(load["error"])
            impls["transformers"] = (_load_hf(path, dtype), prefill_hf, decode_hf)
            result["transformers"] = {"load": load}
        except Exception as e:  # not installed, or a checkpoint it cannot read
            result["transformers_skipped"] = str(e)
    models = {name: model for name, (model, _, _) in impls.items()}
    vocab = models["ours"].args.vocab_size
    long_ids, short_ids = _prompt(vocab, PREFILL_TOKENS, 0), _prompt(vocab, SHORT_PROMPT, 1)

    samples: dict[str, dict[str, list[float]]] = {n: {"prefill": [], "decode": []} for n in impls}
    for name, (_, prefill, decode) in impls.items():  # warm-up: first calls allocate
        prefill(models[name], long_ids)
        decode(models[name], short_ids)
    bandwidths = [read_bandwidth()]
    for _ in range(repeats):  # alternate, so slow phases of a noisy machine hit both
        for name, (_, prefill, decode) in impls.items():
            samples[name]["prefill"].append(prefill(models[name], long_ids))
            samples[name]["decode"].append(decode(models[name], short_ids))
        bandwidths.append(read_bandwidth())
    for name in impls:
        for phase in ("prefill", "decode"):
            result[name][f"{phase}_tok_s"] = statistics.median(samples[name][phase])
            result[name][f"{phase}_samples"] = samples[name][phase]

    bandwidth = max(bandwidths)
    per_token = weight_bytes(models["ours"])
    roofline = bandwidth / per_token
    result["read_bandwidth_gb_s"] = bandwidth / 1e9
    result["read_bandwidth_samples_gb_s"] = [b / 1e9 for b in bandwidths]
    result["weight_bytes_per_token"] = per_token
    result["roofline_decode_tok_s"] = roofline
    for name in impls:
        result[name]["share_of_roofline"] = result[name]["decode_tok_s"] / roofline
    if "transformers" in impls:
        hf = result["transformers"]
        result["ratios"] = {
            "decode": result["ours"]["decode_tok_s"] / hf["decode_tok_s"],
            "prefill": result["ours"]["prefill_tok_s"] / hf["prefill_tok_s"],
        }
    return result


def table(r: dict) -> str:
    lines = [
        f"model {r['model']}  dtype {r['dtype']}  threads {r['threads']}  torch {r['torch']}  "
        f"median of {r['repeats']}",
        f"{'':14}{'load s':>8}{'peak RSS MB':>13}{'prefill tok/s':>15}{'decode tok/s':>14}",
    ]
    for name in ("ours", "ours_plain", "transformers"):
        if name not in r:
            continue
        x, load = r[name], r[name].get("load", {})  # ours_plain: the same load as ours
        load_s = f"{load['load_s']:.2f}" if "load_s" in load else "-"
        rss = f"{load['peak_rss_bytes'] / 1e6:.0f}" if "peak_rss_bytes" in load else "-"
        lines.append(
            f"{name:14}{load_s:>8}{rss:>13}{x['prefill_tok_s']:>15.1f}{x['decode_tok_s']:>14.2f}"
        )
    if "ratios" in r:
        lines.append(
            f"ours / transformers: decode {r['ratios']['decode']:.2f}x, "
            f"prefill {r['ratios']['prefill']:.2f}x"
        )
    lines.append(
        f"roofline: {r['read_bandwidth_gb_s']:.1f} GB/s read / "
        f"{r['weight_bytes_per_token'] / 1e6:.0f} MB of weights per token = "
        f"{r['roofline_decode_tok_s']:.1f} tok/s; ours reaches "
        f"{100 * r['ours']['share_of_roofline']:.0f}%"
    )
    if "transformers_skipped" in r:
        lines.append(f"transformers skipped: {r['transformers_skipped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # transformers' GGUF loader draws tqdm progress bars; tqdm reads this when imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = argparse.ArgumentParser(prog="llama-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint path (default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--no-transformers", action="store_true", help="measure ours only")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--compare-kernels",
        action="store_true",
        help="also measure our model without llama.speed's kernels (row 'ours_plain')",
    )
    parser.add_argument("--_load", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.model is None:
        from weights import default_model_path

        try:
            args.model = str(default_model_path())
        except Exception as e:
            parser.exit(2, f"llama-bench: {e}\n")
    if args._load:
        _child_load(args._load, args.model, args.dtype)
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not Path(args.model).exists():
        parser.exit(2, f"llama-bench: model path {args.model} does not exist\n")

    try:
        result = run(
            args.model, args.dtype, args.repeats, with_hf=not args.no_transformers, plain=args.compare_kernels
        )
    except Exception as e:  # noqa: BLE001 - a checkpoint that does not load: say why, briefly
        parser.exit(2, f"llama-bench: could not benchmark {args.model}: {e}\n")
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
