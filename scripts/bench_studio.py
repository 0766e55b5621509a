"""How fast the studio answers, on the default model on CPU.

    python -m scripts.bench_studio                 # API timings + the page in headless Chromium
    python -m scripts.bench_studio --no-browser    # API timings only
    python -m scripts.bench_studio --json out.json --repeat 5

Measures, with the server in this process (as `llama-studio` runs it, fast kernels on):
- keystroke -> tokens + top-k: the prompt typed one character at a time, each prefix a
  POST /api/text (the KV cache makes typing at the end cheap), and in the browser, from
  the input event to the redrawn chips and table;
- each view: POST /api/view/KIND on the typed prompt (first call, and again from the
  client's cached capture where the view has one);
- generation: tokens per second of a streamed greedy generation;
- page load: in headless Chromium, from navigation start to the first drawn top-k table.

Prints a table (milliseconds: median and range over --repeat runs) with the CPU model,
torch's thread count and the load average, because the numbers mean little without them.
docs/STUDIO.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "The capital of France is"


def summary(ms: list[float]) -> str:
    if not ms:
        return "n/a"
    med = statistics.median(ms)
    return f"{med:7.1f}  ({min(ms):.1f} .. {max(ms):.1f})"


TESTS = str(Path(__file__).resolve().parent.parent / "tests")  # the test suite's HTTP client and browser


def bench_api(port: int, repeat: int) -> dict:
    sys.path.insert(0, TESTS)
    from studio_helpers import Client

    from llama.studio.engine import VIEWS

    out: dict[str, list[float]] = {}

    def timed(key, fn):
        t0 = time.perf_counter()
        result = fn()
        out.setdefault(key, []).append(1000 * (time.perf_counter() - t0))
        return result

    for r in range(repeat):
        c = Client(port, f"bench-{r}")
        for i in range(1, len(PROMPT) + 1):
            key = "keystroke (API), first char" if i == 1 else "keystroke (API), typing at the end"
            timed(key, lambda: c.ok("text", {"text": PROMPT[:i]}))
        timed("edit at the start (API)", lambda: c.ok("text", {"text": "A" + PROMPT[1:]}))
        timed("sampling change (API, no model run)", lambda: c.ok("state", {"temperature": 0.8, "top_p": 0.9}))
        c.ok("text", {"text": PROMPT})
        _, info = c.get("/api/info")
        available = {v["name"] for v in info["views"] if v["available"]}
        for kind in VIEWS:
            if kind in available:  # positions is GPT-2's
                options = {"corrupt": "The capital of Italy is"} if kind == "patching" else {}
                timed(f"view {kind}", lambda: c.ok(f"view/{kind}", {"options": options}))
        for kind in ("lens", "residual", "dla"):
            timed(f"view {kind} again (capture cached)", lambda: c.ok(f"view/{kind}", {"options": {}}))
        t0 = time.perf_counter()
        status, events = c.stream({"n": 32})
        dt = time.perf_counter() - t0
        n = sum(1 for e in events if e["type"] == "token")
        out.setdefault("generation tokens/s", []).append(n / dt)
    return out


KEYSTROKES_JS = """
const done = arguments[arguments.length - 1];
const prompt = arguments[0];
const box = document.getElementById("text");
const times = [];
let i = 1;
function next() {
  if (i > prompt.length) { done(times); return; }
  const text = prompt.slice(0, i);
  const t0 = performance.now();
  box.value = text;
  box.dispatchEvent(new Event("input"));
  (function poll() {
    const st = window.LlamaStudioPage.state();
    const drawn = document.querySelectorAll("#tokens .app-tok").length === (st ? st.n_tokens : -1);
    if (st && st.text === text && drawn && document.querySelector("#topk .ls-cand")) {
      requestAnimationFrame(() => { times.push(performance.now() - t0); i++; setTimeout(next, 30); });
    } else setTimeout(poll, 1);
  })();
}
box.value = ""; next();
"""


def bench_browser(url: str, repeat: int) -> dict:
    sys.path.insert(0, TESTS)
    from studio_helpers import browser_missing, start_browser

    if browser_missing():
        print("(no headless browser: skipping the page timings)", file=sys.stderr)
        return {}
    out: dict[str, list[float]] = {}
    driver, _ = start_browser(Path(tempfile.mkdtemp()))
    driver.set_script_timeout(300)
    try:
        for _ in range(repeat):
            driver.get("about:blank")
            driver.get(url)
            load = None
            while load is None:  # the page notes when it drew its first table
                load = driver.execute_script("return window.LlamaStudioPage && window.LlamaStudioPage.firstTopk()")
                time.sleep(0.01)
            out.setdefault("page load to first top-k (browser)", []).append(load)
            times = driver.execute_async_script(KEYSTROKES_JS, PROMPT)
            out.setdefault("keystroke -> chips + top-k drawn (browser)", []).extend(times[1:])
    finally:
        driver.quit()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_studio", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    import torch

    from llama.speed import optimize
    from llama.speed.calibrate import cpu_model
    from llama.studio.engine import Engine
    from llama.studio.server import StudioServer
    from tokenizer import load_tokenizer
    from weights import default_model_path, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    path = default_model_path()
    t0 = time.perf_counter()
    model = load_model(path)
    optimize(model)  # as llama-studio runs it (the choices not kept on disk here)
    server = StudioServer(Engine(model, load_tokenizer(path), name="SmolLM2-135M-Instruct"), "127.0.0.1", 0).start()
    load_s = time.perf_counter() - t0
    try:
        results = bench_api(server.port, args.repeat)
        if not args.no_browser:
            results.update(bench_browser(server.url, args.repeat))
    finally:
        server.stop()
    head = (f"CPU: {cpu_model()} ({os.cpu_count()} logical cores), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end; "
            f"model loaded in {load_s:.1f} s; {args.repeat} runs")
    print(head)
    print(f"{'what':52} {'median ms  (min .. max)':>28}")
    for key, values in results.items():
        if key.endswith("tokens/s"):
            print(f"{key:52} {statistics.median(values):7.1f}  ({min(values):.1f} .. {max(values):.1f})")
        else:
            print(f"{key:52} {summary(values):>28}")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": head, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
