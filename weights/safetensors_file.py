"""A memory-mapped view of one .safetensors file, with its header checked up front.

The format is simple: 8 bytes (little-endian u64) giving the length N of a JSON header,
the header, then the raw bytes of every tensor. The header maps each tensor name to
{"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, offsets counted
from the end of the header; an optional "__metadata__" entry holds strings.

Why not `safetensors.safe_open`? Its `get_tensor` copies each tensor out of its mapping,
so while a model loads, the file's mapped pages and the copies are both resident: about
twice the model. Here a tensor whose bytes can be used as they are *is* a view of the
mapping (torch.frombuffer), and one that must be transformed anyway (dtype cast, q/k row
order) is read with an ordinary file read into a fresh tensor, so its mapped pages are
never touched. Either way each weight occupies memory once.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import torch

from .errors import CorruptCheckpointError

# safetensors dtype codes -> torch dtypes (the ones a Llama checkpoint uses)
DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}
CODES = {v: k for k, v in DTYPES.items()}


class SafetensorsFile:
    """One .safetensors file: `shapes`, `dtypes`, `view(name)` and `read(name)`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size

        def corrupt(what: str) -> CorruptCheckpointError:
            return CorruptCheckpointError(
                f"{self.path} is not a valid safetensors file: {what}. The file is probably "
                "truncated or damaged (an interrupted download or copy): download it again."
            )

        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise corrupt(f"it is only {size} bytes long, too short for the 8-byte header size")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise corrupt(f"its header claims {n} bytes but the whole file has {size}")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise corrupt(f"its JSON header does not parse ({e})") from None
        if not isinstance(header, dict):
            raise corrupt("its header is not a JSON object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        data_size = size - self.data_start

        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        for name, info in header.items():
            try:
                code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (TypeError, KeyError, ValueError):
                raise corrupt(f"the header entry for {name!r} lacks dtype/shape/data_offsets") from None
            if code not in DTYPES:
                raise CorruptCheckpointError(
                    f"tensor {name!r} in {self.path} has dtype {code}; only "
                    f"{', '.join(DTYPES)} weights are supported."
                )
            dtype = DTYPES[code]
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * dtype.itemsize or begin < 0:
                raise corrupt(
                    f"tensor {name!r} of shape {list(shape)} ({code}) should span "
                    f"{numel * dtype.itemsize} bytes but its offsets say {end - begin}"
                )
            if end > data_size:
                raise corrupt(
                    f"tensor {name!r} ends at byte {self.data_start + end} but the file has "
                    f"only {size} bytes"
                )
            self.shapes[name], self.dtypes[name] = shape, dtype
            self._offsets[name] = (begin, end)
        self._map: mmap.mmap | None = None

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path, "rb") as f:
                # ACCESS_COPY = a private, copy-on-write mapping: tensors made from it are
                # writable (torch wants that) yet nothing is ever written back to the file.
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._map

    def view(self, name: str) -> torch.Tensor:
        """The tensor as a view of the memory-mapped file: no bytes copied or read yet."""
        begin, end = self._offsets[name]
        shape, dtype = self.shapes[name], self.dtypes[name]
        start = self.data_start + begin
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        if start % dtype.itemsize:  # a misaligned tensor cannot be viewed in place
            return self.read(name)
        raw = torch.frombuffer(self._mapping(), dtype=torch.uint8, count=end - begin, offset=start)
        return raw.view(dtype).view(shape)

    def read(self, name: str) -> torch.Tensor:
        """The tensor in fresh memory, read with a plain file read (the mapping untouched)."""
        begin, end = self._offsets[name]
        raw = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            got = f.readinto(memoryview(raw.numpy()))
        if got != end - begin:
            raise CorruptCheckpointError(f"{self.path} ended while reading tensor {name!r}: truncated?")
        return raw.view(self.dtypes[name]).view(self.shapes[name])


__all__ = ["SafetensorsFile", "DTYPES", "CODES"]
