"""Byte-level BPE tokenizers run by tiktoken: Meta's Llama 3, tokenizer.json, GGUF "gpt2".

All three are the same algorithm:

1. split the text into pieces with a regex (the "pre-tokenizer": words, numbers,
   punctuation runs, whitespace runs), so merges never cross those boundaries;
2. inside each piece, start from single bytes and repeatedly merge the adjacent pair whose
   merged token has the lowest rank, until no adjacent pair forms a known token.

tiktoken implements exactly this in Rust given ``mergeable_ranks`` (token bytes -> rank)
and the split regex. Meta ships Llama 3's tokenizer as such a rank file. Hugging Face's
tokenizer.json and GGUF store the same information differently: a vocabulary of tokens
spelled in GPT-2's "byte alphabet" (every byte mapped to a printable character, e.g. the
space byte to "Ġ") plus an ordered list of merges. We turn that into ranks: a token's rank
is the position of the merge that creates it, so lower rank = earlier merge = higher
priority, which is the order Hugging Face applies merges in.

tiktoken returns the rank as the token id. When the vocabulary's ids already follow the
merge order (Llama 3, Qwen2, SmolLM2: ids were assigned in merge order) we use the ids as
ranks directly; otherwise we use merge positions and translate ranks to ids afterwards.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import tiktoken

from .base import Tokenizer
from .errors import TokenizerError

# --------------------------------------------------------------------------------------
# Split regexes (facts about each model family, written in the regex dialect of tiktoken
# and Hugging Face tokenizers, which both support \p{...} classes and lookahead).
# --------------------------------------------------------------------------------------

# Llama 3 (Meta's tokenizer.py and the Llama 3 tokenizer.json): case-insensitive
# contractions, words with one optional leading non-letter, numbers of at most 3 digits,
# punctuation runs that keep their trailing newlines, newline runs, other whitespace.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2: Llama 3's regex with every digit on its own.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GPT-2 (also what Hugging Face's ByteLevel pre-tokenizer uses with use_regex=true).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# SmolLM2 / StarCoder: first every digit becomes its own piece (Hugging Face's
# Digits(individual_digits=true), llama.cpp's first regex "\p{N}"), then GPT-2's regex runs
# on the text between the digits. tiktoken takes a single regex, so we fold the two steps
# into one that splits identically:
#   * "\p{N}" first, and GPT-2's " ?\p{N}+" dropped: a digit is always a piece of its own,
#     so a space before a digit is never glued to it;
#   * GPT-2's "\s+(?!\S)" (a whitespace run, leaving the last space for the next word)
#     becomes "\s+(?![^\s\p{N}])": when the run is followed by a digit, the run ended at a
#     digit boundary in the two-step version, so it is taken whole ("  1" -> "  ", "1").
# GPT-2's other alternatives never touch digits, so they are unchanged.
DIGITS_THEN_GPT2_PATTERN = (
    r"\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"
)

# GGUF "tokenizer.ggml.pre" names (as llama.cpp's converter writes them) -> split regex.
GGUF_PRE_PATTERNS = {
    "llama-bpe": LLAMA3_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "llama-v3": LLAMA3_PATTERN,
    "qwen2": QWEN2_PATTERN,
    "deepseek-r1-qwen": QWEN2_PATTERN,
    "smollm": DIGITS_THEN_GPT2_PATTERN,
    "starcoder": DIGITS_THEN_GPT2_PATTERN,
    "refact": DIGITS_THEN_GPT2_PATTERN,
    "gpt-2": GPT2_PATTERN,
    "gpt2": GPT2_PATTERN,
}

# Meta's Llama 3 special tokens, in id order after the 128,000 ranks (names per Meta's
# llama-models; Llama 3.0 called some of them reserved, but the ids are the same).
LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_NUM_SPECIALS = 256
LLAMA3_NUM_RANKS = 128_000

# Names of tokens that end a turn or a document, in the families we know. Any of them
# present as a special token is a stop id.
KNOWN_STOP_TOKENS = (
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<end_of_turn>",
)


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character that spells it in a vocabulary.

    Bytes that are already printable, non-space Latin-1 characters keep their character
    ("a" -> "a", "é"'s byte 0xE9 -> "é"); the other 68 (controls, space, 0x7F-0xA0, 0xAD)
    get the characters U+0100, U+0101, ... in byte order, so space (0x20) is "Ġ" (U+0120)
    and newline (0x0A) is "Ċ" (U+010A).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def _unspell_table() -> dict[int, int]:
    """A str.translate table taking each byte-alphabet character to the Latin-1 character
    with that byte's value, and every other character below U+0100 to U+FFFF (which Latin-1
    cannot encode, so the token is reported as not byte-level spelled)."""
    table = {c: 0xFFFF for c in range(256)}
    table.update({ord(c): b for b, c in byte_alphabet().items()})
    return table


def spelled_to_bytes(token: str) -> bytes | None:
    """Bytes of a token spelled in the byte alphabet ("Ġworld" -> b" world"), or None if it
    is not spelled so (added tokens such as "<|im_start|>" happen to be, "<｜fim｜>" is not).

    Done with str.translate + Latin-1 because it runs for every token of a 128k vocabulary.
    """
    try:
        return token.translate(_unspell_table()).encode("latin-1")
    except UnicodeEncodeError:
        return None


# --------------------------------------------------------------------------------------
# Long inputs
# --------------------------------------------------------------------------------------

# Pieces of text handed to tiktoken at once. Some tiktoken versions overflow their stack
# or take quadratic time on a very long run without a split point (a megabyte of letters
# or of spaces), which Meta's reference works around by cutting the input.
MAX_CHUNK_CHARS = 25_000

# Places where every split regex above starts a new piece, so cutting there cannot change
# the result. Both keep whitespace at the *start* of the next chunk, never at the end of
# one: a whitespace run at the very end of a text is split differently ("\s+(?!\S)" takes
# all of it there, but leaves the last character to the next word otherwise).
#   * a space right after a non-space: no pattern carries a piece from a non-space
#     character into a following space;
#   * a newline right after a letter or number: words and numbers never take a newline
#     (punctuation may: Llama 3's " ?[^\s\p{L}\p{N}]+[\r\n]*").
# In a Python str pattern [^\W_] is exactly "a letter or a number".
_SAFE_CUT = re.compile(r"(?<=\S)(?= )|(?<=[^\W_])(?=[\r\n])")


def split_long_text(text: str, limit: int = MAX_CHUNK_CHARS) -> list[str]:
    """Cut text longer than ``limit`` into chunks at places where the split regex would
    cut anyway. Only a run of more than ``limit`` characters with no such place (e.g. 25,000
    letters with no space) is cut mid-run, which may change the tokens at that one cut."""
    if len(text) <= limit:
        return [text]
    chunks, start = [], 0
    while len(text) - start > limit:
        end = start + limit
        cut = None
        # Look for the last safe cut in the window, in the window's tail first (cheap).
        for lo in (max(start + 1, end - 2_000), start + 1):
            for m in _SAFE_CUT.finditer(text, lo, end):
                cut = m.start()
            if cut is not None:
                break
        if cut is None:
            cut = end  # a run with no safe place: cut it as Meta's reference does
        chunks.append(text[start:cut])
        start = cut
    chunks.append(text[start:])
    return chunks


# --------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------


class TiktokenTokenizer(Tokenizer):
    """Byte-level BPE through tiktoken (use the ``from_*`` functions below to build one)."""

    def __init__(
        self,
        *,
        kind: str,
        source: str,
        id_bytes: list[bytes],
        ranks: dict[bytes, int],
        pattern: str,
        rank_to_id: np.ndarray | None,
        special: dict[str, int],
        added: dict[str, int] | None = None,
        normalizer: str | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        add_bos_token: bool = False,
        extra_stop_ids=(),
        chat_template: str | None = None,
        lstrip=(),
        rstrip=(),
    ):
        self.kind, self.source = kind, source
        self._id_bytes = id_bytes  # what each id decodes to (special tokens: their text)
        self.vocab_size = len(id_bytes)
        self.pattern = pattern
        # Ranks that tiktoken may return but that are not ids (see _encode_plain), and the
        # rank -> id table when ranks are not ids.
        self._rank_to_id = rank_to_id
        self._first_fake_rank = self.vocab_size if rank_to_id is None else None
        self._encoding = tiktoken.Encoding(
            name=f"llama-from-scratch:{kind}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
        )
        self._normalizer = normalizer
        self._setup_special(special, added, lstrip, rstrip)
        self._special_ids = set(special.values())
        self.bos_id, self.eos_id, self.add_bos_token = bos_id, eos_id, add_bos_token
        self.stop_ids = {i for i in [eos_id, *extra_stop_ids] if i is not None}
        self.stop_ids |= {special[t] for t in KNOWN_STOP_TOKENS if t in special}
        self.chat_template = chat_template
        self.chat_format = _guess_chat_format(self.special_tokens, self.added_tokens)

    def _encode_plain(self, text: str) -> list[int]:
        if self._normalizer:
            text = unicodedata.normalize(self._normalizer, text)
        ids: list[int] = []
        for chunk in split_long_text(text):
            ids.extend(self._encoding.encode_ordinary(chunk))
        if self._rank_to_id is not None:
            ids = self._rank_to_id[ids].tolist()
            return [i for i in ids if i >= 0]
        if self._first_fake_rank is not None and any(i >= self._first_fake_rank for i in ids):
            # A byte the vocabulary lacks (some byte-level vocabularies leave out bytes
            # such as 0x04 that never occurred in training). Hugging Face drops such a
            # character when the model has no unknown token, and so do we.
            ids = [i for i in ids if i < self._first_fake_rank]
        return ids

    def _token_bytes(self, i: int) -> bytes:
        return self._id_bytes[i]

    def _is_special(self, i: int) -> bool:
        return i in self._special_ids

    def special_name(self, i: int) -> str:
        return self._id_bytes[i].decode("utf-8", errors="replace")


def _guess_chat_format(special: dict[str, int], added: dict[str, int]) -> str | None:
    names = {**special, **added}
    if "<|start_header_id|>" in names and "<|eot_id|>" in names:
        return "llama3"
    if "<|im_start|>" in names and "<|im_end|>" in names:
        return "chatml"
    return None


# --------------------------------------------------------------------------------------
# From a vocabulary + merges (tokenizer.json and GGUF "gpt2")
# --------------------------------------------------------------------------------------


def ranks_from_vocab(
    spelled: list[str | None], merges: list[tuple[str, str]], skip_ids: set[int], source: str, ignore_merges: bool
):
    """Build (id_bytes, ranks, rank_to_id) from a byte-alphabet vocabulary and its merges.

    spelled[i] is token i as the vocabulary spells it (None for ids that are not BPE
    tokens, e.g. special tokens, which ``skip_ids`` also lists).
    """
    vocab = {s: i for i, s in enumerate(spelled) if s is not None and i not in skip_ids}
    id_bytes = [b"" for _ in spelled]
    for i, s in enumerate(spelled):
        if s is not None:
            b = spelled_to_bytes(s)
            id_bytes[i] = b if b is not None else s.encode("utf-8")

    # Merge position of every token a merge creates (the first merge that creates it wins).
    merge_pos: dict[int, int] = {}
    for pos, (a, b) in enumerate(merges):
        tid = vocab.get(a + b)
        if tid is None:
            raise TokenizerError(
                f"{source}: merge #{pos} ({a!r} + {b!r}) makes {a + b!r}, which is not in the vocabulary; "
                "the tokenizer file is inconsistent"
            )
        merge_pos.setdefault(tid, pos)

    alphabet = byte_alphabet()
    byte_ids = {b: vocab[alphabet[b]] for b in range(256) if alphabet[b] in vocab}
    products = sorted(merge_pos, key=merge_pos.get)  # ids in merge order
    # With ignore_merges (Llama 3's tokenizer.json), a piece that is a whole token is taken
    # as it is, merges or not; tiktoken does that for any token it has a rank for, so those
    # tokens get ranks too (after all merges, so they never win a merge).
    extras = []
    if ignore_merges:
        seen = set(products) | set(byte_ids.values())
        extras = [i for i in vocab.values() if i not in seen]

    ids_follow_merges = all(x < y for x, y in zip(products, products[1:]))
    extras_after = not extras or not products or min(extras) > products[-1]
    ranks: dict[bytes, int] = {}
    if ids_follow_merges and extras_after:
        # The common case: ids were given in merge order, so they can be the ranks.
        for i in [*byte_ids.values(), *products, *extras]:
            ranks.setdefault(id_bytes[i], i)
        rank_to_id = None
        next_fake = len(spelled)
    else:
        # Rank by merge position and translate back to ids after encoding.
        order = [*byte_ids.values(), *products, *extras]
        rank_list = []
        for i in order:
            if id_bytes[i] not in ranks:
                ranks[id_bytes[i]] = len(rank_list)
                rank_list.append(i)
        rank_to_id = np.array(rank_list + [-1] * 256, dtype=np.int64)
        next_fake = len(rank_list)
    # tiktoken needs every single byte to have a rank. A byte missing from the vocabulary
    # gets a rank that is not an id: below it is dropped from the output.
    for b in range(256):
        if b not in byte_ids and bytes([b]) not in ranks:
            ranks[bytes([b])] = next_fake
            next_fake += 1
    return id_bytes, ranks, rank_to_id


def _pattern_from_pre_tokenizer(pre: dict | None, source: str) -> str:
    """The single split regex equivalent to a tokenizer.json "pre_tokenizer"."""

    def unsupported(what):
        return TokenizerError(
            f"{source}: pre-tokenizer {what} is not supported (supported: byte-level BPE with "
            "ByteLevel, Split with behavior Isolated, and Digits before a GPT-2 ByteLevel)"
        )

    if pre is None:
        raise TokenizerError(
            f"{source}: this tokenizer.json has no pre-tokenizer, so it is not a byte-level BPE "
            "tokenizer; load the tokenizer.model (SentencePiece) next to it instead"
        )
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    patterns, byte_level, digits = [], False, None
    for step in steps:
        kind = step.get("type")
        if kind == "Split":
            if step.get("behavior") != "Isolated" or step.get("invert"):
                raise unsupported(f"Split(behavior={step.get('behavior')}, invert={step.get('invert')})")
            pat = step["pattern"]
            patterns.append(pat["Regex"] if "Regex" in pat else re.escape(pat["String"]))
        elif kind == "ByteLevel":
            byte_level = True
            if step.get("add_prefix_space"):
                raise unsupported("ByteLevel(add_prefix_space=true)")
            if step.get("use_regex", True):
                patterns.append(GPT2_PATTERN)
        elif kind == "Digits":
            if patterns:
                raise unsupported("Digits after another split")
            digits = bool(step.get("individual_digits"))
        elif kind == "Metaspace":
            raise TokenizerError(
                f"{source}: a SentencePiece-style tokenizer.json (Metaspace); load the tokenizer.model "
                "next to it instead (load_tokenizer on the folder does this)"
            )
        else:
            raise unsupported(repr(kind))
    if not byte_level:
        raise TokenizerError(f"{source}: not a byte-level BPE tokenizer.json (no ByteLevel pre-tokenizer)")
    if digits is not None:
        if patterns != [GPT2_PATTERN] or not digits:
            raise unsupported("Digits combined with anything but individual digits + GPT-2 ByteLevel")
        return DIGITS_THEN_GPT2_PATTERN
    if len(patterns) > 1:
        raise unsupported("with two split regexes")
    # No regex at all: the whole text is one piece.
    return patterns[0] if patterns else r"[\s\S]+"


def _normalizer_form(norm: dict | None, source: str) -> str | None:
    """Unicode normalization form of a tokenizer.json "normalizer" (Qwen2 uses NFC)."""
    if norm is None:
        return None
    steps = norm["normalizers"] if norm.get("type") == "Sequence" else [norm]
    forms = [s.get("type") for s in steps]
    if not forms:
        return None
    if len(forms) == 1 and forms[0] in ("NFC", "NFD", "NFKC", "NFKD"):
        return forms[0]
    raise TokenizerError(f"{source}: normalizer {forms} is not supported (only NFC/NFD/NFKC/NFKD)")


def token_text(tok) -> str | None:
    """tokenizer_config.json writes a token either as a string or as {"content": ...}."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def read_json_or_none(path: Path):
    """An optional JSON side file (tokenizer_config.json, ...): its data, or None when it
    is missing or unreadable (the tokenizer then keeps its defaults)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def from_tokenizer_json(path: str | Path, data: dict | None = None) -> TiktokenTokenizer:
    """A byte-level BPE tokenizer.json (Llama 3, Qwen2, SmolLM2, GPT-2 style).

    The files that transformers saves next to it are used when present:
    tokenizer_config.json (bos/eos tokens, add_bos_token, chat_template),
    chat_template.jinja, and generation_config.json (eos ids = stop ids of chat models).
    """
    path = Path(path)
    source = str(path)
    if data is None:
        data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        raise TokenizerError(f"{source}: model type {model.get('type')!r} is not supported (only byte-level BPE)")
    pattern = _pattern_from_pre_tokenizer(data.get("pre_tokenizer"), source)
    normalizer = _normalizer_form(data.get("normalizer"), source)

    vocab: dict[str, int] = model["vocab"]
    added_list = data.get("added_tokens") or []
    size = max([*vocab.values(), *(t["id"] for t in added_list)], default=-1) + 1
    spelled: list[str | None] = [None] * size
    for s, i in vocab.items():
        spelled[i] = s
    # Merges are "a b" strings in older files and ["a", "b"] pairs in newer ones.
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]

    added_ids = {t["id"] for t in added_list}
    id_bytes, ranks, rank_to_id = ranks_from_vocab(
        spelled, merges, added_ids, source, bool(model.get("ignore_merges"))
    )
    special, added, lstrip, rstrip = {}, {}, [], []
    for t in added_list:
        id_bytes[t["id"]] = t["content"].encode("utf-8")
        (special if t.get("special") else added)[t["content"]] = t["id"]
        if t.get("lstrip"):
            lstrip.append(t["content"])
        if t.get("rstrip"):
            rstrip.append(t["content"])
    for i in range(size):
        if spelled[i] is None and i not in added_ids:
            raise TokenizerError(f"{source}: token id {i} is missing from the vocabulary")

    # BOS: the post-processor template that transformers runs on every encode says whether
    # a token goes in front ("<|begin_of_text|> $A" in Llama 3).
    bos_token, add_bos = None, False
    post = data.get("post_processor") or {}
    posts = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    for p in posts:
        if p.get("type") == "TemplateProcessing" and p.get("single"):
            first = p["single"][0]
            if "SpecialToken" in first:
                bos_token, add_bos = first["SpecialToken"]["id"], True
    config = read_json_or_none(path.with_name("tokenizer_config.json")) or {}
    if token_text(config.get("bos_token")) and bos_token is None:
        bos_token = token_text(config.get("bos_token"))
    eos_token = token_text(config.get("eos_token"))
    names = {**added, **special}
    if eos_token is None:
        eos_token = next((t for t in ("<|end_of_text|>", "<|endoftext|>", "</s>") if t in names), None)
    gen = read_json_or_none(path.with_name("generation_config.json")) or {}
    gen_eos = gen.get("eos_token_id")
    gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []

    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    jinja_file = path.with_name("chat_template.jinja")
    if template is None and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")

    return TiktokenTokenizer(
        kind="bpe-json",
        source=source,
        id_bytes=id_bytes,
        ranks=ranks,
        pattern=pattern,
        rank_to_id=rank_to_id,
        special=special,
        added=added,
        normalizer=normalizer,
        bos_id=names.get(bos_token) if bos_token else None,
        eos_id=names.get(eos_token) if eos_token else None,
        add_bos_token=bool(config.get("add_bos_token", add_bos)) and add_bos,
        extra_stop_ids=[i for i in gen_eos if isinstance(i, int)],
        chat_template=template,
        lstrip=lstrip,
        rstrip=rstrip,
    )


# GGUF token types (the same numbering as SentencePiece's piece types).
GGUF_NORMAL, GGUF_UNKNOWN, GGUF_CONTROL, GGUF_USER_DEFINED, GGUF_UNUSED, GGUF_BYTE = 1, 2, 3, 4, 5, 6


def from_gguf(meta: dict, source: str) -> TiktokenTokenizer:
    """GGUF with tokenizer.ggml.model == "gpt2" (byte-level BPE)."""
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in GGUF_PRE_PATTERNS:
        raise TokenizerError(
            f"{source}: unknown GGUF pre-tokenizer tokenizer.ggml.pre={pre!r}; its split regex is not known "
            f"here, and guessing would silently give wrong token ids. Known: {sorted(GGUF_PRE_PATTERNS)}"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type")
    types = [int(t) for t in types] if types is not None else [GGUF_NORMAL] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]

    # Control tokens (<|im_start|>) are special: matched only with allow_special. User-defined
    # ones are added tokens that llama.cpp always matches whole.
    special = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == GGUF_CONTROL}
    added = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == GGUF_USER_DEFINED}
    skip = {i for i, ty in enumerate(types) if ty in (GGUF_CONTROL, GGUF_USER_DEFINED, GGUF_UNUSED)}
    id_bytes, ranks, rank_to_id = ranks_from_vocab(tokens, merges, skip, source, ignore_merges=False)
    for table in (special, added):
        for t, i in table.items():
            id_bytes[i] = t.encode("utf-8")

    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    eos_id = meta.get("tokenizer.ggml.eos_token_id")
    # llama.cpp's rule: tokenizer.ggml.add_bos_token when the file has it (SmolLM2 and Qwen2
    # say false); otherwise a BPE vocabulary adds BOS only with the Llama 3 pre-tokenizer.
    # GPT-2's GGUF files say nothing, and GPT-2 adds no BOS.
    default_bos = bos_id is not None and pre in ("llama-bpe", "llama3", "llama-v3")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", default_bos))
    extra_stops = [meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("eot", "eom")]
    return TiktokenTokenizer(
        kind="gguf-gpt2",
        source=source,
        id_bytes=id_bytes,
        ranks=ranks,
        pattern=GGUF_PRE_PATTERNS[pre],
        rank_to_id=rank_to_id,
        special=special,
        added=added,
        bos_id=bos_id,
        eos_id=eos_id,
        add_bos_token=add_bos,
        extra_stop_ids=[i for i in extra_stops if i is not None],
        chat_template=meta.get("tokenizer.chat_template"),
    )


# --------------------------------------------------------------------------------------
# Meta's Llama 3 tokenizer.model
# --------------------------------------------------------------------------------------


def looks_like_tiktoken_ranks(head: bytes) -> bool:
    """Lines of "<base64 token> <rank>", as in Meta's Llama 3 tokenizer.model."""
    lines = head.split(b"\n")[:3]
    return bool(lines) and all(re.fullmatch(rb"[A-Za-z0-9+/=]+ \d+", ln) for ln in lines if ln) and bool(lines[0])


