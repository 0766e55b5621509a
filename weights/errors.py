"""The errors a checkpoint can raise while it is found, read, checked and loaded.

Every one of them is a `CheckpointError` (a ValueError), and every message says what was
wrong and what to do about it, so that a user never has to read a torch traceback to find
out that a shard is missing.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked (the message says why and what to do)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist, or holds nothing we recognise as a checkpoint."""


class CorruptCheckpointError(CheckpointError):
    """A file that is truncated, damaged, or not what its name or header claims."""


class UnsafeCheckpointError(CheckpointError):
    """A .pth file that holds more than plain tensors (we never unpickle arbitrary code)."""


class StateDictMismatchError(CheckpointError):
    """Missing or unexpected tensors, or a tensor whose shape disagrees with the config."""


class InsufficientMemoryError(CheckpointError, MemoryError):
    """The model would not fit in the available memory in the requested dtype."""


__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "StateDictMismatchError",
    "InsufficientMemoryError",
]
