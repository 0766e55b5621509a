"""Real checkpoints, when you have them: each test reads a path from an environment
variable and is skipped without it (nothing is ever downloaded).

    LLAMA_FS_LLAMA2_7B=/path/to/llama-2-7b          Meta folder or HF folder
    LLAMA_FS_LLAMA32_1B=/path/to/Llama-3.2-1B        HF folder, its original/, or Meta folder
    LLAMA_FS_QWEN_1_5B=/path/to/DeepSeek-R1-Distill-Qwen-1.5B
    LLAMA_FS_CHECKPOINTS=/a.gguf:/some/hf-folder     any others (os.pathsep-separated)

    .venv/bin/python -m pytest tests/test_real_checkpoints.py -v

For the three named models: the exact published parameter count, and " Paris" as the most
probable token after "The capital of France is" (loaded in bfloat16, so a 7B model needs
about 14 GB). For every path that transformers can read too (an HF folder or a GGUF file)
and that fits in memory in float32 twice: our float32 logits equal transformers' within
1e-4 on a few prompts, both fed the same token ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

NAMED = {  # environment variable -> exact parameter count (tied matrices counted once)
    "LLAMA_FS_LLAMA2_7B": 6_738_415_616,
    "LLAMA_FS_LLAMA32_1B": 1_235_814_400,
    "LLAMA_FS_QWEN_1_5B": 1_777_088_000,
}
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Grüße aus Köln! 你好 🙂"]
PARITY_TOL = 1e-4  # float32 logits, as everywhere else


def _named(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def _parity_paths() -> list[Path]:
    paths = [p for p in (_named(v) for v in NAMED) if p is not None]
    extra = os.environ.get("LLAMA_FS_CHECKPOINTS", "")
    paths += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return paths


def _transformers_source(path: Path) -> dict | None:
    """from_pretrained arguments for the same checkpoint, or None (Meta format)."""
    if path.is_file():
        return {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return {"pretrained_model_name_or_path": str(path)}
    return None


@pytest.mark.parametrize("var", list(NAMED))
def test_named_checkpoint(var):
    path = _named(var)
    if path is None:
        pytest.skip(f"set {var} to run this test on that checkpoint")
    assert path.exists(), f"{var}={path} does not exist"
    from tokenizer import load_tokenizer
    from weights import load_model

    model = load_model(path, dtype="bfloat16")
    assert model.num_params() == NAMED[var]
    tok = load_tokenizer(path)
    ids = tok.encode("The capital of France is", bos=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids]), last_only=True)[0, -1]
    assert torch.isfinite(logits).all()
    assert tok.decode([int(logits.argmax())]) == " Paris"


@pytest.mark.parametrize("path", _parity_paths() or [None], ids=str)
def test_logits_equal_transformers(path):
    if path is None:
        pytest.skip("set LLAMA_FS_CHECKPOINTS (or a LLAMA_FS_* model path) to run this test")
    source = _transformers_source(path)
    if source is None:
        pytest.skip(f"{path}: transformers cannot read this format (Meta's); nothing to compare")
    from transformers import AutoModelForCausalLM

    from tokenizer import load_tokenizer
    from weights import load_model
    from weights.checkpoint import available_memory
    from weights.errors import InsufficientMemoryError

    try:
        ours = load_model(path, dtype="float32")
    except InsufficientMemoryError as e:
        pytest.skip(f"{path} does not fit in memory in float32: {e}")
    n_bytes = sum(p.numel() * 4 for p in ours.parameters())
    free = available_memory(torch.device("cpu"))
    if free is not None and free < 1.3 * n_bytes:
        pytest.skip(f"{path}: not enough memory for a second float32 copy ({n_bytes / 2**30:.1f} GiB)")
    theirs = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32).eval()
    tok = load_tokenizer(path)
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt, bos=True)])
        with torch.no_grad():
            ours.reset_cache()
            diff = (ours(ids) - theirs(ids).logits.float()).abs().max().item()
        assert diff <= PARITY_TOL, f"{path}, prompt {prompt!r}: max |logit difference| {diff:.2e}"
