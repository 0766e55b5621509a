"""Regenerate docs/gallery/*.png: every plot kind on the default model (or --model).

    python -m scripts.gallery                      # SmolLM2-135M-Instruct, docs/gallery/
    python -m scripts.gallery --model PATH --out /tmp/gallery --prompt "..."

The model is loaded once and run once per set of intermediates; each image is drawn by
the same code as `llama-plot` (scripts/plot.py: render), so the gallery shows exactly what
the command produces. Takes about a minute on two CPU cores for the 135M model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llama.analysis import AnalysisError
from llama.config import ConfigError
from llama.plots import save_figure

from .plot import CLIError, build_parser, load_source, render

GALLERY_PROMPT = "The capital of France is Paris. The capital of Germany is"

# (file name, kind, options): the options are llama-plot's, as on the command line.
ENTRIES = [
    ("summary", "summary", []),
    ("architecture", "architecture", []),
    ("tokens", "tokens", []),
    ("topk", "topk", []),
    ("lens", "lens", []),
    ("saliency", "saliency", []),
    ("attention_head", "attention", ["--layer", "17", "--head", "5"]),
    ("attention_grid", "attention", ["--layer", "16"]),
    ("attention_sink", "attention", ["--view", "sink"]),
    ("activations", "activations", []),
    ("pca", "pca", ["--skip-first"]),
    ("pca_trajectory", "pca", ["--view", "trajectory", "--skip-first"]),
    ("params_stats", "params", ["--view", "stats"]),
    ("params_hist", "params", ["--view", "hist"]),
    ("params_heatmap", "params", ["--view", "heatmap"]),
    ("rope", "rope", []),
]


SHRINK_ABOVE = 250 * 1024  # bytes; larger images get a palette (README pages stay light)


def shrink_png(path: Path) -> None:
    """Re-save with a 256-colour palette: files get 3-4x smaller, colour bars slightly banded."""
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.gallery", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="checkpoint (default: the bundled SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--prompt", default=GALLERY_PROMPT, help=f"prompt (default {GALLERY_PROMPT!r})")
    p.add_argument("--out", default="docs/gallery", help="output folder (default docs/gallery)")
    p.add_argument("--only", help="comma-separated file names to redo, e.g. lens,topk")
    p.add_argument("--name", help="model name in titles (default: the checkpoint's file name)")
    g = p.parse_args(argv)

    out = Path(g.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(g.only.split(",")) if g.only else None
    entries = [e for e in ENTRIES if only is None or e[0] in only]
    if only and len(entries) != len(only):
        known = ", ".join(e[0] for e in ENTRIES)
        print(f"gallery: error: unknown name(s) in --only; known: {known}", file=sys.stderr)
        return 2

    base = ["--prompt", g.prompt] + (["--model", g.model] if g.model else [])
    base += ["--name", g.name] if g.name else []
    try:
        start = time.perf_counter()
        src = load_source(build_parser().parse_args(["lens", *base]), need_model=True)
        print(f"loaded {src.name} in {time.perf_counter() - start:.1f}s; prompt has "
              f"{len(src.ids)} tokens")
        for file_name, kind, extra in entries:
            opts = build_parser().parse_args([kind, *base, *extra])
            t0 = time.perf_counter()
            path = save_figure(render(kind, src, opts), out / f"{file_name}.png")
            if path.stat().st_size > SHRINK_ABOVE:
                shrink_png(path)
            print(f"  {path}  ({path.stat().st_size / 1024:.0f} KiB, "
                  f"{time.perf_counter() - t0:.1f}s)")
    except (CLIError, AnalysisError, ConfigError, ValueError, OSError) as e:
        print(f"gallery: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
