"""Shared pieces of the plotting package: the Agg backend, token labels, figure helpers.

Every plot function in llama.plots returns a matplotlib Figure and never shows a window,
so the package works the same in a notebook, a script and a test on a machine without a
display. `save_figure` writes PNG or SVG and closes the figure.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

# Figures are built with matplotlib.figure.Figure directly, not through pyplot: nothing is
# registered in pyplot's global state (no leaks when a notebook draws hundreds), no window
# can open, and saving renders with Agg whatever backend the session chose. Notebooks
# still display a returned Figure inline.


class PlotError(ValueError):
    """A request a plot cannot honour (bad layer or head index, missing data, ...)."""


# ----------------------------------------------------------------------------------
# Token labels
# ----------------------------------------------------------------------------------

# Byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2) spell a space as "Ġ" and a newline
# as "Ċ"; SentencePiece (Llama 2) spells a space as "▁". On an axis we want what the token
# means, with the invisible characters made visible.
_PIECE_MARKERS = {"Ġ": " ", "Ċ": "\n", "ĉ": "\t", "▁": " "}


def readable_token(text: str, max_len: int = 14) -> str:
    """A token's text made visible on an axis: leading space -> "␣", newline -> "↵"."""
    for marker, real in _PIECE_MARKERS.items():
        text = text.replace(marker, real)
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    # Matplotlib treats $...$ as mathtext: escape so "$" shows as a dollar sign.
    text = text.replace("$", r"\$")
    if text == "":
        text = "∅"
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text


@dataclass
class Tokens:
    """A prompt as the plots see it: ids and one display label per token."""

    ids: list[int]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def axis_labels(self, with_index: bool = False) -> list[str]:
        if with_index:
            return [f"{i}:{lab}" for i, lab in enumerate(self.labels)]
        return list(self.labels)


def tokens_from_tokenizer(tok, ids: Sequence[int]) -> Tokens:
    """Labels from a tokenizer: decode each id on its own (falls back to its piece)."""
    labels = []
    for i in ids:
        try:
            text = tok.decode([int(i)])
        except Exception:  # a lone byte of a multi-byte character decodes to nothing useful
            text = ""
        if text == "" or text == "\ufffd":
            try:
                text = tok.id_to_piece(int(i))
            except Exception:
                text = f"#{int(i)}"
        labels.append(readable_token(text))
    return Tokens([int(i) for i in ids], labels)


def tokens_from_pieces(ids: Sequence[int], pieces: Sequence[str] | None) -> Tokens:
    """Labels from stored pieces (an export's context), or from the ids alone."""
    ids = [int(i) for i in ids]
    if pieces is None or len(pieces) != len(ids):
        return Tokens(ids, [f"#{i}" for i in ids])
    return Tokens(ids, [readable_token(str(p)) for p in pieces])


def plain_tokens(ids: Sequence[int]) -> Tokens:
    """Labels "#id" for when no tokenizer is at hand (tiny random models, tests)."""
    return tokens_from_pieces(ids, None)


# ----------------------------------------------------------------------------------
# Index checks with messages that name the valid range
# ----------------------------------------------------------------------------------


def check_index(value: int, size: int, what: str) -> int:
    """Python-style index (negative counts from the end) -> 0..size-1, or a PlotError."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise PlotError(f"{what} must be an integer, got {value!r}")
    if not -size <= value < size:
        raise PlotError(
            f"{what} {value} is out of range: there are {size} {what}s "
            f"({what} 0..{size - 1}, or -1 for the last)"
        )
    return int(value) % size


# ----------------------------------------------------------------------------------
# Figure helpers
# ----------------------------------------------------------------------------------


def new_figure(width: float, height: float) -> Figure:
    """A figure that is not registered with pyplot's global state (no leaks in loops)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def token_fontsize(n: int) -> float:
    """Tick-label size that keeps n token labels legible without overlapping."""
    if n <= 12:
        return 10
    if n <= 24:
        return 9
    if n <= 40:
        return 7
    return 5.5


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as .png or .svg (chosen by the extension)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise PlotError(f"output file {str(path)!r} must end in .png, .svg or .pdf")
    if path.parent and not path.parent.exists():
        raise PlotError(f"folder {str(path.parent)!r} does not exist: create it first")
    with warnings.catch_warnings():
        # Tokens from other scripts may lack a glyph in the default font; show a box, quietly.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.savefig(path, dpi=dpi)
    return path


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def human_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


__all__ = [
    "PlotError",
    "Tokens",
    "readable_token",
    "tokens_from_tokenizer",
    "tokens_from_pieces",
    "plain_tokens",
    "check_index",
    "new_figure",
    "save_figure",
    "token_fontsize",
    "human_bytes",
    "human_count",
]
