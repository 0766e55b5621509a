"""Loading a model for a command line: the --model/--dtype/--device/... options and their
errors, shared by the interactive front ends (llama-repl, and the studio to come). Under
torchrun (WORLD_SIZE > 1) each rank loads its part: load_model(..., parallel="tensor").

    p = argparse.ArgumentParser(); add_model_options(p)
    model, tok, path = load(p.parse_args())      # or LoadError with what went wrong
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from llama.dtypes import DTYPE_NAMES, dtype_name


class LoadError(Exception):
    """A model or tokenizer that cannot be loaded as asked: one line saying why."""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {n}")
    return n


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --max-seq-len, --threads, --plain-kernels."""
    p.add_argument("--model", metavar="PATH", help="checkpoint: a .gguf file, an HF or Meta folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", choices=DTYPE_NAMES + ("auto",), default="float32", help="weights dtype (default float32; auto = as stored)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--max-seq-len", type=positive_int, default=None, metavar="N", help="limit the context to N tokens (default: the model's own), e.g. to save memory")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads for torch (default: torch's choice; 1 is often fastest for small models)")
    p.add_argument("--plain-kernels", action="store_true", help="run every product through F.linear: slower, but the numbers transformers gives to 1e-4 (llama/speed.py)")


def check_device(spec: str) -> torch.device:
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise LoadError(f"--device {spec!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoadError("--device cuda: no CUDA GPU is available here (this torch sees none); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LoadError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LoadError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise LoadError(f"--device {spec!r}: only cpu, cuda and mps are supported")
    return device


def parallel_options() -> dict:
    """load_model's options for this process: under torchrun with several ranks, this
    rank's part of the model (parallel="tensor"); otherwise none."""
    from llama.parallel import torchrun_world_size

    return {"parallel": "tensor"} if torchrun_world_size() > 1 else {}


def is_rank0() -> bool:
    """Rank 0 under torchrun, or a process on its own: the one that prints and writes."""
    return os.environ.get("RANK", "0") == "0"


def _describe(e: Exception) -> str:
    """The message of an exception, with its type when that is not self-explanatory."""
    if isinstance(e, (ValueError, OSError)) and str(e):
        return str(e)  # our loaders' errors are written to be read as they are
    return f"{type(e).__name__}: {e}"


def load(args: argparse.Namespace):
    """(model, tokenizer, path) for the options add_model_options added, or LoadError."""
    from llama.parallel import is_parallel
    from llama.speed import use_fast_kernels
    from tokenizer import load_tokenizer
    from weights import default_model_path, load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = check_device(args.device)
    if args.model is None:
        try:
            path = Path(default_model_path())
        except Exception as e:  # noqa: BLE001 - the message is what matters here
            raise LoadError(f"no --model given and the default model is unavailable: {e}") from None
    else:
        path = Path(args.model).expanduser()
        if not path.exists():
            raise LoadError(f"--model {args.model}: no such file or folder (give a .gguf file or a checkpoint folder)")
    dtype = None if args.dtype == "auto" else args.dtype
    try:
        overrides = {} if args.max_seq_len is None else {"max_seq_len": args.max_seq_len}
        model = load_model(path, dtype=dtype, device=str(device), **overrides, **parallel_options())
        if not args.plain_kernels and not is_parallel(model):  # (no fast kernels for DTensors)
            use_fast_kernels(model)  # float32 on CPU: faster, equal to float32 rounding
    except Exception as e:  # noqa: BLE001 - a damaged file can fail in many ways; say which
        raise LoadError(f"could not load the model from {path}: {_describe(e)}") from None
    try:
        tok = load_tokenizer(path)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"loaded the weights from {path}, but not a tokenizer: {_describe(e)}") from None
    return model, tok, path


def banner(model: torch.nn.Module, path: Path, load_s: float) -> str:
    """One line about the loaded model: its shape, dtype, device and load time."""
    a, w = model.args, model.tok_embeddings.weight
    tp = getattr(model, "tp", None)  # llama.parallel's context on a tensor-parallel model
    where = f"{w.device}" if tp is None else f"{tp.world_size} ranks ({tp.device.type}, plain kernels)"
    return (f"{path.name}: {a.n_layers} layers, {a.dim} wide, vocab {a.vocab_size}, context "
            f"{a.max_seq_len}, {dtype_name(w.dtype)} on {where} (loaded in {load_s:.1f} s)")


__all__ = ["LoadError", "positive_int", "add_model_options", "check_device", "load", "banner",
           "parallel_options", "is_rank0"]
