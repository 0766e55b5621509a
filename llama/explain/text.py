"""The walkthrough's text: its stages, the number formatting, and the rendering.

Printed values follow one convention, which tests/test_explain.py relies on: a vector is
printed as ``<hook name>[<index>] = [v0, v1, ...]`` and a matrix as ``<hook name>[<index>] =``
followed by one line per row, ``<row label> | v0 v1 ...``; the hook name and index select
exactly the printed numbers from a llama.hooks capture of the same prompt.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..source import SourceLine


class ExplainError(ValueError):
    """A request the walkthrough cannot serve (bad layer, head, pair, token or prompt)."""


@dataclass
class Stage:
    """One step of the forward pass: what it does, where, and the numbers."""

    title: str
    what: str  # one or two sentences on what the step does and why
    sources: list[tuple[str, SourceLine]]  # (what that line does, the line)
    body: list[str] = field(default_factory=list)  # formatted lines of values


@dataclass
class Walkthrough:
    """The stages of one forward pass, with what they were computed from."""

    prompt: str
    token_ids: list[int]
    pieces: list[str]
    layers: list[int]
    head: int
    pair: int
    position: int  # the token whose vectors are printed (and whose next token is predicted)
    header: list[str]
    stages: list[Stage]
    cache: dict  # the llama.hooks capture the values were read from (float32, CPU)

    def render(self) -> str:
        return render(self)


# -- number formatting: one place, so the text and the tests agree ----------------------

Index = tuple  # of int | slice


def format_index(index: Index) -> str:
    """(0, 3, slice(None, 6)) -> '0, 3, :6' (Python's own indexing syntax)."""

    def one(i) -> str:
        if isinstance(i, slice):
            start = "" if i.start in (None, 0) else str(i.start)
            stop = "" if i.stop is None else str(i.stop)
            return f"{start}:{stop}"
        return str(i)

    return ", ".join(one(i) for i in index)


def format_number(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    if math.isnan(x):
        return "nan"
    return f"{x:+.4f}"


def vector_line(name: str, tensor: torch.Tensor, index: Index, note: str = "") -> str:
    values = tensor[index].reshape(-1).tolist()
    line = f"  {name}[{format_index(index)}] = [{', '.join(format_number(v) for v in values)}]"
    return f"{line}  {note}" if note else line


def matrix_lines(
    name: str, tensor: torch.Tensor, index: Index, row_labels: Sequence[str], col_note: str
) -> list[str]:
    block = tensor[index]  # (rows, cols)
    width = max(len(label) for label in row_labels)
    out = [f"  {name}[{format_index(index)}] =   ({col_note})"]
    for label, row in zip(row_labels, block.tolist()):
        out.append(f"    {label:<{width}} | " + " ".join(f"{format_number(v):>8}" for v in row))
    return out


def short_piece(piece: str, limit: int = 14) -> str:
    """A token piece, quoted and escaped (spaces and newlines must show), kept short."""
    shown = repr(piece)
    return shown if len(shown) <= limit else shown[: limit - 2] + "…" + shown[-1]



def render(w: Walkthrough) -> str:
    """Plain text for a terminal: a header, then one section per stage."""
    out = list(w.header)
    for n, stage in enumerate(w.stages, 1):
        out += ["", f"[{n}] {stage.title}"]
        out += textwrap.wrap(stage.what, width=92, initial_indent="  ", subsequent_indent="  ")
        width = max(len(label) for label, _ in stage.sources)
        where = max(len(str(line)) for _, line in stage.sources)
        for label, line in stage.sources:
            out.append(f"  {label + ':':<{width + 1}} {str(line):<{where}}   {line.text}")
        out += stage.body
    return "\n".join(out) + "\n"


__all__ = ["ExplainError", "Stage", "Walkthrough", "Index", "format_index", "format_number",
           "vector_line", "matrix_lines", "short_piece", "render"]
