"""Turning tensors and token ids into the JSON the studio's payloads are made of.

Payloads are plain dicts of str, int, float, bool, None, lists and dicts, so they go
through `json.dumps(..., allow_nan=False)` unchanged: the server sends them, the Jupyter
views embed them, the exports carry them. Three rules, the same for every view:

- Floats are rounded (`rounded`) to what a picture can show: payloads stay small.
- A non-finite number (NaN, +-inf) is never sent as a number: it becomes None, and the
  payload says where it came from (`finite_or_none`, the "warnings" of a view).
- Large matrices (attention probabilities) travel as base64 of little-endian uint16
  (`pack_unit_u16`): values in [0, 1] quantised to 1/65535, a fifth of the size of the
  same numbers written out as JSON text.
"""

from __future__ import annotations

import base64
import math
from typing import Iterable, Sequence

import numpy as np
import torch


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def finite_or_none(x: float, digits: int = 6) -> float | None:
    """A rounded float, or None when it is NaN or infinite."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, digits) if digits is not None else x


def rounded(x, digits: int = 5):
    """An array (any shape) as nested lists of rounded floats; non-finite values -> None."""
    a = to_numpy(x).astype(np.float64)
    if a.ndim == 0:
        return finite_or_none(float(a), digits)
    out = np.round(a, digits).astype(object)
    bad = ~np.isfinite(a)
    if bad.any():
        out[bad] = None
    return out.tolist()


def significant(x, digits: int = 4):
    """Like `rounded` but to significant digits (for norms spanning 0.1 .. 1e4)."""
    a = to_numpy(x).astype(np.float64)
    flat = []
    for v in a.reshape(-1).tolist():
        flat.append(None if not math.isfinite(v) else float(f"{v:.{digits}g}"))
    return np.array(flat, dtype=object).reshape(a.shape).tolist() if a.ndim else flat[0]


def ints(x) -> list:
    return to_numpy(x).astype(np.int64).tolist()


def pack_unit_u16(x) -> dict:
    """Values in [0, 1] (any shape) -> {"shape", "dtype": "u16", "scale", "data": base64}.

    Decode: value = uint16 / 65535 (the JS side does it in `unpack`). NaN -> 65535 is
    never produced here: callers check finiteness first and report it.
    """
    a = np.clip(np.nan_to_num(to_numpy(x).astype(np.float64), nan=0.0), 0.0, 1.0)
    q = np.round(a * 65535.0).astype("<u2")
    return {
        "shape": list(a.shape),
        "dtype": "u16",
        "scale": 1.0 / 65535.0,
        "data": base64.b64encode(q.tobytes()).decode("ascii"),
    }


def unpack_unit_u16(packed: dict) -> np.ndarray:
    """The inverse of pack_unit_u16 (for tests and notebooks)."""
    raw = base64.b64decode(packed["data"])
    q = np.frombuffer(raw, dtype="<u2").astype(np.float64)
    return (q * packed["scale"]).reshape(packed["shape"])


class Vocab:
    """Display texts of token ids, collected while a payload is built.

    Payloads name tokens by id; the texts travel once, in payload["vocab"] ({id: text}),
    so a lens grid of 31 x 64 cells x 10 candidates does not repeat the same strings.
    """

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.texts: dict[int, str] = {}

    def text(self, i: int) -> str:
        i = int(i)
        if i not in self.texts:
            self.texts[i] = token_text(self.tok, i)
        return self.texts[i]

    def add(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.text(int(i))

    def payload(self) -> dict[str, str]:
        return {str(k): v for k, v in sorted(self.texts.items())}


def token_text(tok, i: int) -> str:
    """What one token stands for, on its own: its decoded text, or its vocabulary piece
    when it decodes to nothing useful (one byte of a multi-byte character)."""
    try:
        text = tok.decode([int(i)])
    except Exception:  # noqa: BLE001 - any id the tokenizer cannot decode alone
        text = ""
    if text == "" or "\ufffd" in text:
        try:
            piece = tok.id_to_piece(int(i))
            if piece:
                return piece
        except Exception:  # noqa: BLE001
            pass
        return text or f"#{int(i)}"
    return text


def token_list(tok, ids: Sequence[int]) -> list[dict]:
    """[{"id", "text", "piece"}] for the token chips."""
    out = []
    for i in ids:
        i = int(i)
        try:
            piece = tok.id_to_piece(i)
        except Exception:  # noqa: BLE001
            piece = f"#{i}"
        out.append({"id": i, "text": token_text(tok, i), "piece": piece})
    return out
