"""Hook name -> the source line that computes it (llama.source.hook_source), as a payload
with a few lines around it for the side panel.

The line is found by the library, for any model family (GPT-2's hooks point into
llama/gpt2.py); this module only adds the context lines and serves whole files. A
pattern (layers.*.attention.probs) is located at layer 0: every block runs the same line.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

from llama.source import ROOT, display_path, hook_source

CONTEXT_LINES = 6  # lines shown above and below the computing line in the side panel


def concrete(pattern: str) -> str:
    """A representative name for a glob pattern: layers.*.attention.probs -> layers.0..."""
    return re.sub(r"\*", "0", pattern)


def line_payload(line, hook: str | None = None) -> dict:
    """A llama.source.SourceLine as {"hook", "path", "line", "end_line", "function",
    "text", "context": {"start", "lines"}}."""
    out = {"hook": hook, "path": line.path, "line": line.lineno, "end_line": line.end_lineno,
           "function": line.function, "text": line.text}
    file = Path(line.path) if Path(line.path).is_absolute() else ROOT / line.path
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    lo = max(1, line.lineno - CONTEXT_LINES)
    hi = min(len(lines), line.end_lineno + CONTEXT_LINES)
    out["context"] = {"start": lo, "lines": lines[lo - 1 : hi]}
    return out


def locate(model, pattern: str) -> dict:
    """The payload of the line computing hook `pattern`; {"hook", "error"} when the source
    has no such tap (the view still works, the panel says why)."""
    try:
        return line_payload(hook_source(concrete(pattern), model), pattern)
    except Exception as e:  # noqa: BLE001 - a missing line must never break a view
        return {"hook": pattern, "error": f"no source line found for {pattern}: {e}"}


def locate_all(model, patterns) -> list[dict]:
    return [locate(model, p) for p in patterns]


def source_file(model, path: str) -> dict:
    """The whole text of a source file a view points at, for the side panel's "whole
    file" button. Only files that hold a class of the model are served, never an
    arbitrary path."""
    allowed = {}
    for mod in model.modules():
        f = inspect.getsourcefile(sys.modules[type(mod).__module__])
        if f:
            allowed[display_path(Path(f))] = Path(f)
    if path not in allowed:
        raise KeyError(
            f"{path!r} is not a source file of this model; files: {', '.join(sorted(allowed))}"
        )
    return {"path": path, "lines": allowed[path].read_text(encoding="utf-8").splitlines()}


__all__ = ["CONTEXT_LINES", "concrete", "line_payload", "locate", "locate_all", "source_file"]
