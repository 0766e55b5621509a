"""Read the key/value metadata at the front of a GGUF file (nothing else).

A GGUF file is: the magic b"GGUF", a version, the number of tensors, the number of
metadata entries, then the entries (key, type, value), then tensor descriptions and the
tensor data. The tokenizer lives entirely in the metadata (``tokenizer.ggml.*``), so we
stop reading after the entries. The file is memory-mapped, so a many-gigabyte model costs
only the pages the metadata occupies.

We read the format ourselves rather than with ``gguf.GGUFReader`` because that reader also
parses every tensor description, which takes seconds on a real model, and because the
format is small enough to show in full:

    value types: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32, 6 float32,
                 7 bool, 8 string (uint64 length + UTF-8 bytes), 9 array
                 (uint32 element type + uint64 count + elements), 10 uint64, 11 int64,
                 12 float64
    version 1 used uint32 for counts and string lengths; versions 2 and 3 use uint64.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"

# type code -> (struct format, numpy dtype) for the fixed-size scalar types.
_SCALARS = {
    0: ("<B", np.uint8),
    1: ("<b", np.int8),
    2: ("<H", np.uint16),
    3: ("<h", np.int16),
    4: ("<I", np.uint32),
    5: ("<i", np.int32),
    6: ("<f", np.float32),
    7: ("<?", np.bool_),
    10: ("<Q", np.uint64),
    11: ("<q", np.int64),
    12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9


def is_gguf(path: str | Path) -> bool:
    """True when the file starts with the GGUF magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


class _Cursor:
    """Reads little-endian values one after another from a buffer."""

    def __init__(self, buf, path: str, version: int):
        self.buf, self.pos, self.path = buf, 0, path
        # Version 1 wrote lengths and counts as uint32, later versions as uint64.
        self.len_fmt = "<I" if version == 1 else "<Q"

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError(f"{self.path}: GGUF metadata is truncated (file ends early)")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def length(self) -> int:
        return self.unpack(self.len_fmt)

    def string(self) -> str:
        n = self.length()
        raw = bytes(self.buf[self.pos : self.pos + n])
        if len(raw) != n:
            raise ValueError(f"{self.path}: GGUF metadata is truncated (file ends early)")
        self.pos += n
        # Token strings are UTF-8; "replace" keeps a damaged vocabulary loadable.
        return raw.decode("utf-8", errors="replace")

    def string_array(self, count: int) -> list[str]:
        """Many strings in a row (the vocabulary, the merges): the same as calling string()
        ``count`` times, written as one tight loop because real vocabularies hold 100k+."""
        buf, pos = self.buf, self.pos
        length = struct.Struct(self.len_fmt)
        out = []
        for _ in range(count):
            (n,) = length.unpack_from(buf, pos)
            pos += length.size
            out.append(str(buf[pos : pos + n], "utf-8", "replace"))
            pos += n
        if pos > len(buf):
            raise ValueError(f"{self.path}: GGUF metadata is truncated (file ends early)")
        self.pos = pos
        return out

    def value(self, type_code: int):
        if type_code == _STRING:
            return self.string()
        if type_code == _ARRAY:
            elem_type = self.unpack("<I")
            count = self.length()
            if elem_type == _STRING:
                return self.string_array(count)
            if elem_type in _SCALARS:
                # Numeric arrays (scores, token types) are read in one go as numpy.
                dtype = np.dtype(_SCALARS[elem_type][1]).newbyteorder("<")
                nbytes = dtype.itemsize * count
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
                self.pos += nbytes
                return arr
            return [self.value(elem_type) for _ in range(count)]
        if type_code in _SCALARS:
            return self.unpack(_SCALARS[type_code][0])
        raise ValueError(f"{self.path}: unknown GGUF value type {type_code} (corrupt file?)")


def read_gguf_metadata(path: str | Path) -> dict:
    """Return the metadata of a GGUF file as {key: value}.

    Strings come back as str, numeric arrays as numpy arrays, string arrays as lists.
    """
    path = str(path)
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path}: not a GGUF file (it does not start with b'GGUF')")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                (version,) = struct.unpack_from("<I", buf, 4)
                if version not in (1, 2, 3):
                    raise ValueError(
                        f"{path}: unsupported GGUF version {version} (big-endian files and "
                        "versions other than 1-3 are not supported)"
                    )
                cur = _Cursor(buf, path, version)
                cur.pos = 8
                cur.length()  # tensor count: not needed for the tokenizer
                n_kv = cur.length()
                meta = {}
                for _ in range(n_kv):
                    key = cur.string()
                    meta[key] = cur.value(cur.unpack("<I"))
                return meta
            except struct.error:  # a read past the end of the buffer
                raise ValueError(f"{path}: GGUF metadata is truncated (file ends early)") from None
            finally:
                # The memoryview must be released before the mmap can close.
                buf.release()
