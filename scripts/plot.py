"""llama-plot: draw what happens inside the model, to a PNG or SVG file.

    llama-plot lens --prompt "The capital of France is"          # default model (SmolLM2-135M)
    llama-plot attention --prompt "..." --layer 3 --head 2 -o head.png
    llama-plot attention --prompt "..." --layer 3                # all heads of layers.3
    llama-plot attention --prompt "..." --view sink              # attention on the first token
    llama-plot pca --prompt "..." --layers emb,0,10,-1 --view trajectory
    llama-plot summary --text                                    # the config table as text
    llama-plot params --view hist --model path/to/checkpoint
    llama-plot lens --from capture.pt --model path/to/checkpoint # an export, no forward pass

The kinds, their options and what each needs come from one registry,
llama.analysis.VIEW_KINDS (docs/PLOTS.md shows each). `--from EXPORT` reads a capture
written by llama.hooks.save_capture instead of running the model; lens additionally needs
--model (for the final norm and output matrix) and saliency and params always need the
model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llama.analysis import (
    CONFIG,
    PROMPT,
    VIEW_KINDS,
    AnalysisError,
    ViewSource,
    compute_view,
    model_summary,
    option_names,
    summary_text,
    tokens_from_pieces,
    tokens_from_tokenizer,
)
from llama.config import ConfigError
from llama.family import FamilyError, config_from_dict, family_of
from llama.dtypes import DTYPE_NAMES
from llama.plots import draw, save_figure

from .loading import is_rank0, parallel_options

DEFAULT_PROMPT = "The capital of France is"


class CLIError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def flag(name: str) -> str:
    """The command-line spelling of a view option: k -> -k, skip_first -> --skip-first."""
    return f"-{name}" if len(name) == 1 else "--" + name.replace("_", "-")


def view_options(opts: argparse.Namespace) -> dict:
    """The view options as given on the command line (None: not given)."""
    return {name: getattr(opts, name) for name in option_names()}


# ----------------------------------------------------------------------------------
# What a plot is drawn from: a live model (with its tokenizer) or an exported capture.
# ----------------------------------------------------------------------------------


def default_model() -> str:
    from weights import default_model_path

    return str(default_model_path())


def load_source(opts: argparse.Namespace, need_model: bool) -> ViewSource:
    """Load the model and tokenizer (or the export) that the plot kind needs."""
    kind = VIEW_KINDS[opts.kind]
    model = tokenizer = None
    model_path = opts.model
    if opts.from_export is None and kind.needs == CONFIG and not need_model:
        # rope and architecture need the configuration only: no tensors are read.
        from weights import read_config

        model_path = model_path or default_model()
        return ViewSource(read_config(model_path), name=opts.name or Path(model_path).name)
    if opts.from_export is None or need_model or opts.model:
        from tokenizer import load_tokenizer
        from weights import load_model

        model_path = model_path or default_model()
        model = load_model(model_path, dtype=opts.dtype, **parallel_options())  # (torchrun: split)
        try:
            tokenizer = load_tokenizer(opts.tokenizer or model_path)
        except Exception as e:  # noqa: BLE001 - plots still work with "#id" labels
            if opts.tokenizer:
                raise CLIError(f"cannot load tokenizer {opts.tokenizer!r}: {e}") from e
            if not opts.ids and kind.needs == PROMPT and opts.from_export is None:
                raise CLIError(f"no tokenizer found with the model ({e}): pass --tokenizer "
                               "PATH, or token ids with --ids 1,2,3") from e

    name = opts.name or (Path(model_path).name if model_path else "export")
    if opts.from_export is not None:
        return _source_from_export(opts, model, tokenizer, name)
    ids = _prompt_ids(opts, tokenizer) if kind.needs == PROMPT else []
    return ViewSource.from_model(model, tokenizer, ids, opts.prompt, name)


def _prompt_ids(opts: argparse.Namespace, tokenizer) -> list[int]:
    if opts.ids:
        try:
            return [int(x) for x in opts.ids.replace(",", " ").split()]
        except ValueError:
            raise CLIError(f"--ids takes token ids separated by commas, got {opts.ids!r}") from None
    if tokenizer is None:
        raise CLIError("no tokenizer for this model: pass --tokenizer PATH or --ids 1,2,3")
    prompt = opts.prompt if opts.prompt is not None else DEFAULT_PROMPT
    if prompt == "":
        raise CLIError("--prompt is empty: give some text")
    opts.prompt = prompt
    return tokenizer.encode(prompt, bos=not opts.no_bos)


def _source_from_export(opts, model, tokenizer, name) -> ViewSource:
    from llama.hooks import load_capture

    path = Path(opts.from_export)
    if not path.exists():
        raise CLIError(f"export file {str(path)!r} does not exist")
    try:
        cap = load_capture(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CLIError(f"cannot read export {str(path)!r} ({type(e).__name__}: {e}); it must "
                       "be a file written by llama.hooks.save_capture") from e
    ctx = dict(getattr(cap, "context", {}) or {})
    tensors = {k: v.float().cpu() for k, v in dict(cap.tensors).items()}
    config = ctx.get("config")
    if model is not None:
        args = model.args
    elif config:
        try:
            # The family's own config class (ModelArgs, GPT2Config), from the file's context.
            args = config_from_dict(config, family_of(ctx))
        except (ConfigError, FamilyError, TypeError) as e:
            raise CLIError(f"the export's model configuration is unusable: {e}") from e
    else:
        raise CLIError("the export carries no model configuration: pass --model as well")
    ids = ctx.get("token_ids") or []
    if ids and isinstance(ids[0], list):  # a batch was exported: the plots show sequence 0
        ids = ids[0]
        tensors = {k: v[:1] for k, v in tensors.items()}
    ids = [int(i) for i in ids]
    if not ids:
        # Without stored ids, number the positions from the captured tensors' length.
        any_t = next(iter(tensors.values()), None)
        T = any_t.shape[1] if any_t is not None and any_t.dim() >= 2 else 0
        ids = list(range(T))
    pieces = ctx.get("pieces")
    toks = tokens_from_tokenizer(tokenizer, ids) if tokenizer else tokens_from_pieces(ids, pieces)
    if opts.name is None:
        ck = ctx.get("checkpoint")
        name = Path(str(ck)).name if ck else path.name
    return ViewSource(args, model, tokenizer, ids, toks, ctx.get("prompt"), name, tensors)


# ----------------------------------------------------------------------------------
# Checking, computing and drawing: all through the registry
# ----------------------------------------------------------------------------------


def render(kind: str, src: ViewSource, opts: argparse.Namespace):
    """The figure for `kind` (a matplotlib Figure)."""
    return draw(compute_view(kind, src, view_options(opts), spell=flag))


def check_options(opts: argparse.Namespace) -> None:
    kind = VIEW_KINDS[opts.kind]
    kind.resolve(view_options(opts), spell=flag)  # each option valid and meant for this kind
    if opts.from_export is not None and not kind.from_capture:
        raise CLIError(f"{opts.kind} needs the model itself (gradients or weights), which an "
                       "export does not hold: run it without --from")
    if opts.from_export is not None and kind.uses_weights and not opts.model:
        raise CLIError(f"{opts.kind} uses the model's weights too (lens: the final norm and "
                       "output matrix), which an export does not hold: pass --model as well as --from")


def _add_view_options(p: argparse.ArgumentParser) -> None:
    """One flag per option name in the registry; its help says which kinds take it."""
    for name in option_names():
        uses = [(k.name, k.option(name)) for k in VIEW_KINDS.values() if k.option(name)]
        helps = []
        for kind, o in uses:
            quiet = o.default is None or o.type is bool or "default" in o.help
            default = "" if quiet else f" (default {o.default})"
            helps.append(f"{kind}: {o.help}{default}")
        o = uses[0][1]
        if o.type is bool:
            p.add_argument(flag(name), dest=name, action="store_const", const=True, default=None,
                           help="; ".join(helps))
        else:
            p.add_argument(flag(name), dest=name, type=o.type, default=None, help="; ".join(helps))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-plot",
        description="Plot the model's configuration, weights or what happens inside it on a "
        "prompt. Writes a .png or .svg file (docs/PLOTS.md shows every kind).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  llama-plot lens --prompt 'The capital of France is'\n"
        "  llama-plot attention --layer 3 --head 2 -o head.png\n"
        "  llama-plot summary --text",
    )
    p.add_argument("kind", choices=tuple(VIEW_KINDS), help="what to plot")
    p.add_argument("--prompt", help=f"text to run (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--ids", help="token ids instead of a prompt, e.g. 1,450,7483")
    p.add_argument("--model", help="checkpoint: .gguf file, Hugging Face folder or Meta folder "
                   "(default: the bundled SmolLM2-135M-Instruct Q4_1 GGUF)")
    p.add_argument("--tokenizer", help="tokenizer file or folder if not the one in --model")
    p.add_argument("--from", dest="from_export", metavar="EXPORT",
                   help="plot a capture saved by llama.hooks.save_capture, without a forward pass")
    p.add_argument("-o", "--output", help="output file, .png or .svg (default: KIND.png)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                   help="weights' dtype (default float32)")
    p.add_argument("--name", help="model name in titles (default: the checkpoint's file name)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    _add_view_options(p)
    p.add_argument("--text", action="store_true", help="summary: print the summary as plain text "
                   "(and draw only if -o is given)")
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    # Under torchrun every rank loads its part and computes the view; rank 0 prints and saves.
    lead = is_rank0()

    def fail(message: str) -> int:
        if lead:
            print(f"llama-plot: error: {message}", file=sys.stderr)
        return 2

    try:
        check_options(opts)
        src = load_source(opts, need_model=False)
        if opts.kind == "summary" and opts.text:
            text = summary_text(model_summary(src.model if src.model is not None else src.args, src.name))
            if lead:
                print(text, end="")
            if not opts.output:
                return _done(0)
        fig = render(opts.kind, src, opts)
        out = save_figure(fig, opts.output or f"{opts.kind}.png") if lead else None
    except (CLIError, AnalysisError, ConfigError) as e:
        return fail(str(e))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        return fail(str(e))
    except ValueError as e:  # the loaders' and the model's own input errors
        return fail(str(e))
    if lead:
        print(f"wrote {out}")
    return _done(0)


def _done(status: int) -> int:
    from llama.parallel import shutdown

    shutdown()  # under torchrun: leave the process group together (else nothing to do)
    return status


if __name__ == "__main__":
    sys.exit(main())
