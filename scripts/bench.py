"""llama-bench: our model, transformers and llama.cpp on the same checkpoint, side by side.

    llama-bench [--model PATH | --synthetic llama2-7b|small] [--dtype float32|bfloat16|float16]
                [--repeats N] [--load-repeats N] [--json FILE] [--compare-kernels] [--compile]
                [--no-transformers] [--no-stored] [--no-llama-cpp] [--sequential]
                [--prefill-tokens N] [--decode-tokens N]

Rows (each measured only where it applies):
  ours           weights.load_model + llama.speed.optimize (kernels chosen by measurement)
  ours_plain     the same loaded model with every product through F.linear (--compare-kernels)
  ours_compiled  the same model with optimize(compile=True): a compiled decode step (--compile)
  stored         weights.stored.load_stored: weights as stored (GGUF 4-bit blocks on torch's
                 int4 kernel, other weights int8), float activations
  transformers   AutoModelForCausalLM on the same checkpoint (GGUF or HF folder), when installed
  llama.cpp      llama-cpp-python on the same GGUF file, when installed (an optional
                 benchmark dependency: pip install llama-cpp-python)

For each: load (wall time and peak RSS, each in a fresh subprocess), prefill (tokens/s of one
forward pass over a 256-token prompt, next-token logits only) and decode (tokens/s of 128
greedy tokens after an 8-token prompt, batch 1, timed from the first generated token to the
last). Rows alternate run by run (or, with --sequential, one model in memory at a time, for
models that do not fit twice) and each number is the median of --repeats runs, so ratios
within one run hold on a noisy machine. Also the machine's read bandwidth and each row's
share of the decode roofline (bandwidth / bytes of weights one token reads). The CPU model
is printed and written into the JSON.

--synthetic writes a random model with a real model's shapes as a GGUF file first (Q4_0
blocks by default, see scripts/bench_synthetic.py), benchmarks it and deletes it.
docs/PERFORMANCE.md records the commands and the numbers measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llama.dtypes import DTYPE_NAMES

DEFAULT_PREFILL, DEFAULT_DECODE = 256, 128
PREFILL_TOKENS = DEFAULT_PREFILL  # set from --prefill-tokens / --decode-tokens by main()
DECODE_TOKENS = DEFAULT_DECODE
SHORT_PROMPT = 8
ROWS = ("ours", "ours_plain", "ours_compiled", "stored", "transformers", "llama.cpp")


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


def load_ours(path: str, dtype: str | None):
    from llama.speed import optimize
    from weights import load_model

    return optimize(load_model(path, dtype=dtype))


def load_stored_model(path: str, dtype: str | None):
    from llama.speed import optimize
    from weights.stored import load_stored

    return optimize(load_stored(path))  # optimize: any layer left float gets measured kernels


def _hf_source(path: str) -> dict:
    p = Path(path)
    if p.is_file():
        return {"pretrained_model_name_or_path": str(p.parent), "gguf_file": p.name}
    if (p / "config.json").exists():
        return {"pretrained_model_name_or_path": str(p)}
    raise RuntimeError("transformers reads GGUF files and Hugging Face folders, not Meta's format")


def load_hf(path: str, dtype: str | None):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    return AutoModelForCausalLM.from_pretrained(**_hf_source(path), dtype=torch_dtype).eval()


def load_llama_cpp(path: str, dtype: str | None):
    try:
        from llama_cpp import Llama
    except ImportError:
        raise RuntimeError("llama-cpp-python is not installed (pip install llama-cpp-python)") from None
    if not Path(path).is_file():
        raise RuntimeError("llama.cpp runs GGUF files only")
    return Llama(model_path=str(path), n_threads=torch.get_num_threads(), n_threads_batch=torch.get_num_threads(),
                 n_ctx=PREFILL_TOKENS + DECODE_TOKENS + 64, n_batch=512, verbose=False)


LOADERS = {"ours": load_ours, "stored": load_stored_model, "transformers": load_hf, "llama.cpp": load_llama_cpp}


def _child_load(impl: str, path: str, dtype: str | None) -> None:
    from llama.speed import set_threads

    set_threads()
    t0 = time.perf_counter()
    LOADERS[impl](path, dtype)
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


def decode_ours(model, ids: list[int]) -> float:
    from llama.generate import generate

    clock = _Clock()
    clock.put(ids)
    with torch.inference_mode():
        for _ in generate(model, ids, DECODE_TOKENS, stop_ids=()):
            clock.put(None)
    return clock.rate()


def prefill_hf(model, ids: list[int]) -> float:
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(tokens, logits_to_keep=1, use_cache=True)
        return len(ids) / (time.perf_counter() - t0)


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


def _llama_cpp_next(llm) -> int:
    import numpy as np

    return int(np.argmax(llm.scores[llm.n_tokens - 1]))


def prefill_llama_cpp(llm, ids: list[int]) -> float:
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    return len(ids) / (time.perf_counter() - t0)


def decode_llama_cpp(llm, ids: list[int]) -> float:
    llm.reset()
    llm.eval(ids)
    token, times = _llama_cpp_next(llm), [time.perf_counter()]
    for _ in range(DECODE_TOKENS - 1):  # greedy, one token per eval, as ours and transformers
        llm.eval([token])
        token = _llama_cpp_next(llm)
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def _switched(measure, switch_on, switch_off):
    """The same measurement on the same model, with something switched for its duration."""

    def run(model, ids: list[int]) -> float:
        switch_on(model)
        try:
            return measure(model, ids)
        finally:
            switch_off(model)

    return run


def _plain(measure):
    """Every product through F.linear instead of the measured kernels, which stay chosen:
    re-planning after each plain run would make ours' next run calibrate (check) again."""
    from llama.speed import plain_kernels

    def run(model, ids: list[int]) -> float:
        with plain_kernels(model):
            return measure(model, ids)

    return run


