"""llama-studio: a local, offline explorer of a model in the browser.

    llama-studio                                  # the embedded SmolLM2-135M-Instruct
    llama-studio --model path/to/checkpoint --dtype bfloat16 --port 9000 --no-browser

Loads the model, serves the studio on http://127.0.0.1:8765/ (loopback only unless
--host says otherwise) and opens it in the browser. Everything the page uses ships in
the package; it asks no host but this server for anything. docs/STUDIO.md describes it.
"""

from __future__ import annotations

import argparse
import errno
import sys
import threading
import time
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16", "auto")


class StudioError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-studio",
        description="Serve a local, offline explorer of a model (tokens, next-token table, "
        "attention, logit lens, residual stream, attribution, interventions, the model, "
        "a guided tour) and open it in the browser.")
    p.add_argument("--model", metavar="PATH", help="checkpoint: a .gguf file, an HF or Meta folder "
                   "(default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype (default float32; auto = as stored)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser, just print the URL")
    p.add_argument("--max-seq-len", type=int, default=None, metavar="N", help="limit the context to N tokens")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    p.add_argument("--plain-kernels", action="store_true", help="run every product through F.linear "
                   "(transformers' numbers to 1e-4; slower): see llama/speed.py")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def check_device(spec: str):
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise StudioError(f"--device {spec!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StudioError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise StudioError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise StudioError(f"--device {spec!r}: only cpu, cuda and mps are supported")
    return device


def load(args: argparse.Namespace):
    """(model, tokenizer, path), or StudioError saying what went wrong."""
    from llama.speed import use_fast_kernels
    from tokenizer import load_tokenizer
    from weights import default_model_path, load_model

    device = check_device(args.device)
    if args.model is None:
        try:
            path = Path(default_model_path())
        except Exception as e:  # noqa: BLE001 - the message is what matters
            raise StudioError(f"no --model given and the default model is unavailable: {e}") from None
    else:
        path = Path(args.model).expanduser()
        if not path.exists():
            raise StudioError(f"--model {args.model}: no such file or folder (give a .gguf file or a checkpoint folder)")
    dtype = None if args.dtype == "auto" else args.dtype
    overrides = {} if args.max_seq_len is None else {"max_seq_len": args.max_seq_len}
    try:
        model = load_model(path, dtype=dtype, device=str(device), **overrides)
        if not args.plain_kernels:
            use_fast_kernels(model)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways; say which
        raise StudioError(f"could not load the model from {path}: {e}") from None
    try:
        tok = load_tokenizer(path)
    except Exception as e:  # noqa: BLE001
        raise StudioError(f"loaded the weights from {path}, but not a tokenizer: {e}") from None
    return model, tok, path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_seq_len is not None and args.max_seq_len < 1:
        parser.error(f"--max-seq-len must be >= 1, got {args.max_seq_len}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    from llama.studio.engine import Engine
    from llama.studio.server import StudioServer, is_loopback

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    # Listen first: a port that is taken is said at once, not after loading the model.
    try:
        server = StudioServer(None, args.host, args.port, verbose=args.verbose)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"llama-studio: port {args.port} is already in use on {args.host}: pass --port N "
                  "(or --port 0 for any free port)", file=sys.stderr)
        else:
            print(f"llama-studio: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        model, tok, path = load(args)
    except StudioError as e:
        server.server_close()
        print(f"llama-studio: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        server.server_close()
        print("llama-studio: interrupted while loading", file=sys.stderr)
        return 130
    name = path.stem if path.is_file() else path.name
    server.engine = Engine(model, tok, name=name, path=str(path))
    a = model.args
    print(f"{name}: {a.n_layers} layers, {a.dim} wide, vocab {a.vocab_size}, context {a.max_seq_len} "
          f"(loaded in {time.perf_counter() - t0:.1f} s)", flush=True)
    if not is_loopback(args.host):
        print(f"llama-studio: WARNING: listening on {args.host}, not on this machine only: anyone who "
              f"can reach it on port {server.port} can run the model and read its source files. "
              "Use --host 127.0.0.1 to keep it local.", file=sys.stderr, flush=True)
    print(f"llama-studio: serving on {server.url}  (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        import webbrowser

        threading.Timer(0.3, lambda: webbrowser.open(server.url)).start()
    # Handler threads are joined on the way out (not daemons), so the interpreter never
    # shuts down under a thread still writing a response.
    server.daemon_threads = False
    server.block_on_close = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nllama-studio: stopped", file=sys.stderr)
    finally:
        server.stop_generations()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
