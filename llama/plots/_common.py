"""Shared pieces of the plotting package: figure helpers and axis-safe token labels.

Every plot function in llama.plots returns a matplotlib Figure and never shows a window,
so the package works the same in a notebook, a script and a test on a machine without a
display. `save_figure` writes PNG or SVG and closes the figure.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from matplotlib.figure import Figure

from ..analysis import AnalysisError, Tokens, visible_token

# Figures are built with matplotlib.figure.Figure directly, not through pyplot: nothing is
# registered in pyplot's global state (no leaks when a notebook draws hundreds), no window
# can open, and saving renders with Agg whatever backend the session chose. Notebooks
# still display a returned Figure inline.


# A plot fails for the same reasons its numbers do: one error class for both.
PlotError = AnalysisError


def math_safe(text: str) -> str:
    """Matplotlib reads $...$ as mathtext: escape "$" so it shows as a dollar sign."""
    return text.replace("$", r"\$")


def readable_token(text: str, max_len: int = 14) -> str:
    """A token's text made visible on an axis: leading space -> "␣", newline -> "↵"."""
    return visible_token(math_safe(text), max_len)


def tick_labels(tokens: Tokens) -> list[str]:
    """The prompt's token labels, safe to put on an axis."""
    return [math_safe(label) for label in tokens.labels]


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


__all__ = [
    "PlotError",
    "math_safe",
    "readable_token",
    "tick_labels",
    "new_figure",
    "save_figure",
    "token_fontsize",
]
