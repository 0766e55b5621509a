"""Which model a checkpoint gets: the one rule, written once.

    checkpoint                                              model
    Hugging Face folder, config.json "model_type": "gpt2"   llama.gpt2.GPT2
    GGUF file, metadata general.architecture = "gpt2"       llama.gpt2.GPT2
    everything else                                         llama.model.Transformer
      (Meta folders; HF llama / qwen2 / mistral folders; GGUF llama / qwen2)

The rule reads only what a checkpoint says about itself (one key of config.json, one key
of the GGUF metadata), never a file name. A checkpoint of any other kind goes to the
Llama readers, whose errors name what is unsupported (e.g. "model_type 'bert' is not
supported", "a GGUF model of architecture 'phi2'"). docs/CHECKPOINTS.md states the same
rule for users.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from llama.family import FAMILIES
from tokenizer.gguf_container import read_gguf

# family name -> the model class built for it (llama.family's table says which)
MODEL_CLASSES: dict[str, type[nn.Module]] = {name: f.model() for name, f in FAMILIES.items()}


def checkpoint_family(kind: str, where: Path) -> str:
    """'gpt2' or 'llama' for a checkpoint that weights.detect_format found as `kind`
    ("meta", "hf" or "gguf") at `where`. Unreadable files are left to the format readers,
    which explain what is wrong with them: here they count as 'llama'."""
    if kind == "hf":
        try:
            config = json.loads((where / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "llama"
        return "gpt2" if isinstance(config, dict) and config.get("model_type") == "gpt2" else "llama"
    if kind == "gguf":
        try:
            # strings=False: the vocabulary is stepped over, not decoded (fast).
            metadata = read_gguf(where, tensors=False, strings=False).metadata
        except (OSError, ValueError):
            return "llama"
        return "gpt2" if metadata.get("general.architecture") == "gpt2" else "llama"
    return "llama"  # Meta's folders are Llama's own format


def model_class(family: str) -> type[nn.Module]:
    """The model class for a family name ('llama' or 'gpt2')."""
    try:
        return MODEL_CLASSES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}: expected one of {', '.join(MODEL_CLASSES)}") from None


__all__ = ["checkpoint_family", "model_class", "MODEL_CLASSES"]
