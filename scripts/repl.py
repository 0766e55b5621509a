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
sampling settings, chat template, logit lens, plots, export, the experiments of
llama.interp (ablate, patch, dla, steer), reset, quit. docs/REPL.md walks through a session.

This is the terminal front end only: this file reads a line, dispatches it, prints tables
and holds the settings, help and command line; the commands that change the text are in
repl_text.py, those that look inside the model in repl_inspect.py, and colours, line
editing and the words of a command in terminal.py. What
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
from typing import Callable, TextIO

import torch

from llama.generate import GenerationError, check_sampling_args
from llama.session import DEFAULT_SHOW, SETTING_NAMES, Change, Session, Settings, Table, TextTooLong

from . import repl_inspect, repl_text
from .loading import LoadError, add_model_options, banner, load, positive_int  # noqa: F401 - load: tests
from .repl_inspect import InspectCommands
from .repl_text import TextCommands
from .terminal import (BAR_WIDTH, ReplError, Style, ask_yes_no, bar,  # noqa: F401 - bar: for tests
                       run_interactive, run_piped, show_piece)

SHOWN_TOKENS = 64  # the token view shows at most this many (the last ones)


HELP = f"""\
Type text to see its tokens and the next-token candidates. Commands:
{repl_text.HELP}
  :set [NAME VALUE]    show or change a setting: temperature (0 = greedy), top_k, top_p,
                       seed (a number or 'random'), show (table rows), gen (default N)
  :chat [on|off]       wrap typed text in the model's chat template (instruct models)
{repl_inspect.HELP}
{repl_text.HELP_END}
  :help                this list
  :quit                exit (Ctrl-D works too)"""

COMMANDS = tuple(re.findall(r"^  :(\w+)", HELP, re.M))  # gen, pick, add, ... as :help lists them
ALIASES = {"g": "gen", "p": "pick", "h": "help", "?": "help", "q": "quit", "exit": "quit"}


class Repl(TextCommands, InspectCommands):
    """Lines in, text out: the terminal front end of one llama.session.Session. The commands
    that change the text are scripts/repl_text.py's, those that look inside the model
    (:lens, :attn, ... :patch, :steer) scripts/repl_inspect.py's; settings and help are here."""

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