def from_llama3_model(path: str | Path) -> TiktokenTokenizer:
    source = str(path)
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError:
            raise TokenizerError(f"{source}: line {n} is not '<base64> <rank>'; not a tiktoken rank file") from None
    if len(ranks) != LLAMA3_NUM_RANKS:
        raise TokenizerError(
            f"{source}: a tiktoken rank file with {len(ranks)} tokens; only Meta's Llama 3 tokenizer.model "
            f"({LLAMA3_NUM_RANKS} tokens) is known, with its split regex and special tokens"
        )
    id_bytes = [b""] * LLAMA3_NUM_RANKS
    for b, r in ranks.items():
        id_bytes[r] = b
    names = LLAMA3_NAMED_SPECIALS + [
        f"<|reserved_special_token_{2 + k}|>" for k in range(LLAMA3_NUM_SPECIALS - len(LLAMA3_NAMED_SPECIALS))
    ]
    special = {name: LLAMA3_NUM_RANKS + k for k, name in enumerate(names)}
    id_bytes += [name.encode() for name in names]
    return TiktokenTokenizer(
        kind="tiktoken-llama3",
        source=source,
        id_bytes=id_bytes,
        ranks=ranks,
        pattern=LLAMA3_PATTERN,
        rank_to_id=None,
        special=special,
        bos_id=special["<|begin_of_text|>"],
        eos_id=special["<|end_of_text|>"],
        add_bos_token=True,
        extra_stop_ids=[special["<|eom_id|>"], special["<|eot_id|>"]],
    )
