"""GGUF's 4-bit blocks as values, scales and zeros, without making float weights.

llama.cpp stores a quantized matrix row by row, each row as consecutive blocks along the
columns. The 4-bit formats and what a block holds (all little-endian, d/m/dmin float16):

    Q4_0   18 bytes per 32 values:  d, 16 bytes of nibbles       w = d * (q - 8)
    Q4_1   20 bytes per 32 values:  d, m, 16 bytes of nibbles    w = d * q + m
    Q4_K  144 bytes per 256 values: d, dmin, 12 bytes of 6-bit scales and mins for 8 groups
           of 32, 128 bytes of nibbles                     w = d * sc_j * q - dmin * mn_j

In Q4_0 and Q4_1, byte i's low nibble is value i and its high nibble value i + 16. In Q4_K
the 128 bytes are 4 runs of 32: run r's low nibbles are group 2r, its high nibbles group
2r + 1. The 6-bit sc_j, mn_j of groups 0-3 are the low 6 bits of bytes j and j + 4; those of
groups 4-7 take their low 4 bits from byte j + 4 (low nibble: sc, high nibble: mn) and their
top 2 bits from the top 2 bits of bytes j - 4 (sc) and j (mn).

All three come out as the form torch's int4 kernel takes (llama.speed.stored.Int4Linear):
values q in 0..15 and, per group of 32 along a row, w = (q - 8) * scale + zero. That is
exact: scale = d (Q4_0, Q4_1) or d * sc_j (Q4_K), and zero is the weight at q = 8. The
gguf package's dequantize is the oracle the tests compare this with.
"""

from __future__ import annotations

import numpy as np
import torch

GROUP = 32  # values per group in all three formats
_BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q4_K": (256, 144)}  # values, bytes per block
FORMATS = tuple(_BLOCK)


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block, as float32. (blocks,)"""
    return np.ascontiguousarray(blocks[:, start : start + 2]).view(np.float16)[:, 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return qs & 15, qs >> 4


def four_bit_groups(raw: np.ndarray, fmt: str, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (rows, cols) matrix's raw bytes -> q (rows, cols) uint8 0..15, scale and zero
    (rows, cols / 32) float32, with w = (q - 8) * scale + zero."""
    if fmt not in _BLOCK:
        raise ValueError(f"not a 4-bit GGUF format: {fmt} (these are: {', '.join(FORMATS)})")
    rows, cols = shape
    per_block, block_bytes = _BLOCK[fmt]
    if cols % per_block or raw.size != rows * cols // per_block * block_bytes:
        raise ValueError(f"{raw.size} bytes are not a ({rows}, {cols}) {fmt} matrix")
    blocks = raw.reshape(-1, block_bytes)  # (rows * blocks per row, bytes)
    if fmt in ("Q4_0", "Q4_1"):
        d = _f16(blocks, 0)
        lo, hi = _nibbles(blocks[:, block_bytes - 16 :])
        q = np.concatenate([lo, hi], axis=1)  # (blocks, 32): values 0-15 low, 16-31 high
        scale = d[:, None]  # (blocks, 1): one group per block
        zero = np.zeros_like(scale) if fmt == "Q4_0" else (_f16(blocks, 2) + 8 * d)[:, None]
    else:  # Q4_K
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        s = blocks[:, 4:16].astype(np.uint16)  # (blocks, 12) packed 6-bit scales and mins
        sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1)
        mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
        lo, hi = _nibbles(blocks[:, 16:].reshape(-1, 4, 32))  # (blocks, 4 runs, 32)
        q = np.stack([lo, hi], axis=2).reshape(-1, 256)  # groups 2r (low), 2r + 1 (high)
        scale = d[:, None] * sc.astype(np.float32)  # (blocks, 8)
        zero = 8 * scale - dmin[:, None] * mn.astype(np.float32)  # the weight at q = 8
    groups = cols // GROUP
    return (
        torch.from_numpy(np.ascontiguousarray(q).reshape(rows, cols)),
        torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float32).reshape(rows, groups)),
        torch.from_numpy(np.ascontiguousarray(zero, dtype=np.float32).reshape(rows, groups)),
    )


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """(q - 8) * scale + zero as a float32 (rows, cols) matrix (for tests and checks)."""
    rows, cols = q.shape
    g = q.float().view(rows, -1, GROUP)
    return ((g - 8) * scale[..., None] + zero[..., None]).view(rows, cols)


__all__ = ["four_bit_groups", "dequantize_groups", "FORMATS", "GROUP"]
