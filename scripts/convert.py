"""llama-convert: rewrite a checkpoint as a Meta folder or a Hugging Face folder.

    llama-convert SRC OUT --to meta      # from an HF folder, a GGUF file (or a Meta folder)
    llama-convert SRC OUT --to hf        # from a Meta folder (or a GGUF file, an HF folder)

    --dtype float32|bfloat16|float16     default: keep the source's (GGUF quantised -> float32)
    --shards N                           Meta output split into N model-parallel files
    --max-shard-size 5GB                 HF output split into shards with an index
    --rope-scaling-factor F              Llama 3 RoPE factor for a Meta source (see docs)
    --force                              replace OUT if it exists

Tensors are copied bit for bit (only q/k rows are reordered between Meta's and Hugging
Face's layouts), so converting there and back gives identical files' contents.
"""

from __future__ import annotations

import argparse
import re
import sys

from llama.dtypes import DTYPE_NAMES

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write e.g. 5GB, 500MB or 1048576")
    power = "KMGT".find(m.group(2).upper()) + 1 if m.group(2) else 0
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base**power)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-convert",
        description="Convert a Llama checkpoint (Meta folder, Hugging Face folder or GGUF file) "
        "into Meta's or Hugging Face's format.",
    )
    p.add_argument("src", help="checkpoint to read: Meta folder, HF folder, or GGUF file")
    p.add_argument("out", help="folder to write (must not exist unless --force)")
    p.add_argument("--to", required=True, choices=["meta", "hf"], help="format to write")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="dtype of the written tensors (default: the source's own)")
    p.add_argument("--shards", type=int, default=1, help="Meta output: number of model-parallel files")
    p.add_argument("--max-shard-size", type=parse_size, default=None,
                   help="HF output: largest shard, e.g. 5GB (default: one file)")
    p.add_argument("--rope-scaling-factor", type=float, default=None,
                   help="Llama 3 RoPE factor for a Meta source whose params.json lacks it")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    from weights import CheckpointError
    from weights.save import convert

    if opts.shards < 1:
        print("llama-convert: error: --shards must be at least 1", file=sys.stderr)
        return 2
    if opts.shards > 1 and opts.to != "meta":
        print("llama-convert: error: --shards is for --to meta; use --max-shard-size for hf", file=sys.stderr)
        return 2
    overrides = {}
    if opts.rope_scaling_factor is not None:
        overrides["rope_scaling_factor"] = opts.rope_scaling_factor
    try:
        out = convert(
            opts.src,
            opts.out,
            to=opts.to,
            dtype=opts.dtype,
            n_shards=opts.shards,
            max_shard_bytes=opts.max_shard_size,
            overwrite=opts.force,
            **overrides,
        )
    except (CheckpointError, ValueError, OSError) as e:
        print(f"llama-convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {opts.to} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
