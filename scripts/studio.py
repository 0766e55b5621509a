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

from .loading import LoadError, add_model_options, banner
from .loading import load as load_model_and_tokenizer


class StudioError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-studio",
        description="Serve a local, offline explorer of a model (tokens, next-token table, "
        "attention, logit lens, residual stream, attribution, interventions, the model, "
        "a guided tour) and open it in the browser.")
    add_model_options(p)  # --model --dtype --device --max-seq-len --threads --plain-kernels
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser, just print the URL")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def load(args: argparse.Namespace):
    """(model, tokenizer, path, speed) for the options, or StudioError saying what went wrong.

    The model runs through llama.speed.optimize(model, cache=True), as llama-repl does: each
    product's kernel measured on this machine (the choices kept on disk for the next
    start) and never one whose results differ beyond float32 rounding; --plain-kernels
    keeps F.linear everywhere. `speed` says which, for the banner and the page.
    """
    from llama.parallel import is_parallel
    from llama.speed import default_cache_file, optimize

    plain = argparse.Namespace(**{**vars(args), "plain_kernels": True})  # loading only: we optimize below
    try:
        model, tok, path = load_model_and_tokenizer(plain)
    except LoadError as e:
        raise StudioError(str(e)) from None
    if args.plain_kernels or is_parallel(model):
        speed = "plain kernels (F.linear everywhere; --plain-kernels)"
    else:
        try:
            optimize(model, cache=True)
        except Exception as e:  # noqa: BLE001 - run as loaded rather than not at all
            print(f"llama-studio: running with plain kernels: llama.speed.optimize failed ({e})",
                  file=sys.stderr)
            speed = "plain kernels (llama.speed.optimize failed)"
        else:
            speed = (f"kernels measured on this CPU by llama.speed.optimize, same results to float32 "
                     f"rounding (choices kept in {default_cache_file()}; --plain-kernels for F.linear)")
    return model, tok, path, speed


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")

    from llama.studio.engine import Engine
    from llama.studio.server import StudioServer, is_loopback

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
        model, tok, path, speed = load(args)
    except StudioError as e:
        server.server_close()
        print(f"llama-studio: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        server.server_close()
        print("llama-studio: interrupted while loading", file=sys.stderr)
        return 130
    name = path.stem if path.is_file() else path.name
    server.engine = Engine(model, tok, name=name, path=str(path), speed=speed)
    print(banner(model, path, time.perf_counter() - t0), flush=True)
    print(f"llama-studio: {speed}", flush=True)
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
