"""GPT-2's tokenizer files: vocab.json + merges.txt (byte-level BPE).

The two files OpenAI published with GPT-2, and that Hugging Face's GPT-2 repos still
carry next to tokenizer.json:

    vocab.json    {"!": 0, "\\"": 1, ..., "Ġthe": 262, ..., "<|endoftext|>": 50256}
                  every token spelled in GPT-2's byte alphabet (space = "Ġ", newline = "Ċ")
    merges.txt    "#version: 0.2" then one merge per line, "Ġ t", "Ġt he", ... in the order
                  they were learned: earlier lines win

This is the same algorithm and the same information as a byte-level tokenizer.json, so
it is built by the same code (tokenizer.tiktoken_tok): GPT-2's split regex, ranks from the
merge order. What tokenizer.json would say about special tokens comes from
tokenizer_config.json beside the files when there is one (added_tokens_decoder, bos/eos,
add_bos_token); what it does not set keeps GPT-2's own defaults, as in transformers'
GPT2Tokenizer: "<|endoftext|>" is the one special token (BOS and EOS), and no BOS is added.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import TokenizerError
from .tiktoken_tok import GPT2_PATTERN, TiktokenTokenizer, ranks_from_vocab, read_json_or_none, token_text

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
GPT2_SPECIAL = "<|endoftext|>"  # GPT-2's only special token (bos = eos = unk)


def looks_like_vocab(data: object) -> bool:
    """A vocab.json: a non-empty JSON object of token -> integer id."""
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in data.values()
    )


def looks_like_merges(head: bytes) -> bool:
    """A merges.txt: the "#version" header GPT-2's files start with."""
    return head.startswith(b"#version")


def partner(path: Path) -> Path:
    """The other file of the pair, which sits in the same folder under its usual name."""
    other = path.with_name(MERGES_FILE if path.name != MERGES_FILE else VOCAB_FILE)
    if not other.is_file():
        raise TokenizerError(
            f"{path}: GPT-2's byte-level BPE needs both {VOCAB_FILE} and {MERGES_FILE}, but "
            f"{other} does not exist. Put both files in one folder (or pass a tokenizer.json)."
        )
    return other


def read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read the merges file ({e})") from None
    merges = []
    for n, line in enumerate(text.split("\n"), 1):
        if (n == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerError(f"{path}: line {n} is not a merge 'a b': {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    return merges


def from_vocab_merges(vocab_path: str | Path, merges_path: str | Path) -> TiktokenTokenizer:
    """GPT-2's byte-level BPE from vocab.json and merges.txt (see the module docstring)."""
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    source = str(vocab_path)
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TokenizerError(f"{vocab_path}: cannot read the vocabulary ({e})") from None
    if not looks_like_vocab(vocab):
        raise TokenizerError(f"{vocab_path}: not a vocab.json (a JSON object of token -> id)")
    merges = read_merges(merges_path)

    config = read_json_or_none(vocab_path.with_name("tokenizer_config.json")) or {}
    if config.get("add_prefix_space"):
        raise TokenizerError(
            f"{vocab_path.with_name('tokenizer_config.json')}: add_prefix_space=true is not "
            "supported (GPT-2 itself is used without it)"
        )
    # Added tokens transformers saved (id -> {"content", "special", ...}); may extend the vocabulary.
    added: dict[int, dict] = {int(i): t for i, t in (config.get("added_tokens_decoder") or {}).items()}
    # A key the config does not set keeps GPT2Tokenizer's default, as in transformers.
    defaults = {"bos_token": GPT2_SPECIAL, "eos_token": GPT2_SPECIAL, "unk_token": GPT2_SPECIAL, "pad_token": None}
    names = {key: token_text(config[key]) if key in config else d for key, d in defaults.items()}
    for text in names.values():
        if text is not None and text in vocab and vocab[text] not in added:
            added[vocab[text]] = {"content": text, "special": True}

    size = max([*vocab.values(), *added], default=-1) + 1
    spelled: list[str | None] = [None] * size
    for token, i in vocab.items():
        spelled[i] = token
    for i, t in added.items():
        spelled[i] = t["content"]
    for i in range(size):
        if spelled[i] is None:
            raise TokenizerError(f"{vocab_path}: token id {i} is missing from the vocabulary")

    id_bytes, ranks, rank_to_id = ranks_from_vocab(spelled, merges, set(added), source, ignore_merges=False)
    special, always, lstrip, rstrip = {}, {}, [], []
    for i, t in added.items():
        id_bytes[i] = t["content"].encode("utf-8")
        (special if t.get("special", True) else always)[t["content"]] = i
        if t.get("lstrip"):
            lstrip.append(t["content"])
        if t.get("rstrip"):
            rstrip.append(t["content"])
    lookup = {**always, **special}
    bos, eos = names.get("bos_token"), names.get("eos_token")
    return TiktokenTokenizer(
        kind="bpe-vocab-merges",
        source=source,
        id_bytes=id_bytes,
        ranks=ranks,
        pattern=GPT2_PATTERN,
        rank_to_id=rank_to_id,
        special=special,
        added=always,
        bos_id=lookup.get(bos) if bos else None,
        eos_id=lookup.get(eos) if eos else None,
        add_bos_token=bool(config.get("add_bos_token", False)),
        chat_template=config.get("chat_template") if isinstance(config.get("chat_template"), str) else None,
        lstrip=lstrip,
        rstrip=rstrip,
    )


__all__ = ["from_vocab_merges", "looks_like_vocab", "looks_like_merges", "VOCAB_FILE", "MERGES_FILE"]
