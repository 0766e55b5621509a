"""What every analysis module shares: its error class and number formatting."""

from __future__ import annotations

from functools import partial

from ..checks import check_index as _check_index


class AnalysisError(ValueError):
    """A request a view cannot honour (bad layer or head index, missing data, ...)."""


# The project's one index check (llama.checks), raising this package's error.
check_index = partial(_check_index, error=AnalysisError)


def human_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def human_count(n: float) -> str:
    """134_515_008 -> '134.52M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


__all__ = ["AnalysisError", "check_index", "human_bytes", "human_count"]
