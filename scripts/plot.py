"""llama-plot: draw what happens inside the model, to a PNG or SVG file.

    llama-plot lens --prompt "The capital of France is"          # default model (SmolLM2-135M)
    llama-plot attention --prompt "..." --layer 3 --head 2 -o head.png
    llama-plot attention --prompt "..." --layer 3                # all heads of layers.3
    llama-plot attention --prompt "..." --view sink              # attention on the first token
    llama-plot pca --prompt "..." --layers emb,0,10,-1 --view trajectory
    llama-plot summary --text                                    # the config table as text
    llama-plot params --view hist --model path/to/checkpoint
    llama-plot lens --from capture.pt --model path/to/checkpoint # an export, no forward pass

Kinds: summary, tokens, pca, attention, activations, lens, topk, saliency, params, rope,
architecture (docs/PLOTS.md shows each). `--from EXPORT` reads a capture written by
llama.hooks.save_capture instead of running the model; lens additionally needs --model
(for the final norm and output matrix) and saliency and params always need the model.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llama.config import ConfigError, ModelArgs
from llama.plots import (
    CAPTURE_NAMES,
    KINDS,
    PlotError,
    Tokens,
    activation_stats,
    attention_maps,
    logit_lens,
    model_summary,
    param_stats,
    parse_stages,
    pca_stages,
    plot_activations,
    plot_architecture,
    plot_attention_grid,
    plot_attention_head,
    plot_first_token_share,
    plot_lens,
    plot_params,
    plot_pca,
    plot_rope,
    plot_saliency,
    plot_summary,
    plot_tokens,
    plot_topk,
    rope_table,
    run_and_capture,
    saliency,
    save_figure,
    summary_text,
    tokens_from_pieces,
    tokens_from_tokenizer,
    top_k,
)
from llama.plots._capture import n_layers_in
from llama.plots._common import check_index
from llama.plots.params import PARAM_VIEWS

DEFAULT_PROMPT = "The capital of France is"
NEEDS_MODEL = {"saliency", "params"}  # cannot be drawn from an export alone
CONFIG_ONLY = {"rope", "architecture"}  # drawn from the configuration alone
NEEDS_PROMPT = {"tokens", "pca", "attention", "activations", "lens", "topk", "saliency"}


class CLIError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


# ----------------------------------------------------------------------------------
# What a plot is drawn from: a live model (with its tokenizer) or an exported capture.
# ----------------------------------------------------------------------------------


@dataclass
class Source:
    name: str  # for titles: the checkpoint's file or folder name
    args: ModelArgs
    model: Any = None  # llama.model.Transformer, when loaded
    tokenizer: Any = None
    token_ids: list[int] = field(default_factory=list)
    tokens: Tokens | None = None
    prompt: str | None = None
    cache: dict[str, torch.Tensor] | None = None  # intermediates, from --from or captured here
    param_stats: Any = None  # computed once, shared by the three params views (gallery)

    def decode(self):
        """id -> text function for predicted tokens, or None without a tokenizer."""
        if self.tokenizer is None:
            return None
        return lambda i: self.tokenizer.decode([i])

    def tensor_tokens(self) -> torch.Tensor:
        device = self.model.tok_embeddings.weight.device
        return torch.tensor([self.token_ids], device=device)

    def captured(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Intermediates for one kind: from the export, or one forward pass of the model."""
        if self.cache is not None and self.model is None:
            return self.cache
        if self.cache is not None and all(_have(self.cache, n) for n in names):
            return self.cache
        fresh = run_and_capture(self.model, self.tensor_tokens(), names)
        self.cache = {**(self.cache or {}), **fresh}
        return self.cache


def _have(cache: dict, pattern: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(k, pattern) for k in cache)


def default_model() -> str:
    from weights import default_model_path

    return str(default_model_path())


