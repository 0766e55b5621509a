"""The GGUF container reader: a GGUF file's metadata, tensor table and data offset.

Both halves of the project read GGUF files through this module: the tokenizer (its
vocabulary lives in the metadata) and weights.gguf_file (the tensor table). It is also the
one place that says what a GGUF file looks like from outside: `is_gguf` (the magic bytes,
never the file name) and `gguf_files_in` (the GGUF files of a folder).

A GGUF file is laid out as:

    magic b"GGUF" | version (uint32) | tensor count | metadata entry count
    metadata entries: key (string), value type (uint32), value
    tensor table, one entry per tensor: name (string), n_dims (uint32),
        dims (n_dims counts, innermost first: ggml's ne[0] is the number of columns),
        ggml type (uint32), offset (uint64, from the start of the data section)
    padding up to a multiple of general.alignment (32 when the key is absent)
    the data section: every tensor's bytes, at data start + its offset

Value types: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32, 6 float32, 7 bool,
8 string (length + UTF-8 bytes), 9 array (uint32 element type + count + elements),
10 uint64, 11 int64, 12 float64. Version 1 wrote lengths, counts and dims as uint32;
versions 2 and 3 as uint64. Everything is little-endian (big-endian files are refused).

The tokenizer lives entirely in the metadata (``tokenizer.ggml.*``): ``read_gguf_metadata``
stops after it. The weight loader (weights.gguf_file) also needs the tensor table and asks
``read_gguf`` to skip the vocabulary, which it never uses. This module knows the container
only (it lives in tokenizer/ because tokenizer depends on nothing of ours and weights may
import tokenizer, not the other way round); what a ggml type code means (block sizes, dequantisation) is the gguf package's
business, used by weights.gguf_file. It imports nothing from weights.

We read the format ourselves rather than with ``gguf.GGUFReader`` because that reader
turns every element of every metadata array (a 49k-token vocabulary and its merges) into
numpy views, which takes many seconds, and because the format is small enough to show in
full. The file is memory-mapped, so a many-gigabyte model costs only the pages read.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # when general.alignment is absent

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


@dataclass(frozen=True)
class SkippedArray:
    """Stands in for a metadata array of strings that ``read_gguf(strings=False)`` stepped
    over without decoding (the vocabulary, the merges): only its length is known."""

    count: int


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One entry of the tensor table. Nothing of the tensor's data is read."""

    name: str
    dims: tuple[int, ...]  # ggml order, innermost first: a (rows, cols) matrix is (cols, rows)
    ggml_type: int  # a gguf.GGMLQuantizationType code: 0 F32, 1 F16, 3 Q4_1, 8 Q8_0, ...
    offset: int  # bytes from the start of the data section

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy/torch order, outermost first: (rows, cols) for a matrix."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


@dataclass
class GGUFFile:
    """What ``read_gguf`` found: the container, not yet any tensor data."""

    path: str
    version: int
    metadata: dict
    tensors: list[GGUFTensorInfo] = field(default_factory=list)
    data_offset: int = 0  # where the data section starts, in bytes from the file's start
    file_size: int = 0


def starts_like_gguf(head: bytes) -> bool:
    """True when these first bytes of a file are the GGUF magic."""
    return head[: len(GGUF_MAGIC)] == GGUF_MAGIC


def is_gguf(path: str | Path) -> bool:
    """True when the file starts with the GGUF magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return starts_like_gguf(f.read(len(GGUF_MAGIC)))
    except OSError:
        return False


def gguf_files_in(folder: str | Path) -> list[Path]:
    """The GGUF files directly inside a folder, by content (an Ollama blob has no .gguf
    name), sorted by name. Tokenizer and weight loading both look for them this way."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_gguf(p))


