"""Argument checks shared by every front end, written once.

An index a user types (a layer, a head, a token position, a RoPE pair) may be 0..n-1 or a
Python-style negative -n..-1. Anything else is an error that names the valid range.
"""

from __future__ import annotations

import numbers


def check_index(
    value: object,
    size: int,
    what: str,
    of: str | None = None,
    error: type[Exception] = ValueError,
) -> int:
    """Python-style index (negative counts from the end) -> 0..size-1, or `error`.

    what: the word for one item ("layer", "head", "position").
    of:   how the model counts them, for the message ("layers", "query heads",
          "tokens in the prompt"); None words it as "there are N whats".
    error: the exception class to raise (each package has its own ValueError subclass).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if size <= 0:
        raise error(f"there is no {what} to choose: this has none")
    if not -size <= value < size:
        if of is None:
            hint = f"there are {size} {what}s ({what} 0..{size - 1}, or -1 for the last)"
        else:
            hint = f"this model has {size} {of}, so use 0..{size - 1} (or -1 for the last)"
        raise error(f"{what} {value} is out of range: {hint}")
    return value % size


__all__ = ["check_index"]