def load_source(opts: argparse.Namespace, need_model: bool) -> Source:
    """Load the model and tokenizer (or the export) that the plot kind needs."""
    model = tokenizer = None
    model_path = opts.model
    if opts.from_export is None and opts.kind in CONFIG_ONLY and not need_model:
        # rope and architecture need the configuration only: no tensors are read.
        from weights import read_config

        model_path = model_path or default_model()
        name = opts.name or Path(model_path).name
        return Source(name, read_config(model_path))
    if opts.from_export is None or need_model or opts.model:
        from tokenizer import load_tokenizer
        from weights import load_model

        model_path = model_path or default_model()
        model = load_model(model_path, dtype=opts.dtype)
        try:
            tokenizer = load_tokenizer(opts.tokenizer or model_path)
        except Exception as e:  # noqa: BLE001 - plots still work with "#id" labels
            if opts.tokenizer:
                raise CLIError(f"cannot load tokenizer {opts.tokenizer!r}: {e}") from e
            if not opts.ids and opts.kind in NEEDS_PROMPT and opts.from_export is None:
                raise CLIError(f"no tokenizer found with the model ({e}): pass --tokenizer "
                               "PATH, or token ids with --ids 1,2,3") from e

    name = opts.name or (Path(model_path).name if model_path else "export")
    if opts.from_export is not None:
        return _source_from_export(opts, model, tokenizer, name)

    ids = _prompt_ids(opts, tokenizer) if opts.kind in NEEDS_PROMPT else []
    toks = tokens_from_tokenizer(tokenizer, ids) if tokenizer else tokens_from_pieces(ids, None)
    return Source(name, model.args, model, tokenizer, ids, toks, opts.prompt)


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


def _source_from_export(opts, model, tokenizer, name) -> Source:
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
            args = ModelArgs(**config)
        except (ConfigError, TypeError) as e:
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
    return Source(name, args, model, tokenizer, ids, toks, ctx.get("prompt"), tensors)


# ----------------------------------------------------------------------------------
# One function per kind: Source + options -> Figure (or text).
# ----------------------------------------------------------------------------------


def render(kind: str, src: Source, opts: argparse.Namespace):
    """The figure for `kind` (a matplotlib Figure)."""
    if kind == "summary":
        return plot_summary(model_summary(src.model if src.model is not None else src.args, src.name))
    if kind == "rope":
        return plot_rope(rope_table(src.args, positions=opts.positions), src.name)
    if kind == "architecture":
        return plot_architecture(src.args, src.name)
    if kind == "params":
        if src.param_stats is None:
            src.param_stats = param_stats(src.model)
        return plot_params(src.param_stats, view=opts.view or "stats", name=src.name)
    if kind == "tokens":
        return plot_tokens(src.tokens, src.name, prompt=src.prompt)
    if kind == "topk":
        cache = src.captured(CAPTURE_NAMES["topk"])
        if "logits" not in cache:
            raise CLIError("topk needs the 'logits' intermediate, which this export lacks")
        r = top_k(cache["logits"], k=opts.k, position=opts.position)
        return plot_topk(r, src.tokens, src.decode(), src.name)
    if kind == "saliency":
        s = saliency(src.model, src.tensor_tokens(), position=opts.position, target=opts.target)
        return plot_saliency(s, src.tokens, src.decode(), src.name)

    cache = src.captured(CAPTURE_NAMES[kind])
    L = n_layers_in(cache) or src.args.n_layers
    if kind == "pca":
        view = opts.view or "grid"
        # A trajectory reads best with every stage; a grid with a handful of panels.
        if view == "trajectory" and opts.layers is None:
            stages = list(range(L + 1))
        else:
            stages = parse_stages(opts.layers, L)
        r = pca_stages(cache, stages, dims=opts.dims, view=view, skip_first=opts.skip_first)
        return plot_pca(r, src.tokens, src.name)
    if kind == "attention":
        view = opts.view or ("head" if opts.head is not None else "grid")
        if view == "sink":
            return plot_first_token_share(attention_maps(cache), src.tokens, src.name)
        layer = check_index(opts.layer if opts.layer is not None else 0, L, "layer")
        maps = attention_maps(cache, [layer])
        if view == "head":
            head = opts.head if opts.head is not None else 0
            return plot_attention_head(maps, src.tokens, layer, head, src.name)
        return plot_attention_grid(maps, src.tokens, layer, src.name)
    if kind == "activations":
        return plot_activations(activation_stats(cache), src.tokens, src.name)
    if kind == "lens":
        if src.model is None:
            raise CLIError("lens applies the model's final norm and output matrix: pass --model "
                           "as well as --from")
        return plot_lens(logit_lens(src.model, cache), src.tokens, src.decode(), src.name)
    raise CLIError(f"unknown kind {kind!r}")  # pragma: no cover - argparse checks choices


