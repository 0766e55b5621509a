"""Where in the source a value is computed: the file:line a learner sets a breakpoint on.

    hook_source("layers.3.attention.probs", model)   # SourceLine: llama/model.py:272,
                                                     # probs = self.tap("probs", F.softmax(...))
    SourceMap.of(llama.model).tap("Attention", "q")  # the line that computes q
    source_of(tokenizer.encode)                      # the def line of any function

Line numbers are never written down by hand: `SourceMap` parses a module with `ast` and
finds statements by meaning, mostly from the ``self.tap("name", value)`` call sites, so
every answer follows edits of the source. `hook_source` works for any model family whose
modules are Tappable (llama/taps.py): it finds the class that taps the hook point and looks
in that class's own module (llama/model.py, llama/gpt2.py, ...). llama-explain prints
these lines; the studio shows one next to each view.
"""

from __future__ import annotations

import ast
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import model as model_module
from .taps import Tappable, hook_point

ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the llama package


class SourceLocatorError(LookupError):
    """The source no longer has the function, variable or tap a stage points at."""


@dataclass(frozen=True)
class SourceLine:
    """One statement of a source file: where it is and what it says."""

    path: str  # as printed: relative to the repository root, e.g. "llama/model.py"
    lineno: int  # first line of the statement (1-based), where a breakpoint goes
    end_lineno: int  # last line (a statement may span several)
    text: str  # the statement's source, lines joined, whitespace collapsed
    function: str  # qualified name of the enclosing function, e.g. "Attention.forward"

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}"


# Statements that do one thing (no nested body): the unit a breakpoint stops on.
_SIMPLE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)


class SourceMap:
    """Finds statements of a Python module by meaning rather than by line number.

    Built from source text, so tests can check that it follows edits (an inserted line
    shifts every answer by one). `SourceMap.of(module)` reads a module's own file.
    """

    def __init__(self, source: str, path: str = "llama/model.py") -> None:
        self.source = source
        self.path = path
        self._lines = source.splitlines()
        self._tree = ast.parse(source)
        # Qualified name ("Attention.forward", "causal_mask") -> function node.
        self._functions: dict[str, ast.FunctionDef] = {}
        for node in self._tree.body:
            if isinstance(node, ast.FunctionDef):
                self._functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self._functions[f"{node.name}.{item.name}"] = item

    @classmethod
    def of(cls, module=model_module) -> "SourceMap":
        """The map of a module's source file, with the path shown relative to the repo."""
        file = Path(inspect.getsourcefile(module)).resolve()
        return cls(file.read_text(encoding="utf-8"), display_path(file))

    # -- queries ----------------------------------------------------------------------
    def function(self, qualname: str) -> SourceLine:
        """The `def` line of a function or method."""
        return self._line(self._function(qualname), qualname)

    def tap(self, cls_name: str, local_name: str) -> SourceLine:
        """The line that computes the value passed to ``self.tap(local_name, value)``.

        If `value` is an expression (``self.tap("gate", self.w1(x))``) that is the tap's own
        line. If it is a plain variable (``self.tap("q", q)``), the value was computed by the
        last assignment to that variable before the tap's statement, in the same function
        (``q = self.wq(x).view(...)``): that is the line to stop on. A variable that is
        never assigned (a parameter) falls back to the tap's line.
        """
        hits = []
        for qualname, func in self._functions.items():
            if not qualname.startswith(f"{cls_name}."):
                continue
            for stmt in _simple_statements(func):
                for node in ast.walk(stmt):
                    if _is_tap_call(node, local_name):
                        hits.append((qualname, func, stmt, node.args[1]))
        if not hits:
            raise SourceLocatorError(
                f"no self.tap({local_name!r}, ...) call in class {cls_name} of {self.path}: "
                "was the hook point renamed? Update the stage list in llama/explain.py."
            )
        if len(hits) > 1:
            lines = ", ".join(str(s.lineno) for _, _, s, _ in hits)
            raise SourceLocatorError(
                f"{cls_name} taps {local_name!r} more than once ({self.path} lines {lines}); "
                "a hook name must be tapped in exactly one place."
            )
        qualname, func, stmt, value = hits[0]
        if isinstance(value, ast.Name):
            assigned = self._last_assignment(func, value.id, before=stmt.lineno)
            if assigned is not None:
                return self._line(assigned, qualname)
        return self._line(stmt, qualname)

    def assignment(self, qualname: str, var: str, which: str = "last") -> SourceLine:
        """The first or last statement in a function that assigns `var`."""
        func = self._function(qualname)
        stmts = [s for s in _simple_statements(func) if var in _assigned_names(s)]
        if not stmts:
            raise SourceLocatorError(f"{qualname} in {self.path} never assigns {var!r}")
        return self._line(stmts[0] if which == "first" else stmts[-1], qualname)

    def call(self, qualname: str, callee: str) -> SourceLine:
        """The first statement in a function that calls `callee` (``callee(...)`` or
        ``anything.callee(...)``)."""
        func = self._function(qualname)
        for stmt in _simple_statements(func):
            if any(_calls(node, callee) for node in ast.walk(stmt)):
                return self._line(stmt, qualname)
        raise SourceLocatorError(f"{qualname} in {self.path} never calls {callee}()")

    def matmul(self, qualname: str, left: str) -> SourceLine:
        """The first statement in a function that computes ``left @ ...``."""
        func = self._function(qualname)
        for stmt in _simple_statements(func):
            for node in ast.walk(stmt):
                if (
                    isinstance(node, ast.BinOp)
                    and isinstance(node.op, ast.MatMult)
                    and isinstance(node.left, ast.Name)
                    and node.left.id == left
                ):
                    return self._line(stmt, qualname)
        raise SourceLocatorError(f"{qualname} in {self.path} never computes {left} @ ...")

    # -- helpers ------------------------------------------------------------------------
    def _function(self, qualname: str) -> ast.FunctionDef:
        try:
            return self._functions[qualname]
        except KeyError:
            raise SourceLocatorError(
                f"{self.path} has no function {qualname}; known: "
                f"{', '.join(sorted(self._functions))}"
            ) from None

    def _last_assignment(self, func: ast.FunctionDef, var: str, before: int) -> ast.stmt | None:
        found = None
        for stmt in _simple_statements(func):
            if stmt.lineno < before and var in _assigned_names(stmt):
                if found is None or stmt.lineno > found.lineno:
                    found = stmt
        return found

    def _line(self, node: ast.AST, qualname: str) -> SourceLine:
        start, end = node.lineno, node.end_lineno or node.lineno
        if isinstance(node, ast.FunctionDef):
            end = start  # just the signature's first line, not the whole body
        text = " ".join(line.strip() for line in self._lines[start - 1 : end])
        return SourceLine(self.path, start, end, text, qualname)


