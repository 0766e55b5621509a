"""llama-parity: our model against transformers on the same checkpoint, and where they part.

    llama-parity                                     # the default model (SmolLM2-135M GGUF)
    llama-parity path/to/checkpoint --prompt "Hello" --prompt "def f(x):"
    llama-parity path/to/Llama-3.2-1B --dtype bfloat16 --json parity.json

Loads PATH with weights.load_model and with transformers from the same files
(AutoModelForCausalLM; gguf_file= for GGUF; Meta folders, which transformers cannot read,
get our loaded weights converted by llama.parity), runs the same ids through both, and
prints per prompt the max |logit difference| and top-1 agreement (full forward, and
token by token through each side's KV cache), layer by layer the residual stream and
attention probabilities, the first hook point past its scaled tolerance with its likely
culprit, and a tokenizer check. Exit status: 0 within tolerance, 1 not (or not
comparable), 2 bad input. See docs/PARITY.md.

`check(path, ...)` is the same as a library call; it returns a llama.parity.ParityReport.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from llama.dtypes import DTYPE_NAMES, DtypeError, dtype_name, parse_dtype
from llama.parity import (
    CORPUS,
    DEFAULT_PROMPTS,
    ParityInputError,
    ParityReport,
    Problem,
    ReferenceUnavailable,
    TokenizerCheck,
    build_report,
    comparable_names,
    compare,
    compare_tokenizers,
    config_diffs,
    default_tol,
    encode_prompts,
    family_for_model,
    load_reference,
    load_reference_tokenizer,
    require_transformers,
    run_ours,
    run_reference,
)
from llama.model import without_stored_rope_table
from llama.parity.reference import tied

GiB = 2**30
# What a run allocates besides the weights: activations of every hook point for a few
# short prompts on both sides, transformers' caches, Python. Generous for prompts of a
# few hundred tokens.
OVERHEAD = 512 * 2**20


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


MODES = ("together", "one after the other", "layer by layer")


def estimate_memory(ckpt: Any, kind: str, dtype: torch.dtype, available: int | None) -> dict[str, Any]:
    """Bytes each way of running needs, what is available, and the way to run: "together"
    (both models in memory), "one after the other" (ours, freed, then transformers'),
    "layer by layer" (one decoder layer of each side at a time), or "too big"."""
    shapes = without_stored_rope_table(ckpt.shapes)
    if ckpt.args.tie_embeddings:
        shapes.pop("output.weight", None)
    n_params = sum(math.prod(s) for s in shapes.values())
    outside = sum(math.prod(s) for n, s in shapes.items() if not n.startswith("layers."))
    per_layer = (n_params - outside) / max(1, ckpt.args.n_layers)
    item = torch.empty((), dtype=dtype).element_size()
    ours = n_params * item + OVERHEAD
    if kind == "meta":
        # transformers gets our tensors (shared), plus its own copy of the reordered q/k rows.
        qk = sum(math.prod(s) for n, s in shapes.items() if n.endswith(("wq.weight", "wk.weight")))
        theirs = qk * item + OVERHEAD
    elif kind == "gguf":
        # transformers dequantises the whole file to float32 numpy arrays, then builds the model.
        theirs = n_params * 4 + n_params * item + OVERHEAD
    else:
        theirs = n_params * item + OVERHEAD
    layerwise = int(2 * (outside + per_layer) * item) + OVERHEAD  # one layer + the embeddings, each side
    free = "unknown" if available is None else _gib(available)
    if available is None or ours + theirs <= available:
        mode, summary = "together", f"both models: about {_gib(ours + theirs)}, {free} available"
    elif kind != "meta" and max(ours, theirs) <= available:
        mode = "one after the other"
        summary = (f"both together would need {_gib(ours + theirs)}, {free} available: ours ({_gib(ours)}) "
                   f"runs first and is freed before transformers loads ({_gib(theirs)})")
    elif layerwise <= available:
        mode = "layer by layer"
        summary = (f"one model needs {_gib(min(ours, theirs))}, {free} available: one layer of each side at a "
                   f"time, about {_gib(layerwise)}")
    else:
        mode = "too big"
        summary = (f"needs {_gib(ours)} for our model, {_gib(theirs)} for transformers', and even one layer "
                   f"of each at a time {_gib(layerwise)}; {free} available")
    return {"n_params": n_params, "ours_bytes": ours, "reference_bytes": theirs, "layerwise_bytes": layerwise,
            "available_bytes": available, "mode": mode, "summary": summary}


def _too_big_message(path: Path, est: dict[str, Any], dtype: torch.dtype) -> str:
    lines = [f"{path}: not enough memory for a parity run in {dtype_name(dtype)}: {est['summary']}."]
    if dtype == torch.float32:
        lines.append("  In bfloat16 each of these needs about half: try --dtype bfloat16.")
    lines.append("  Or run it on a machine with more memory (LLAMA_AVAILABLE_MEMORY overrides the estimate of "
                 "what is free, e.g. in a container).")
    return "\n".join(lines)


def check(
    path: str | os.PathLike | None = None,
    prompts: Sequence[str] | None = None,
    dtype: str | torch.dtype = "float32",
    tol: float | None = None,
    *,
    intervene: Mapping[str, Callable] | None = None,
    tokenizer: Any = None,
    corpus: Sequence[str] | None = None,
    stepwise: bool = True,
    mode: str = "auto",
) -> ParityReport:
    """Load `path` (default: the default model) with our loader and with transformers,
    compare them on `prompts` (default: llama.parity.DEFAULT_PROMPTS), return the report.

    intervene: {hook: fn} applied to our side only (llama.hooks.intervene), for planting
        faults. tokenizer: use this tokenizer for our side instead of load_tokenizer(path).
    mode: "auto" (from the memory estimate), or one of MODES: "together", "one after the
        other", "layer by layer".
    Raises ParityInputError for input it cannot use, ReferenceUnavailable when
    transformers is not installed. A checkpoint transformers cannot load is not an error:
    the report says so and holds what could be checked without it.
    """
    from tokenizer import load_tokenizer
    from weights import CheckpointError, default_model_path, detect_format, load_model, open_checkpoint
    from weights.checkpoint import available_memory

    try:
        want = parse_dtype(dtype)
    except DtypeError as e:
        raise ParityInputError(str(e)) from None
    if want is None:
        raise ParityInputError(f"give a dtype to compare in: {', '.join(DTYPE_NAMES)}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ParityInputError(f"the tolerance must be a positive number, got {tol!r}")
    if mode != "auto" and mode not in MODES:
        raise ParityInputError(f"mode must be 'auto' or one of {MODES}, got {mode!r}")
    require_transformers()  # without it there is nothing to compare with: say how to get it

    try:
        path = Path(default_model_path() if path is None else path).expanduser()
        kind, where = detect_format(path)
        ckpt = open_checkpoint(path)
    except CheckpointError as e:
        raise ParityInputError(str(e)) from None
    except (OSError, ValueError) as e:
        raise ParityInputError(f"cannot read a checkpoint at {path}: {e}") from None
    args = ckpt.args
    est = estimate_memory(ckpt, kind, want, available_memory(torch.device("cpu")))
    if est["mode"] == "too big":
        raise ParityInputError(_too_big_message(path, est, want))
    run_mode = est["mode"] if mode == "auto" else mode
    if kind == "meta" and run_mode == "one after the other":
        run_mode = "together"  # transformers' copy is built from ours (and shares its memory)
    if run_mode != est["mode"]:
        est["summary"] = f"asked for; the memory estimate would have chosen {est['mode']}: {est['summary']}"

    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(path if path.is_dir() else where)
        except Exception as e:  # noqa: BLE001 - no tokenizer: prompts cannot be encoded
            raise ParityInputError(f"could not load a tokenizer from {path}: {e}") from None
    prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
    ids_list = encode_prompts(tokenizer, prompts, args.vocab_size, args.max_seq_len)
    tol = default_tol(want) if tol is None else float(tol)

    try:
        hf_tok = load_reference_tokenizer(kind, path if kind == "meta" else where)
        tok_check = compare_tokenizers(tokenizer, hf_tok, prompts, CORPUS if corpus is None else corpus)
    except ReferenceUnavailable as e:
        tok_check = TokenizerCheck(False, str(e))

    common = dict(checkpoint=str(path), format=kind, memory=est)
    if run_mode == "layer by layer":
        return _layer_by_layer(ckpt, kind, where, want, prompts, ids_list, tol, tok_check, intervene, **common)
    try:
        ours = load_model(path, dtype=want, check_memory=True)
    except CheckpointError as e:
        raise ParityInputError(f"our loader cannot load {path}: {e}") from None

    if run_mode == "together":
        try:
            ref = load_reference(kind, where, want, ours=ours)
        except ReferenceUnavailable as e:
            return _ours_only(ours, prompts, ids_list, tol, str(e), tok_check, stepwise, intervene, **common)
        return compare(ours, tokenizer, ref, prompts, tol=tol, intervene=intervene, stepwise=stepwise,
                       tokenizer_check=tok_check, mode="together", **common)

    # One after the other: ours first, freed, then transformers'.
    family = family_for_model(ours)
    names = comparable_names(ours, family)
    mine = run_ours(ours, ids_list, names, intervene=intervene, stepwise=stepwise)
    ours_tied = ours.output.weight is ours.tok_embeddings.weight
    n_layers, head_dim = ours.args.n_layers, ours.args.head_dim
    del ours
    gc.collect()
    try:
        ref = load_reference(kind, where, want)
    except ReferenceUnavailable as e:
        return build_report(ours=mine, theirs=None, prompts=prompts, ids_list=ids_list, family=family, names=names,
                            n_layers=n_layers, tol=tol, dtype=dtype_name(want), mode="ours only",
                            reference="none", reference_error=str(e), tokenizer=tok_check, **common)
    theirs = run_reference(ref, ids_list, names, n_layers, head_dim, stepwise=stepwise)
    configs = config_diffs(ref.family, args, ref.config, ours_tied, tied(ref))
    return build_report(ours=mine, theirs=theirs, prompts=prompts, ids_list=ids_list, family=ref.family,
                        names=names, n_layers=n_layers, tol=tol, dtype=dtype_name(want), mode="one after the other",
                        reference=ref.description, configs=configs, tokenizer=tok_check, **common)


def _layer_by_layer(ckpt, kind, where, dtype, prompts, ids_list, tol, tok_check, intervene, **common) -> ParityReport:
    """Neither model is loaded whole: one decoder layer of each side at a time."""
    from llama.family import family_of
    from llama.parity.layerwise import run_layerwise

    transformers = require_transformers()
    with torch.device("meta"):
        shell = family_of(ckpt.args).model()(ckpt.args)  # for the hook names only: no memory
    family = family_for_model(shell)
    names = comparable_names(shell, family)
    mine, theirs, config, family = run_layerwise(ckpt, kind, where, dtype, ids_list, names, intervene=intervene)
    notes = [
        "layer by layer: each layer's hook points were compared with both sides given transformers' input to "
        "that layer, so a difference is that layer's own; the max |logit difference| is end to end (each side "
        "ran on its own residual stream); decoding through the KV caches is not compared in this mode",
    ]
    if kind != "hf":
        notes.append(f"transformers cannot read this {kind} file one layer at a time, so its layers got our "
                     "reader's tensors, converted by llama.parity: this mode checked the forward code, not the "
                     "file reading")
    source = "its own reading of the safetensors files" if kind == "hf" else "our reader's tensors, converted"
    return build_report(
        ours=mine, theirs=theirs, prompts=prompts, ids_list=ids_list, family=family, names=names,
        n_layers=ckpt.args.n_layers, tol=tol, dtype=dtype_name(dtype), mode="layer by layer",
        reference=f"transformers {transformers.__version__} {config.model_type} decoder layers built from its "
        f"config, one at a time, weights from {source}, eager attention",
        configs=config_diffs(family, ckpt.args, config), tokenizer=tok_check, notes=notes, **common,
    )


def _ours_only(ours, prompts, ids_list, tol, error, tok_check, stepwise, intervene, **common) -> ParityReport:
    """transformers could not load the model: check what can be checked without it (our
    model runs, its logits are finite, its KV cache agrees with its full forward)."""
    family = family_for_model(ours)
    names = comparable_names(ours, family)
    mine = run_ours(ours, ids_list, ["logits"], intervene=intervene, stepwise=stepwise)
    report = build_report(ours=mine, theirs=None, prompts=prompts, ids_list=ids_list, family=family, names=names,
                          n_layers=ours.args.n_layers, tol=tol, dtype=dtype_name(ours.tok_embeddings.weight.dtype),
                          mode="ours only", reference="none", reference_error=error, tokenizer=tok_check, **common)
    finite = all(torch.isfinite(x).all() for x in mine.logits)
    report.notes.append(
        "checked without transformers: our model loads and runs"
        + (", its logits are finite" if finite else "")
        + (", and token by token through its KV cache it was compared with its own full forward "
           "(a [cache] problem says if it differs)" if stepwise else "")
    )
    if not finite:
        report.problems.append(Problem("model", "our logits contain NaN or infinity"))
    return report


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-parity",
        description="Compare our model with Hugging Face transformers on the same checkpoint: logits, "
        "KV-cache decoding, every layer's hook points, the tokenizer; name the first layer and hook "
        "point that differs and its likely cause. Exit 0 within tolerance, 1 not, 2 bad input.",
    )
    p.add_argument("path", nargs="?", help="checkpoint: Meta folder, HF folder or GGUF file, Llama family or "
                   "GPT-2 (default: SmolLM2-135M)")
    p.add_argument("--prompt", action="extend", nargs="+", metavar="TEXT",
                   help="prompt(s) to compare on (repeatable; default: three short built-in prompts)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                   help="dtype both models run in (default float32)")
    p.add_argument("--tol", type=float, default=None,
                   help="max |logit difference| allowed (default 1e-4 in float32, 2.0 in bfloat16 "
                   "and float16)")
    p.add_argument("--json", metavar="FILE", help="also write the whole report as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    # transformers' GGUF reader draws tqdm progress bars; tqdm reads this when imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"llama-parity: error: {message}", file=sys.stderr)
        return 2

    if args.tol is not None and not (args.tol > 0 and math.isfinite(args.tol)):
        return fail(f"--tol must be a positive number, got {args.tol}")
    if args.json:
        folder = Path(args.json).expanduser().resolve().parent
        if not folder.is_dir():
            return fail(f"--json {args.json}: folder {folder} does not exist")
    if args.path is not None and not Path(args.path).expanduser().exists():
        return fail(f"checkpoint path {args.path} does not exist: check the spelling")
    try:
        report = check(args.path, args.prompt, args.dtype, args.tol)
    except (ParityInputError, ReferenceUnavailable) as e:
        return fail(str(e))
    print(report.table())
    if args.json:
        Path(args.json).expanduser().write_text(report.to_json() + "\n", encoding="utf-8")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
