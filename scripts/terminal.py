"""The terminal side of llama-repl: a line-reading loop for a terminal or a pipe (line
editing, history, Tab completion of :commands with readline where Python has it, Ctrl-C
and Ctrl-D handled as a shell does), colours, how a token piece and a probability bar are
written, and reading the words of a command (numbers, layers, heads, file names,
NAME=VALUE) with the REPL's error messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from llama.checks import check_index

Handler = Callable[[str], bool]  # one line in; False to stop
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


# -- the words of a command --------------------------------------------------------------


def int_arg(args: list[str], default: int | None, cmd: str, minimum: int) -> int:
    """The one number of `:cmd N` (default when none is given)."""
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


def is_int(word: str) -> bool:
    return word.lstrip("-").isdigit()


def index_arg(text: str, size: int, what: str) -> int:
    """A layer or head the user typed, checked by llama.checks, in the REPL's words."""
    try:
        return check_index(int(text), size, what)
    except ValueError:
        raise ReplError(f"{what} must be in 0..{size - 1} (or -1 for the last), got {text}") from None


def png_path(name: str) -> Path:
    p = Path(name).expanduser()
    if p.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ReplError(f"the plot file must end in .png, .svg or .pdf, got {name!r}")
    return p


def keywords(args: list[str], names: Sequence[str], usage: str) -> tuple[list[str], dict[str, str]]:
    """Split NAME=VALUE words (NAME one of `names`) from the others: (others, {name: value}).
    The value is everything after the first '=', spaces kept (answer=" Paris")."""
    rest, found = [], {}
    for word in args:
        name, eq, value = word.partition("=")
        if not eq:
            rest.append(word)
        elif name in names:
            found[name] = value
        else:
            raise ReplError(f"unknown option {name}=...; {usage}")
    return rest, found


def history_path() -> Path | None:
    """LLAMA_REPL_HISTORY (empty = no history), else ~/.cache/llama-from-scratch/repl_history."""
    env = os.environ.get("LLAMA_REPL_HISTORY")
    if env is not None:
        return Path(env).expanduser() if env else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llama-from-scratch" / "repl_history"


def setup_readline(path: Path | None, commands: Sequence[str] = ()):
    """Line editing, history and :command completion; None if readline is unavailable."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: plain input() still works
        return None
    if path is not None:
        try:
            readline.read_history_file(path)
        except (OSError, ValueError):
            pass  # first run, or an unreadable file: start with no history
    readline.set_history_length(1000)

    def complete(text: str, state: int):
        line = readline.get_line_buffer()
        if not line.startswith(":") or " " in line:
            return None
        matches = [":" + c for c in commands if (":" + c).startswith(text or ":")]
        return matches[state] if state < len(matches) else None

    readline.set_completer_delims(" \t\n")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    return readline


def save_history(readline, path: Path | None) -> None:
    if readline is None or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass  # a read-only home must not spoil the exit


def ask_yes_no(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        print()
        return False


def run_interactive(handle: Handler, prompt: Callable[[], str], commands: Iterable[str] = ()) -> int:
    path = history_path()
    rl = setup_readline(path, tuple(commands))
    try:
        while True:
            try:
                line = input(prompt())
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, like Python's
                print("^C")
                continue
            except EOFError:  # Ctrl-D
                print()
                return 0
            if not handle(line):
                return 0
    finally:
        save_history(rl, path)


def run_piped(handle: Handler, stdin: TextIO) -> int:
    for line in stdin:
        if not handle(line):
            break
    return 0


__all__ = ["history_path", "setup_readline", "save_history", "ask_yes_no", "run_interactive",
           "run_piped", "BAR_WIDTH", "ReplError", "Style", "show_piece", "bar", "int_arg", "is_int",
           "index_arg", "png_path", "keywords"]
