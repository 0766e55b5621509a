"""The floating-point dtypes this project runs in, and their names, written once.

Command lines, the loader, capture files and the front ends all accept and print the
same names: "float32", "bfloat16", "float16" (with the usual short forms as aliases).
"""

from __future__ import annotations

import torch

# The dtypes a model may be loaded and run in, in the order front ends list them.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")  # e.g. argparse choices

_ALIASES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "f32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "f16": torch.float16,
    "half": torch.float16,
}


class DtypeError(ValueError):
    """A dtype that is not one of SUPPORTED_DTYPES."""


def parse_dtype(
    dtype: str | torch.dtype | None, error: type[Exception] = DtypeError
) -> torch.dtype | None:
    """'float32' | 'bfloat16' | 'float16' (aliases, torch dtypes, or None) -> torch.dtype.

    None stays None (callers read it as "as stored"). Anything else raises `error`.
    """
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in SUPPORTED_DTYPES):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _ALIASES:
            return _ALIASES[key]
    raise error(
        f"dtype {dtype!r} is not supported: use 'float32', 'bfloat16', 'float16', or None "
        "to keep the checkpoint's own dtype."
    )


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16' (the name the command lines accept)."""
    return str(dtype).removeprefix("torch.")


__all__ = ["SUPPORTED_DTYPES", "DTYPE_NAMES", "DtypeError", "parse_dtype", "dtype_name"]