def _compiled(measure, steps: dict):
    """Through a compiled decode step (compiled once, on the first run, and kept)."""
    from llama.speed.compiled import compile_decode, uncompile_decode

    def on(model):
        if "step" in steps:
            model.forward = steps["step"]
        else:
            steps["step"] = compile_decode(model)

    return _switched(measure, on, uncompile_decode)


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
    """Bytes of weights one decode step reads: every parameter and integer weight once (a
    tied matrix once), except an embedding that is not also the output (one row of it)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    rope = getattr(model, "freqs_cis", None)
    if rope is not None:
        tensors.pop(id(rope), None)  # the RoPE table: one row per token
    if model.tok_embeddings.weight is not getattr(model.output, "weight", None):
        tensors.pop(id(model.tok_embeddings.weight), None)
    return sum(t.numel() * t.element_size() for t in tensors.values())


# ----------------------------------------------------------------------------------


def _rows_wanted(path: str, opts) -> list[str]:
    rows = ["ours"]
    if opts.compare_kernels:
        rows.append("ours_plain")
    if opts.compile:
        rows.append("ours_compiled")
    if not opts.no_stored:
        rows.append("stored")
    if not opts.no_transformers:
        rows.append("transformers")
    if not opts.no_llama_cpp:
        rows.append("llama.cpp")
    return rows


def run(path: str, dtype: str | None, repeats: int, opts) -> dict:
    from llama.speed import kernel_report, set_threads
    from llama.speed.calibrate import cpu_model, machine_key

    threads = set_threads()
    result: dict = {
        "model": str(path),
        "dtype": dtype or "checkpoint",
        "cpu": cpu_model(),
        "machine": machine_key(),
        "threads": threads,
        "torch": torch.__version__,
        "repeats": repeats,
        "prefill_tokens": PREFILL_TOKENS,
        "decode_tokens": DECODE_TOKENS,
        "skipped": {},
    }
    wanted = _rows_wanted(path, opts)
    measures = {
        "ours": (prefill_ours, decode_ours),
        "ours_plain": (_plain(prefill_ours), _plain(decode_ours)),
        "ours_compiled": (prefill_ours, _compiled(decode_ours, {})),
        "stored": (prefill_ours, decode_ours),
        "transformers": (prefill_hf, decode_hf),
        "llama.cpp": (prefill_llama_cpp, decode_llama_cpp),
    }
    shares_ours = {"ours_plain", "ours_compiled"}  # measured on the model loaded for ours

    # Load times first (subprocesses), and which rows can run at all.
    for name in wanted:
        if name in shares_ours:
            result[name] = {}
            continue
        if name == "transformers":
            try:
                import transformers  # noqa: F401

                _hf_source(path)
            except Exception as e:  # not installed, or a format it cannot read
                result["skipped"][name] = str(e)
                continue
        if name == "llama.cpp":
            try:
                import llama_cpp  # noqa: F401
            except ImportError:
                result["skipped"][name] = "llama-cpp-python is not installed (pip install llama-cpp-python)"
                continue
            if not Path(path).is_file():
                result["skipped"][name] = "llama.cpp runs GGUF files only"
                continue
        load = measure_load(name, path, dtype, opts.load_repeats or repeats)
        if "error" in load:
            if name == "ours":
                raise RuntimeError(load["error"])
            result["skipped"][name] = load["error"]
            continue
        result[name] = {"load": load}
    rows = [n for n in wanted if n in result]

    loaded: dict[str, object] = {}

    def model_for(name: str):
        key = "ours" if name in shares_ours else name
        if key not in loaded:
            loaded[key] = LOADERS[key](path, dtype)
        return loaded[key]

    vocab = model_for("ours").args.vocab_size
    long_ids, short_ids = _prompt(vocab, PREFILL_TOKENS, 0), _prompt(vocab, SHORT_PROMPT, 1)
    per_token = {"ours": weight_bytes(model_for("ours"))}
    samples = {n: {"prefill": [], "decode": []} for n in rows}
    bandwidths = [read_bandwidth()]

    def measure(name: str) -> None:
        prefill, decode = measures[name]
        samples[name]["prefill"].append(prefill(model_for(name), long_ids))
        samples[name]["decode"].append(decode(model_for(name), short_ids))
        if name == "ours":  # what calibration chose
            result["kernels"] = kernel_report(model_for("ours"))

    def free(name: str) -> None:
        if name in loaded and name not in ("ours",):
            if name == "stored":
                per_token["stored"] = weight_bytes(loaded[name])
            del loaded[name]
            gc.collect()

    if opts.sequential:  # one model in memory at a time (ours stays: the others share it)
        for name in rows:
            measure(name)  # warm-up: first calls allocate, calibrate, compile
            samples[name] = {"prefill": [], "decode": []}
            for _ in range(repeats):
                measure(name)
                bandwidths.append(read_bandwidth())
            free(name)
    else:
        for name in rows:  # warm-up
            measure(name)
            samples[name] = {"prefill": [], "decode": []}
        for _ in range(repeats):  # alternate, so slow phases of a noisy machine hit every row
            for name in rows:
                measure(name)
            bandwidths.append(read_bandwidth())
    if "stored" in loaded:
        per_token["stored"] = weight_bytes(loaded["stored"])

    for name in rows:
        for phase in ("prefill", "decode"):
            result[name][f"{phase}_tok_s"] = statistics.median(samples[name][phase])
            result[name][f"{phase}_samples"] = samples[name][phase]
    bandwidth = max(bandwidths)
    result["read_bandwidth_gb_s"] = bandwidth / 1e9
    result["read_bandwidth_samples_gb_s"] = [b / 1e9 for b in bandwidths]
    result["weight_bytes_per_token"] = per_token["ours"]
    result["roofline_decode_tok_s"] = bandwidth / per_token["ours"]
    for name in rows:
        own = per_token.get(name, per_token["ours"])
        if name in ("ours", "ours_plain", "ours_compiled", "stored"):
            result[name]["weight_bytes_per_token"] = own
            result[name]["share_of_roofline"] = result[name]["decode_tok_s"] / (bandwidth / own)

    ratios: dict = {}

    def ratio(a: str, b: str) -> None:
        if a in result and b in result and "decode_tok_s" in result[a] and "decode_tok_s" in result[b]:
            ratios[f"{a} / {b}"] = {
                phase: result[a][f"{phase}_tok_s"] / result[b][f"{phase}_tok_s"] for phase in ("decode", "prefill")
            }

    for a, b in [("ours", "transformers"), ("ours_plain", "transformers"), ("ours_compiled", "ours"),
                 ("stored", "ours"), ("ours", "llama.cpp"), ("stored", "llama.cpp")]:
        ratio(a, b)
    result["ratios"] = ratios
    return result


def table(r: dict) -> str:
    lines = [
        f"cpu {r['cpu']}  threads {r['threads']}  torch {r['torch']}",
        f"model {r['model']}  dtype {r['dtype']}  median of {r['repeats']}",
        f"{'':15}{'load s':>8}{'peak RSS MB':>13}{'prefill tok/s':>15}{'decode tok/s':>14}{'roofline':>10}",
    ]
    for name in ROWS:
        if name not in r or "decode_tok_s" not in r[name]:
            continue
        x, load = r[name], r[name].get("load", {})  # ours_plain/_compiled: the load of ours
        load_s = f"{load['load_s']:.2f}" if "load_s" in load else "-"
        rss = f"{load['peak_rss_bytes'] / 1e6:.0f}" if "peak_rss_bytes" in load else "-"
        share = f"{100 * x['share_of_roofline']:.0f}%" if "share_of_roofline" in x else "-"
        lines.append(
            f"{name:15}{load_s:>8}{rss:>13}{x['prefill_tok_s']:>15.1f}{x['decode_tok_s']:>14.2f}{share:>10}"
        )
    for pair, v in r.get("ratios", {}).items():
        lines.append(f"{pair}: decode {v['decode']:.2f}x, prefill {v['prefill']:.2f}x")
    lines.append(
        f"roofline: {r['read_bandwidth_gb_s']:.1f} GB/s read / "
        f"{r['weight_bytes_per_token'] / 1e6:.0f} MB of weights per token = "
        f"{r['roofline_decode_tok_s']:.1f} tok/s for ours (stored: its own bytes per token)"
    )
    for name, why in r.get("skipped", {}).items():
        lines.append(f"{name} skipped: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # transformers' GGUF loader draws tqdm progress bars; tqdm reads this when imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = argparse.ArgumentParser(prog="llama-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint path (default: the embedded SmolLM2-135M)")
    parser.add_argument("--synthetic", choices=["llama2-7b", "small"],
                        help="benchmark a random model of these shapes, written as a GGUF file first and deleted after")
    parser.add_argument("--synthetic-format", choices=["q4_0", "bf16"], default="q4_0",
                        help="how --synthetic stores its matrices (default q4_0: 3.8 GB for llama2-7b)")
    parser.add_argument("--synthetic-layers", type=int, help="fewer layers than the preset (a quicker run)")
    parser.add_argument("--dir", help="where --synthetic writes its file (default: the temp dir)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--load-repeats", type=int, default=None,
                        help="fresh-process loads per row (default: --repeats; 1 for a 7B model)")
    parser.add_argument("--prefill-tokens", type=int, default=DEFAULT_PREFILL, help="prompt length for prefill")
    parser.add_argument("--decode-tokens", type=int, default=DEFAULT_DECODE, help="tokens generated for decode")
    parser.add_argument("--no-transformers", action="store_true", help="no transformers row")
    parser.add_argument("--no-stored", action="store_true", help="no weights-as-stored row")
    parser.add_argument("--no-llama-cpp", action="store_true", help="no llama.cpp row")
    parser.add_argument("--compare-kernels", action="store_true",
                        help="also measure our model with every product through F.linear (row 'ours_plain')")
    parser.add_argument("--compile", action="store_true",
                        help="also measure a compiled decode step (row 'ours_compiled'; compiling takes a while)")
    parser.add_argument("--sequential", action="store_true",
                        help="measure one row at a time, freeing its model after (for models that do not fit twice)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--_load", choices=list(LOADERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    global PREFILL_TOKENS, DECODE_TOKENS
    if args.prefill_tokens < 1 or args.decode_tokens < 2:
        parser.error("--prefill-tokens must be at least 1 and --decode-tokens at least 2")
    PREFILL_TOKENS, DECODE_TOKENS = args.prefill_tokens, args.decode_tokens
    if args.model and args.synthetic:
        parser.error("give --model or --synthetic, not both")
    if args.model is None and not args.synthetic:
        from weights import default_model_path

        try:
            args.model = str(default_model_path())
        except Exception as e:
            parser.exit(2, f"llama-bench: {e}\n")
    if args._load:
        _child_load(args._load, args.model, args.dtype)
        return 0
    if args.repeats < 1 or (args.load_repeats is not None and args.load_repeats < 1):
        parser.error("--repeats and --load-repeats must be at least 1")
    if args.model and not Path(args.model).exists():
        parser.exit(2, f"llama-bench: model path {args.model} does not exist\n")

    folder = None
    try:
        if args.synthetic:
            from scripts.bench_synthetic import write_gguf

            folder = Path(tempfile.mkdtemp(prefix="llama_bench_", dir=args.dir))
            args.model = str(folder / f"random-{args.synthetic}-{args.synthetic_format}.gguf")
            t0 = time.perf_counter()
            size = write_gguf(Path(args.model), args.synthetic, args.synthetic_format, args.synthetic_layers)
            print(f"wrote {args.model}: {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s", flush=True)
        result = run(args.model, args.dtype, args.repeats, args)
    except Exception as e:  # noqa: BLE001 - a checkpoint that does not load: say why, briefly
        parser.exit(2, f"llama-bench: could not benchmark {args.model}: {e}\n")
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.synthetic:
        result["synthetic"] = {"preset": args.synthetic, "format": args.synthetic_format,
                               "layers": args.synthetic_layers}
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
