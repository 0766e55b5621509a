"""Hook name -> the source line that computes it, with a few lines around it.

STOPGAP (issue 13): this wraps `llama.explain.SourceMap`, today the only source locator.
When the public locator split out of llama/explain.py lands, `locate` calls it instead;
its payload (see docs/STUDIO.md, "sources") stays the same.

Generic over model families: the class that taps a name is found on the live model
(`model.get_submodule("layers.3.attention")` -> its class, whose file is parsed), so a
GPT-2 model's hooks point into llama/gpt2.py without a table of class names here.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from pathlib import Path

CONTEXT_LINES = 6  # lines shown above and below the computing line in the side panel


def concrete(pattern: str) -> str:
    """A representative name for a glob pattern: layers.*.attention.probs -> layers.0..."""
    return re.sub(r"\*", "0", pattern)


@functools.lru_cache(maxsize=16)
def _source_map(file: str):
    from llama.explain import SourceMap, display_path

    text = Path(file).read_text(encoding="utf-8")
    return SourceMap(text, display_path(Path(file))), text.splitlines()


def _owner(model, name: str):
    """(module instance, local tap name) for a full hook name."""
    prefix, _, local = name.rpartition(".")
    module = model.get_submodule(prefix) if prefix else model
    return module, local


def locate(model, pattern: str) -> dict:
    """{"hook", "path", "line", "end_line", "function", "text", "context"} for a hook
    name or glob pattern; {"hook", "error"} when the source cannot be found (an edited
    model.py without that tap): the view still works, the panel says why."""
    name = concrete(pattern)
    try:
        module, local = _owner(model, name)
        cls = type(module)
        file = inspect.getsourcefile(sys.modules[cls.__module__])
        smap, lines = _source_map(str(Path(file).resolve()))
        line = smap.tap(cls.__name__, local)
    except Exception as e:  # noqa: BLE001 - a missing line must never break a view
        return {"hook": pattern, "error": f"no source line found for {pattern}: {e}"}
    lo = max(1, line.lineno - CONTEXT_LINES)
    hi = min(len(lines), line.end_lineno + CONTEXT_LINES)
    return {
        "hook": pattern,
        "path": line.path,
        "line": line.lineno,
        "end_line": line.end_lineno,
        "function": line.function,
        "text": line.text,
        "context": {"start": lo, "lines": lines[lo - 1 : hi]},
    }


def locate_all(model, patterns) -> list[dict]:
    return [locate(model, p) for p in patterns]


def source_line_payload(line) -> dict:
    """A llama.explain SourceLine (the walkthrough's) as the same payload shape."""
    out = {"hook": None, "path": line.path, "line": line.lineno, "end_line": line.end_lineno,
           "function": line.function, "text": line.text}
    try:
        root = Path(sys.modules["llama"].__file__).resolve().parent.parent
        file = Path(line.path) if Path(line.path).is_absolute() else root / line.path
        lines = file.read_text(encoding="utf-8").splitlines()
        lo = max(1, line.lineno - CONTEXT_LINES)
        hi = min(len(lines), line.end_lineno + CONTEXT_LINES)
        out["context"] = {"start": lo, "lines": lines[lo - 1 : hi]}
    except OSError:
        pass
    return out


def source_file(model, path: str) -> dict:
    """The whole text of a source file a view points at, for the side panel's "whole
    file" button. Only files that hold a class of the model (or the tokenizer's) are
    served, never an arbitrary path."""
    allowed = {}
    for mod in model.modules():
        f = inspect.getsourcefile(sys.modules[type(mod).__module__])
        if f:
            from llama.explain import display_path

            allowed[display_path(Path(f))] = Path(f)
    if path not in allowed:
        raise KeyError(
            f"{path!r} is not a source file of this model; files: {', '.join(sorted(allowed))}"
        )
    return {"path": path, "lines": allowed[path].read_text(encoding="utf-8").splitlines()}