VIEWS = {
    "pca": ("grid", "trajectory"),
    "attention": ("head", "grid", "sink"),
    "params": PARAM_VIEWS,
}


def check_options(opts: argparse.Namespace) -> None:
    if opts.view is not None:
        allowed = VIEWS.get(opts.kind)
        if allowed is None:
            raise CLIError(f"--view does not apply to {opts.kind} (only to "
                           f"{', '.join(VIEWS)})")
        if opts.view not in allowed:
            raise CLIError(f"--view for {opts.kind} must be one of {', '.join(allowed)}, "
                           f"got {opts.view!r}")
    if opts.from_export is not None and opts.kind in NEEDS_MODEL:
        raise CLIError(f"{opts.kind} needs the model itself (gradients or weights), which an "
                       "export does not hold: run it without --from")
    if opts.k < 1:
        raise CLIError(f"-k must be at least 1, got {opts.k}")
    if opts.positions < 1:
        raise CLIError(f"--positions must be at least 1, got {opts.positions}")


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
    p.add_argument("kind", choices=KINDS, help="what to plot")
    p.add_argument("--prompt", help=f"text to run (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--ids", help="token ids instead of a prompt, e.g. 1,450,7483")
    p.add_argument("--model", help="checkpoint: .gguf file, Hugging Face folder or Meta folder "
                   "(default: the bundled SmolLM2-135M-Instruct Q4_1 GGUF)")
    p.add_argument("--tokenizer", help="tokenizer file or folder if not the one in --model")
    p.add_argument("--from", dest="from_export", metavar="EXPORT",
                   help="plot a capture saved by llama.hooks.save_capture, without a forward pass")
    p.add_argument("-o", "--output", help="output file, .png or .svg (default: KIND.png)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="weights' dtype (default float32)")
    p.add_argument("--name", help="model name in titles (default: the checkpoint's file name)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument("--layer", type=int, help="attention: layer index (negative from the end)")
    p.add_argument("--head", type=int, help="attention: head index (gives the single-head view)")
    p.add_argument("--layers", help="pca: stages to show, e.g. emb,0,5,-1 (default: 6 spread out)")
    p.add_argument("--view", help="pca: grid|trajectory; attention: head|grid|sink; "
                   "params: stats|hist|heatmap")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2, help="pca: 2-D or 3-D")
    p.add_argument("--skip-first", action="store_true",
                   help="pca: leave out the first token (often far from the rest)")
    p.add_argument("--position", type=int, default=-1,
                   help="topk/saliency: position whose next token is shown (default -1, the last)")
    p.add_argument("--target", type=int, help="saliency: token id to explain (default: the top prediction)")
    p.add_argument("-k", type=int, default=10, help="topk: how many tokens (default 10)")
    p.add_argument("--positions", type=int, default=256, help="rope: positions in the cos/sin tables")
    p.add_argument("--text", action="store_true", help="summary: print the summary as plain text "
                   "(and draw only if -o is given)")
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"llama-plot: error: {message}", file=sys.stderr)
        return 2

    try:
        check_options(opts)
        needs_model = opts.kind in NEEDS_MODEL
        src = load_source(opts, needs_model)
        if opts.kind == "summary" and opts.text:
            print(summary_text(model_summary(src.model if src.model is not None else src.args,
                                             src.name)), end="")
            if not opts.output:
                return 0
        fig = render(opts.kind, src, opts)
        out = save_figure(fig, opts.output or f"{opts.kind}.png")
    except (CLIError, PlotError, ConfigError) as e:
        return fail(str(e))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        return fail(str(e))
    except ValueError as e:  # the loaders' and the model's own input errors
        return fail(str(e))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
