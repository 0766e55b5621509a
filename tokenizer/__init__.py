"""Tokenizers for LLaMA-family models behind one interface.

    from tokenizer import load_tokenizer
    tok = load_tokenizer(path)          # a tokenizer file, a checkpoint folder, or a .gguf
    ids = tok.encode("Hello", bos=True, eos=False, allow_special=False)
    text = tok.decode(ids)

What ``path`` may be, and how the kind is recognised (by content, never by file name):

    GGUF (starts with b"GGUF", any name,      tokenizer.ggml.model "llama" -> SentencePiece
      e.g. an Ollama blob)                    tokenizer.ggml.model "gpt2"  -> byte-level BPE
    JSON with a "model" entry                 Hugging Face tokenizer.json (byte-level BPE)
    JSON of token -> id, or "#version" text   GPT-2's vocab.json / merges.txt (the pair,
                                              found beside each other; byte-level BPE)
    lines "<base64> <rank>"                   Meta's Llama 3 tokenizer.model (tiktoken)
    a SentencePiece protobuf                  Llama 2's tokenizer.model
    a folder                                  the tokenizer.json / vocab.json + merges.txt /
                                              tokenizer.model / GGUF in it
                                              (or the tokenizer.model one level up, where
                                              Meta's downloads put Llama 2's)

See ``tokenizer.base`` for the interface and its conventions (BOS, special tokens).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from .base import StreamDecoder, Tokenizer
from .errors import TokenIdError, TokenizerError, TokenizerTypeError
from .gguf_container import gguf_files_in, read_gguf_metadata, starts_like_gguf

__all__ = [
    "load_tokenizer",
    "Tokenizer",
    "StreamDecoder",
    "TokenizerError",
    "TokenizerTypeError",
    "TokenIdError",
]


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load the tokenizer in ``path`` (a file or a checkpoint folder); see the module doc."""
    if not isinstance(path, (str, os.PathLike)):
        raise TokenizerTypeError(f"load_tokenizer() needs a path (str or Path), got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"{p}: no such file or folder. Pass a tokenizer.model, a tokenizer.json, a .gguf file, "
            "or a checkpoint folder that contains one of them."
        )
    if p.is_dir():
        return _load_from_folder(p)
    return _load_file(p)


# --------------------------------------------------------------------------------------
# A single file: look at its content
# --------------------------------------------------------------------------------------


def _load_file(p: Path) -> Tokenizer:
    with open(p, "rb") as f:
        head = f.read(4096)
    if starts_like_gguf(head):
        return _load_gguf(p)
    if head.lstrip()[:1] == b"{":
        return _load_json(p)

    from .vocab_merges import from_vocab_merges, looks_like_merges, partner

    if looks_like_merges(head):  # GPT-2's merges.txt: its vocab.json sits beside it
        return from_vocab_merges(partner(p), p)

    from .tiktoken_tok import from_llama3_model, looks_like_tiktoken_ranks

    if looks_like_tiktoken_ranks(head):
        return from_llama3_model(p)

    # Friendly errors for the weight files people pass by mistake.
    if head[:4] == b"PK\x03\x04":
        raise TokenizerError(
            f"{p}: this is a zip archive (a PyTorch .pth checkpoint?), not a tokenizer; "
            "pass the tokenizer.model / tokenizer.json, or the checkpoint folder"
        )
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        raise TokenizerError(
            f"{p}: this looks like a safetensors weight file, not a tokenizer; pass the folder it is in"
        )

    from .sentencepiece_tok import SentencePieceTokenizer, looks_like_sentencepiece

    size = p.stat().st_size
    if size < 256 * 1024 * 1024:  # SentencePiece models are a few MB; do not slurp weights
        data = p.read_bytes()
        if looks_like_sentencepiece(data):
            return SentencePieceTokenizer(data, source=str(p))
    raise TokenizerError(
        f"{p}: unrecognised file content. Expected a SentencePiece tokenizer.model (Llama 2), "
        "a tiktoken tokenizer.model (Llama 3), a Hugging Face tokenizer.json, or a GGUF file."
    )


