"""A line-reading loop for a terminal or a pipe: line editing, history, Tab completion of
:commands (readline where Python has it), Ctrl-C and Ctrl-D handled as a shell does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

Handler = Callable[[str], bool]  # one line in; False to stop


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
           "run_piped"]
