"""llama-repl: type text, see its tokens and the model's next-token distribution.

    llama-repl                                   # the embedded SmolLM2-135M-Instruct, offline
    llama-repl --model path/to/checkpoint --dtype bfloat16 --device cuda --show 5
    echo "The capital of France is" | llama-repl # scripted: the same table, no colours
    llama-repl --nproc-per-node 2 --model PATH  # split over 2 processes (scripts/repl_parallel.py)

At the prompt, a line of text replaces the current text; its tokens and the top-k next
tokens are printed:

    tokens (5): 'The' 504 | ' capital' 3575 | ' of' 282 | ' France' 4649 | ' is' 314
       1. ' Paris'    0.7725 ██████████  #7042
       2. ' the'      0.0645 ▉           #260

Lines that start with ':' are commands (`:help` lists them): generate, pick a candidate,
sampling settings, chat template, logit lens, plots, export, reset, quit. docs/REPL.md
walks through a session.

This file is the terminal front end only: it parses lines, prints and colours. What
happens to the text, its tokens and its KV cache is llama.session.Session's (a new line
that extends the current tokens runs only the new ones, `:pick` and each generated token
cost one decode step, an edit rewinds the cache to the common prefix). Ctrl-C stops a
generation (or a long prefill) and returns to the prompt with the cache matching the
tokens shown; Ctrl-D (or :quit) exits.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import torch

from llama.checks import check_index
from llama.generate import GenerationError, check_sampling_args
from llama.session import DEFAULT_SHOW, SETTING_NAMES, Change, Session, Settings, Table, TextTooLong

from .loading import LoadError, add_model_options, banner, load, positive_int
from .terminal import ask_yes_no, run_interactive, run_piped

SHOWN_TOKENS = 64  # the token view shows at most this many (the last ones)
BAR_WIDTH = 10


class ReplError(Exception):
    """A mistake in a command or its arguments: printed, and the REPL goes on."""


class Style:
    """ANSI colours when writing to a terminal; plain text otherwise (pipes, NO_COLOR)."""

    CODES = {"piece": "1;36", "id": "2", "bar": "32", "gen": "33", "err": "1;31", "dim": "2", "head": "1"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, kind: str, text: str) -> str:
        if not self.enabled or not text:
            return text
        return f"\x1b[{self.CODES[kind]}m{text}\x1b[0m"


def show_piece(piece: str) -> str:
    """A token piece as a quoted Python literal: spaces visible, newlines escaped."""
    return repr(piece)


def bar(prob: float, top: float, width: int = BAR_WIDTH) -> str:
    """A bar scaled so the most probable candidate fills `width`, in eighths of a block."""
    if top <= 0:
        return ""
    eighths = round(8 * width * prob / top)
    full, part = divmod(eighths, 8)
    return "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")


HELP = """\
Type text to see its tokens and the next-token candidates. Commands:
  :gen [N]             generate N tokens (default: the 'gen' setting), streamed; Ctrl-C stops
  :pick K              append the K-th candidate of the table and continue from it
  :add TEXT            append TEXT to the current text (a plain line replaces it)
  :text TEXT           set the text to TEXT exactly (e.g. text that starts with ':')
  :back [N]            remove the last N tokens (default 1)
  :tokens              show the current tokens (pieces with ids) and the table again
  :set [NAME VALUE]    show or change a setting: temperature (0 = greedy), top_k, top_p,
                       seed (a number or 'random'), show (table rows), gen (default N)
  :chat [on|off]       wrap typed text in the model's chat template (instruct models)
  :lens                logit lens: each layer's best guess for the next token
  :attn [L] [H] [FILE] save an attention heatmap of layer L (head H, or all heads) as PNG
  :pca [FILE]          save a PCA plot of the residual stream of the current text as PNG
  :export [FILE] [NAMES...]  save the activations of the current text (.safetensors);
                       NAMES are hook names or globs, e.g. 'layers.*.resid_post'
  :truncate            keep the last tokens of a text that did not fit the context
  :verify              recompute the whole text without the cache and compare
  :reset               forget the text and empty the KV cache
  :help                this list
  :quit                exit (Ctrl-D works too)"""

COMMANDS = tuple(re.findall(r"^  :(\w+)", HELP, re.M))  # gen, pick, add, ... as :help lists them
ALIASES = {"g": "gen", "p": "pick", "h": "help", "?": "help", "q": "quit", "exit": "quit"}


class Repl:
    """Lines in, text out: the terminal front end of one llama.session.Session."""

    def __init__(self, model: torch.nn.Module, tokenizer, settings: Settings | None = None,
                 out: TextIO = sys.stdout, color: bool = False, interactive: bool = False,
                 name: str = "model", checkpoint: str | None = None,
                 confirm: Callable[[str], bool] | None = None,
                 stop: Callable[[], bool] | None = None,
                 fatal: tuple[type[BaseException], ...] = ()) -> None:
        self.session = Session(model, tokenizer, settings, name=name, checkpoint=checkpoint)
        self.tok = tokenizer
        self.out = out
        self.style = Style(color)
        self.interactive = interactive
        self.confirm = confirm  # asks a yes/no question (interactive only)
        self.stop = stop  # asked after each generated token: True ends the generation there
        self.fatal = fatal  # errors that end the REPL instead of being printed

    # The session's state, for code (and tests) that drive a Repl.
    ids = property(lambda self: self.session.ids)
    logits = property(lambda self: self.session.logits)
    ctx = property(lambda self: self.session.ctx)
    settings = property(lambda self: self.session.settings)
    candidates = property(lambda self: list(self.session.table.rows) if self.session.table else [])

    # -- output -----------------------------------------------------------------------
    def write(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, message: str) -> None:
        self.write(self.style("err", "error: ") + message)

    def show_tokens(self, start: int = 0) -> None:
        s, n = self.style, len(self.session.ids)
        tokens = self.session.tokens(start)
        skipped = ""
        if len(tokens) > SHOWN_TOKENS:
            skipped = f"... ({len(tokens) - SHOWN_TOKENS} earlier) | "
            tokens = tokens[-SHOWN_TOKENS:]
        view = " | ".join(f"{s('piece', show_piece(t.piece))} {s('id', str(t.id))}" for t in tokens)
        label = f"tokens ({n})" if start == 0 else f"+{n - start} tokens ({n})"
        self.write(f"{s('head', label)}: {skipped}{view}")

    def show_table(self, table: Table) -> None:
        pieces = [show_piece(r.piece) for r in table.rows]
        width = min(24, max(len(p) for p in pieces))
        top = table.rows[0].prob
        for r, p in zip(table.rows, pieces):
            b = bar(r.prob, top)
            b += " " * (BAR_WIDTH + 1 - len(b))  # a fixed-width column, so the ids line up
            self.write(f"{r.rank:>4}. {self.style('piece', p)}{' ' * max(0, width - len(p))}  "
                       f"{r.prob:.4f} {self.style('bar', b)} {self.style('id', f'#{r.id}')}")

    def show(self, change: Change, start: int | None = None) -> None:
        """Tokens from `start` (None: no tokens), then the table."""
        if start is not None:
            self.show_tokens(start)
        self.show_table(change.table)

    # -- one input line ---------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Process one line; False when the user asked to quit."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return True
        try:
            if line.startswith(":"):
                return self.command(line[1:])
            self.show(self.session.set_text(line), 0)
        except KeyboardInterrupt:
            self.write(self.style("dim", "[interrupted]"))
            if self.session.ids:
                self.write(self.style("dim", f"[text unchanged: {len(self.session.ids)} tokens]"))
        except TextTooLong as e:
            self.write(f"The text is {e.n_tokens} tokens, but the model's context holds {e.limit}. "
                       f"Shorten it, or keep only its last {e.limit} tokens with :truncate.")
            if self.interactive and self.confirm is not None and self.confirm(f"Keep the last {e.limit} tokens? [y/N] "):
                self.cmd_truncate([], "")
        except self.fatal:
            raise
        except (ReplError, ValueError, OSError) as e:  # session, tokenizer, hooks and plots errors are ValueErrors
            self.error(str(e))
        except RuntimeError as e:  # e.g. out of memory on a long text: report, keep going
            self.error(f"{type(e).__name__}: {e}")
        return True

    def command(self, text: str) -> bool:
        stripped = text.lstrip()
        if not stripped:
            raise ReplError("an empty command; :help lists the commands")
        word = stripped.split(None, 1)[0]
        name = ALIASES.get(word.lower(), word.lower())
        if name not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(name, COMMANDS, n=1)
            hint = f" Did you mean :{close[0]}?" if close else ""
            raise ReplError(f"unknown command ':{name}'.{hint} :help lists the commands")
        # The raw text after the command word and one space, for :add/:text, where quotes
        # are text and leading spaces matter (":add  and" appends " and").
        after = stripped[len(word) :]
        rest = after[1:] if after[:1] in (" ", "\t") else after
        try:
            args = [] if name in ("add", "text") else shlex.split(rest)
        except ValueError as e:
            raise ReplError(f"cannot parse the arguments ({e}); quote file names with spaces") from None
        if name == "quit":
            return False
        getattr(self, f"cmd_{name}")(args, rest)
        return True

    # -- commands ----------------------------------------------------------------------
    def cmd_help(self, args, rest) -> None:
        self.write(HELP)

    def cmd_tokens(self, args, rest) -> None:
        self.session.require_text()
        self.show_tokens()
        self.show_table(self.session.table)

    def cmd_text(self, args, rest) -> None:
        if not rest:
            raise ReplError(":text needs the text, e.g. :text :) is a smiley")
        self.show(self.session.set_text(rest), 0)

    def cmd_add(self, args, rest) -> None:
        if not rest:
            raise ReplError(":add needs the text to append, e.g. :add  and Berlin")
        change = self.session.extend(rest)
        self.show(change, change.kept)

    def cmd_back(self, args, rest) -> None:
        self.session.require_text()
        n, total = _int_arg(args, 1, "back", minimum=1), len(self.session.ids)
        if n >= total:
            raise ReplError(f"the text has {total} tokens: :back can remove at most {total - 1} (or :reset)")
        self.write(self.style("dim", f"[removing {n}; {total - n} tokens left]"))
        self.show(self.session.back(n))

    def cmd_pick(self, args, rest) -> None:
        self.session.require_text()
        if len(args) != 1:
            raise ReplError(":pick needs one number, the rank in the table, e.g. :pick 2")
        k, n = _int_arg(args, None, "pick", minimum=1), len(self.candidates)
        if k > n:
            raise ReplError(f"the table has {n} candidates; pick 1..{n} (or :set show N)")
        change = self.session.pick(k)
        self.show(change, change.kept)

    def cmd_set(self, args, rest) -> None:
        if not args:
            self.write(self.settings.describe())
            return
        if len(args) != 2:
            raise ReplError(f":set needs a name and a value, e.g. :set temperature 0.8 (names: {', '.join(SETTING_NAMES)})")
        if self.session.set(args[0], args[1]) == "show" and self.session.table is not None:
            self.show_table(self.session.table)
        else:
            self.write(self.settings.describe())

    def cmd_chat(self, args, rest) -> None:
        if args and args[0].lower() not in ("on", "off"):
            raise ReplError(":chat takes 'on' or 'off' (or nothing, to toggle)")
        on = self.session.set_chat(args[0].lower() == "on" if args else None)
        self.write(f"chat template {'on: typed text becomes a user message' if on else 'off: typed text is used as is'}")

    def cmd_reset(self, args, rest) -> None:
        self.session.reset()
        self.write("reset: no text, empty KV cache")

    def cmd_truncate(self, args, rest) -> None:
        if self.session.pending is None:
            raise ReplError("nothing to truncate: :truncate applies to the last text that did not fit the context")
        change = self.session.truncate()
        self.write(f"[kept the last {change.n_tokens} tokens]")
        self.show(change, 0)

    def cmd_gen(self, args, rest) -> None:
        s = self.session
        s.require_text()
        n = _int_arg(args, s.settings.max_new_tokens, "gen", minimum=1)
        if len(s.ids) >= s.max_len:
            raise ReplError(f"the context is full ({s.max_len} tokens): :back N to make room")
        run = s.generate(n, stop=self.stop)
        color_on, color_off = (self.style("gen", "x").split("x") if self.style.enabled else ("", ""))
        self.out.write(color_on)
        try:
            for step in run:
                if step.text:
                    self.out.write(step.text)  # streamed as it comes
                    self.out.flush()
        except KeyboardInterrupt:  # arrived while printing: the generation adds what it made
            run.close("interrupted")
        finally:
            self.out.write(color_off)
        r = run.result
        self.write("")
        mode = "greedy" if r.seed is None else f"sampled, seed {r.seed}"
        reason = f"stop token {show_piece(self.tok.id_to_piece(r.stop_token))}" if r.stop_token is not None else r.reason
        rate = f", {len(r.new_ids) / r.elapsed_s:.1f} tokens/s" if r.new_ids and r.elapsed_s > 0 else ""
        self.write(self.style("dim", f"[{len(r.new_ids)} tokens, {mode}, stopped: {reason}{rate}]"))
        if r.new_ids and r.change is None:  # Ctrl-C while adding them: the text is as before
            self.write(self.style("dim", "[interrupted: the generated tokens were not added]"))
        elif r.change is not None:
            self.show(r.change, r.change.kept)

    def cmd_verify(self, args, rest) -> None:
        v = self.session.verify()
        self.write(
            f"KV cache {'OK' if v.ok else 'MISMATCH'}: {v.n_tokens} tokens; cached and from-scratch "
            f"logits differ by at most {v.max_abs_diff:.2e}; same top-1: {v.same_top1}"
        )

    def cmd_lens(self, args, rest) -> None:
        report = self.session.lens()
        self.write(f"logit lens after {show_piece(report.token.piece)} (position {report.position}): "
                   "final norm + output applied to the residual stream")
        for stage in report.stages:
            best = "  ".join(f"{self.style('piece', show_piece(r.piece))} {r.prob:.3f}" for r in stage.candidates)
            self.write(f"  {stage.label:<11} {best}")

    def _draw(self, view, path: Path) -> None:
        try:
            import llama.plots as plots
        except ImportError as e:
            raise ReplError(f"plotting is not available ({e}); install matplotlib") from None
        self.write(f"saved {plots.save_figure(plots.draw(view), path)}")

    def cmd_attn(self, args, rest) -> None:
        self.session.require_text()
        nums = [a for a in args if a.lstrip("-").isdigit()]
        files = [a for a in args if not a.lstrip("-").isdigit()]
        if len(nums) > 2 or len(files) > 1:
            raise ReplError("usage: :attn [LAYER] [HEAD] [FILE.png]")
        a = self.session.model.args
        layer = _index_arg(nums[0] if nums else "0", a.n_layers, "layer")
        head = _index_arg(nums[1], a.n_heads, "head") if len(nums) > 1 else None
        path = _png_path(files[0] if files else f"attention_layer{layer}" + (f"_head{head}" if head is not None else "") + ".png")
        self._draw(self.session.view("attention", layer=layer, head=head), path)

    def cmd_pca(self, args, rest) -> None:
        self.session.require_text()
        if len(args) > 1:
            raise ReplError("usage: :pca [FILE.png]")
        if len(self.session.ids) < 2:
            raise ReplError("a PCA plot needs at least 2 tokens")
        self._draw(self.session.view("pca"), _png_path(args[0] if args else "pca.png"))

    def cmd_export(self, args, rest) -> None:
        e = self.session.export(args[0] if args else "activations.safetensors", args[1:] or None)
        self.write(f"saved {e.n_tensors} tensors ({e.n_bytes / 1e6:.1f} MB) for {e.n_tokens} tokens to {e.path}")


def _int_arg(args: list[str], default: int | None, cmd: str, minimum: int) -> int:
    if not args:
        if default is None:
            raise ReplError(f":{cmd} needs a number")
        return default
    if len(args) > 1:
        raise ReplError(f":{cmd} takes one number, got {' '.join(args)!r}")
    try:
        n = int(args[0])
    except ValueError:
        raise ReplError(f":{cmd} needs a whole number, got {args[0]!r}") from None
    if n < minimum:
        raise ReplError(f":{cmd} needs a number >= {minimum}, got {n}")
    return n


def _index_arg(text: str, size: int, what: str) -> int:
    """A layer or head the user typed, checked by llama.checks, in the REPL's words."""
    try:
        return check_index(int(text), size, what)
    except ValueError:
        raise ReplError(f"{what} must be in 0..{size - 1} (or -1 for the last), got {text}") from None