class _Cursor:
    """Reads little-endian values one after another from a buffer."""

    def __init__(self, buf, path: str, version: int):
        self.buf, self.pos, self.path = buf, 0, path
        # Version 1 wrote lengths and counts as uint32, later versions as uint64.
        self.len_fmt = "<I" if version == 1 else "<Q"

    def truncated(self) -> ValueError:
        return ValueError(f"{self.path}: the GGUF file is truncated (it ends inside its header)")

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise self.truncated()
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def length(self) -> int:
        return self.unpack(self.len_fmt)

    def string(self) -> str:
        n = self.length()
        if self.pos + n > len(self.buf):
            raise self.truncated()
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        # Token strings are UTF-8; "replace" keeps a damaged vocabulary loadable.
        return raw.decode("utf-8", errors="replace")

    def string_array(self, count: int, decode: bool) -> list[str] | SkippedArray:
        """Many strings in a row (the vocabulary, the merges): the same as calling string()
        ``count`` times, written as one tight loop because real vocabularies hold 100k+.
        decode=False only steps over them (each length must still be read to find the next)."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        length = struct.Struct(self.len_fmt)
        out = []
        for _ in range(count):
            if pos + length.size > end:
                raise self.truncated()
            (n,) = length.unpack_from(buf, pos)
            pos += length.size
            if decode:
                out.append(str(buf[pos : pos + n], "utf-8", "replace"))
            pos += n
        if pos > end:
            raise self.truncated()
        self.pos = pos
        return out if decode else SkippedArray(count)

    def value(self, type_code: int, strings: bool = True):
        if type_code == _STRING:
            return self.string()
        if type_code == _ARRAY:
            elem_type = self.unpack("<I")
            count = self.length()
            if elem_type == _STRING:
                return self.string_array(count, decode=strings)
            if elem_type in _SCALARS:
                # Numeric arrays (scores, token types) are read in one go as numpy.
                dtype = np.dtype(_SCALARS[elem_type][1]).newbyteorder("<")
                nbytes = dtype.itemsize * count
                if self.pos + nbytes > len(self.buf):
                    raise self.truncated()
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
                self.pos += nbytes
                return arr
            return [self.value(elem_type, strings) for _ in range(count)]
        if type_code in _SCALARS:
            return self.unpack(_SCALARS[type_code][0])
        raise ValueError(f"{self.path}: unknown GGUF value type {type_code} (corrupt file?)")


def _parse(cur: _Cursor, version: int, tensors: bool, strings: bool) -> GGUFFile:
    cur.pos = 8  # after the magic and the version
    n_tensors = cur.length()
    n_kv = cur.length()
    meta = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.unpack("<I"), strings)
    out = GGUFFile(path=cur.path, version=version, metadata=meta, file_size=len(cur.buf))
    if not tensors:
        return out
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        if n_dims > 8:  # ggml has at most 4; a huge count means a damaged table
            raise ValueError(f"{cur.path}: GGUF tensor {name!r} claims {n_dims} dimensions (corrupt file?)")
        dims = tuple(cur.length() for _ in range(n_dims))
        ggml_type = cur.unpack("<I")
        offset = cur.unpack("<Q")
        out.tensors.append(GGUFTensorInfo(name, dims, ggml_type, offset))
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ValueError(f"{cur.path}: GGUF general.alignment is {alignment!r}, not a positive integer")
    # The data section starts at the first multiple of the alignment after the table.
    out.data_offset = -(-cur.pos // alignment) * alignment
    return out


def read_gguf(path: str | Path, *, tensors: bool = True, strings: bool = True) -> GGUFFile:
    """Parse a GGUF file's metadata and (tensors=True) its tensor table.

    strings=False steps over arrays of strings (the vocabulary) without decoding them;
    they appear in the metadata as ``SkippedArray(count)``. Raises ValueError, naming the
    file, when it is not GGUF, is truncated or is damaged.
    """
    path = str(path)
    with open(path, "rb") as f:
        if not starts_like_gguf(f.read(len(GGUF_MAGIC))):
            raise ValueError(f"{path}: not a GGUF file (it does not start with b'GGUF')")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                if len(buf) < 8:
                    raise ValueError(f"{path}: the GGUF file is truncated (it ends inside its header)")
                (version,) = struct.unpack_from("<I", buf, 4)
                if version not in (1, 2, 3):
                    raise ValueError(
                        f"{path}: unsupported GGUF version {version} (big-endian files and "
                        "versions other than 1-3 are not supported)"
                    )
                return _parse(_Cursor(buf, path, version), version, tensors, strings)
            except struct.error:  # a read past the end of the buffer
                raise ValueError(f"{path}: the GGUF file is truncated (it ends inside its header)") from None
            finally:
                # The memoryview must be released before the mmap can close.
                buf.release()


def read_gguf_metadata(path: str | Path) -> dict:
    """Return the metadata of a GGUF file as {key: value}.

    Strings come back as str, numeric arrays as numpy arrays, string arrays as lists.
    """
    return read_gguf(path, tensors=False).metadata


__all__ = [
    "GGUF_MAGIC",
    "starts_like_gguf",
    "is_gguf",
    "gguf_files_in",
    "read_gguf",
    "read_gguf_metadata",
    "GGUFFile",
    "GGUFTensorInfo",
    "SkippedArray",
]