def _simple_statements(func: ast.FunctionDef) -> list[ast.stmt]:
    """Every one-thing statement inside a function (also inside if/for/with bodies),
    in source order; nested function definitions are not entered."""
    out: list[ast.stmt] = []

    def visit(body: Iterable[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, _SIMPLE_STATEMENTS):
                out.append(stmt)
            elif not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for attr in ("body", "orelse", "finalbody"):
                    visit(getattr(stmt, attr, []))
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body)

    visit(func.body)
    return sorted(out, key=lambda s: s.lineno)


def _assigned_names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    else:
        return set()
    names = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


def _is_tap_call(node: ast.AST, local_name: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "tap"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
        and len(node.args) == 2
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == local_name
    )


def _calls(node: ast.AST, callee: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id == callee) or (
        isinstance(f, ast.Attribute) and f.attr == callee
    )


def display_path(file: Path) -> str:
    """A source path as a learner types it: relative to the repository root (the folder
    that holds the `llama` package), or absolute for a file elsewhere."""
    try:
        return Path(file).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(file)


def source_of(obj) -> SourceLine:
    """The `def` line of any function or method (e.g. the tokenizer's encode)."""
    obj = inspect.unwrap(obj)
    file = inspect.getsourcefile(obj)
    lines, start = inspect.getsourcelines(obj)
    # Skip decorators: the def line is the one a breakpoint on the function uses.
    offset = next((i for i, l in enumerate(lines) if l.lstrip().startswith("def ")), 0)
    return SourceLine(
        display_path(Path(file)),
        start + offset,
        start + offset,
        lines[offset].strip(),
        getattr(obj, "__qualname__", getattr(obj, "__name__", "?")),
    )


def hook_source(name: str, model) -> SourceLine:
    """The statement that computes hook point `name` ("layers.3.attention.probs") of a
    model (a built one, or its class): in the source file of the class whose forward taps
    it, found as `SourceMap.tap` finds it (a subclass that inherits forward is followed to
    the class that defines it).

    Raises KeyError for a name the model does not have, and SourceLocatorError when the
    source has no such tap (a module defined without a source file, e.g. in a notebook).
    """
    point = hook_point(model, name)
    for cls in point.owner.__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Tappable)) or cls is Tappable:
            continue
        module = sys.modules.get(cls.__module__)
        try:
            return SourceMap.of(module).tap(cls.__name__, point.local)
        except (SourceLocatorError, TypeError, OSError):
            continue  # not tapped in this class (or no source): try the next base class
    raise SourceLocatorError(
        f"no class of {point.owner.__name__}'s hierarchy has a self.tap({point.local!r}, ...) "
        f"in its source: cannot locate {name!r}"
    )


__all__ = [
    "SourceLine",
    "SourceMap",
    "SourceLocatorError",
    "source_of",
    "display_path",
    "hook_source",
]