def _png_path(name: str) -> Path:
    p = Path(name).expanduser()
    if p.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ReplError(f"the plot file must end in .png, .svg or .pdf, got {name!r}")
    return p


# ----------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-repl",
        description="Type text; see its tokens and the model's next-token candidates. "
        "':help' at the prompt lists the commands. Reads lines from a pipe too.",
    )
    add_model_options(p)
    p.add_argument("--show", type=positive_int, default=None, metavar="N", help=f"rows of the next-token table (default {DEFAULT_SHOW}); the sampling filter is ':set top_k'")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="N", help="deprecated: the old name of --show")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature for :gen (default 0 = greedy)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold for :gen")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (each :gen starts from it)")
    p.add_argument("--chat", action="store_true", help="start with the chat template on")
    p.add_argument("--no-color", action="store_true", help="no colours even on a terminal (NO_COLOR works too)")
    p.add_argument("--nproc-per-node", type=positive_int, default=None, metavar="N",
                   help="split the model over N processes on this machine (tensor parallelism: "
                   "starts torchrun; Ctrl-C stops a generation on every rank). See docs/PARALLEL.md")
    return p


def start(args: argparse.Namespace, out: TextIO, err: TextIO, interactive: bool, color: bool,
          confirm: Callable[[str], bool] | None, repl_class: type[Repl] = Repl,
          **options) -> tuple[Repl, str] | int:
    """Load the model the options name and make its Repl: (repl, banner line), or an exit
    status after printing why not to `err`. options: more Repl arguments (stop, fatal)."""
    t0 = time.perf_counter()
    try:
        model, tok, path = load(args)
    except LoadError as e:
        print(f"llama-repl: {e}", file=err)
        return 2
    except KeyboardInterrupt:
        print("llama-repl: interrupted while loading", file=err)
        return 130
    load_s = time.perf_counter() - t0

    if args.top_k is not None:
        print("llama-repl: --top-k is deprecated: use --show N for the rows of the table "
              "(the sampling filter is ':set top_k N')", file=err)
    show = args.show or args.top_k or DEFAULT_SHOW
    settings = Settings(temperature=args.temperature, top_p=args.top_p, seed=args.seed, show=show, chat=args.chat)
    if settings.chat and not tok.has_chat_template:
        print("llama-repl: --chat: this tokenizer has no chat template", file=err)
        return 2
    repl = repl_class(
        model, tok, settings, out=out, color=color, interactive=interactive,
        name=path.name, checkpoint=str(path), confirm=confirm, **options,
    )
    return repl, banner(model, path, load_s)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_sampling_args(args.temperature, None, args.top_p)
    except GenerationError as e:
        parser.error(str(e))
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")

    # Several processes (scripts/repl_parallel.py): inside torchrun, or starting it.
    from . import repl_parallel

    if repl_parallel.under_torchrun():
        return repl_parallel.run_rank(args)
    if args.nproc_per_node is not None and args.nproc_per_node > 1:
        return repl_parallel.launch(args.nproc_per_node, sys.argv[1:] if argv is None else list(argv))

    interactive = sys.stdin.isatty()
    color = sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR")
    made = start(args, sys.stdout, sys.stderr, interactive, color, ask_yes_no if interactive else None)
    if isinstance(made, int):
        return made
    session, info = made
    if interactive:
        print(info)
        print(WELCOME)
        return run_interactive(session.handle, prompt_for(session), COMMANDS)
    print(info, file=sys.stderr)  # keep stdout to the tables, for scripts
    return run_piped(session.handle, sys.stdin)


def prompt_for(repl: Repl) -> Callable[[], str]:
    return lambda: "chat> " if repl.settings.chat else "> "


WELCOME = "Type text to see the next-token candidates; :help lists the commands, Ctrl-D exits."


if __name__ == "__main__":
    sys.exit(main())