def _load_json(p: Path) -> Tokenizer:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TokenizerError(f"{p}: starts like JSON but cannot be parsed ({e})") from None
    from .vocab_merges import from_vocab_merges, looks_like_vocab, partner

    if looks_like_vocab(data):  # GPT-2's vocab.json: its merges.txt sits beside it
        return from_vocab_merges(p, partner(p))
    if not isinstance(data, dict) or "model" not in data:
        hint = ""
        if isinstance(data, dict) and ({"dim", "n_layers"} <= data.keys() or "architectures" in data):
            hint = " It is a model config; pass the folder it is in instead."
        raise TokenizerError(f"{p}: a JSON file but not a Hugging Face tokenizer.json (no 'model' entry).{hint}")
    from .tiktoken_tok import from_tokenizer_json

    try:
        return from_tokenizer_json(p, data)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise TokenizerError(f"{p}: malformed tokenizer.json ({type(e).__name__}: {e})") from None


def _load_gguf(p: Path) -> Tokenizer:
    meta = read_gguf_metadata(p)
    model = meta.get("tokenizer.ggml.model")
    if model is None or "tokenizer.ggml.tokens" not in meta:
        raise TokenizerError(f"{p}: this GGUF file has no tokenizer (no tokenizer.ggml.model / tokens)")
    # tokenizer.ggml.model -> the module that builds it: "llama" is SentencePiece,
    # "gpt2" byte-level BPE.
    builders = {"llama": "sentencepiece_tok", "gpt2": "tiktoken_tok"}
    if model not in builders:
        raise TokenizerError(
            f"{p}: GGUF tokenizer type tokenizer.ggml.model={model!r} is not supported "
            "(supported: 'llama' = SentencePiece, 'gpt2' = byte-level BPE)"
        )
    module = importlib.import_module(f".{builders[model]}", __name__)
    try:
        return module.from_gguf(meta, str(p))
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise TokenizerError(f"{p}: malformed GGUF tokenizer metadata ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------------------
# A folder: find the tokenizer in it
# --------------------------------------------------------------------------------------


def _load_from_folder(folder: Path) -> Tokenizer:
    tried: list[str] = []

    def attempt(candidate: Path):
        try:
            return _load_file(candidate)
        except TokenizerError as e:
            tried.append(str(e))
            return None

    # Hugging Face folders: tokenizer.json for byte-level BPE models. Llama 2 repos also have
    # a SentencePiece-style tokenizer.json; that one is refused and tokenizer.model is used.
    # Meta folders: tokenizer.model (Llama 3's sits in "original/" of the HF repos; Llama 2's
    # next to the model folder in Meta's download).
    candidates = [
        folder / "tokenizer.json",
        folder / "vocab.json",  # GPT-2's vocab.json + merges.txt
        folder / "tokenizer.model",
        folder / "original" / "tokenizer.model",
    ]
    for c in candidates:
        if c.is_file() and (tok := attempt(c)) is not None:
            return tok

    # A GGUF anywhere in the folder, recognised by its magic bytes whatever its name.
    ggufs = gguf_files_in(folder)
    if len(ggufs) == 1:
        return _load_gguf(ggufs[0])
    if len(ggufs) > 1:
        raise TokenizerError(
            f"{folder}: several GGUF files ({', '.join(g.name for g in ggufs)}); pass the one you want"
        )

    parent_model = folder.parent / "tokenizer.model"
    if (folder / "params.json").is_file() and parent_model.is_file():
        if (tok := attempt(parent_model)) is not None:
            return tok

    detail = ("\n  " + "\n  ".join(tried)) if tried else ""
    raise TokenizerError(
        f"{folder}: no usable tokenizer found (looked for tokenizer.json, vocab.json + merges.txt, tokenizer.model, "
        f"original/tokenizer.model, a GGUF file, and ../tokenizer.model next to params.json).{detail}"
    )
