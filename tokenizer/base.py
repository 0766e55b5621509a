"""The interface every tokenizer here shares, and the parts they have in common.

A concrete tokenizer (SentencePiece, tiktoken/byte-level BPE) supplies only:

    _encode_plain(text) -> list[int]   ids for text that holds no special tokens
    _token_bytes(i) -> bytes           what token i contributes to the decoded text
    _is_special(i) -> bool             whether i is a control/special token

Everything else lives here, so it behaves the same for every kind of model: input
checking, lone surrogates, matching special tokens only when asked to, BOS/EOS, decoding
with a clear error for bad ids, a streaming decoder, display pieces and chat formatting.

Conventions (the same for every tokenizer):

* ``encode(text, bos=True)`` adds BOS only if the model's own tokenizer does
  (``add_bos_token``): Llama 2 and Llama 3 do, SmolLM2 and Qwen2 do not (they have no BOS
  in their prompts at all). This makes ``encode(text)`` equal to transformers'
  ``tokenizer(text)["input_ids"]``. ``bos=False`` never adds it. To force a BOS onto a model
  that does not use one, prepend ``tok.bos_id`` yourself.
* ``eos=True`` appends ``eos_id`` (an explicit request, so no convention applies).
* Text that looks like a special token ("<|eot_id|>", "<s>") is ordinary text unless
  ``allow_special=True``; then the special token's id is used. Added tokens that are *not*
  special (transformers' ``special: false`` added tokens, GGUF "user defined" tokens) are
  always matched whole, as transformers and llama.cpp do.
* A lone surrogate (possible in a Python str, impossible in UTF-8) becomes U+FFFD, the
  replacement character, before encoding; a correct surrogate pair becomes its character.
"""

from __future__ import annotations

import codecs
import operator
import re
from typing import Iterable

from .chat import render_chat
# TokenizerError is re-exported: the concrete tokenizers raise it next to Tokenizer.
from .errors import TokenIdError, TokenizerError, TokenizerTypeError  # noqa: F401


def _hex_bytes(err: UnicodeDecodeError):
    """Codec error handler: show undecodable bytes as <0xNN> (SentencePiece's spelling)."""
    bad = err.object[err.start : err.end]
    return "".join(f"<0x{b:02X}>" for b in bad), err.end


_HEX_BYTES = "llama_from_scratch_hex_bytes"
codecs.register_error(_HEX_BYTES, _hex_bytes)


def clean_surrogates(text: str) -> str:
    """Replace lone surrogates with U+FFFD and join surrogate pairs into one character.

    Python strings may hold surrogate code points (U+D800..U+DFFF), e.g. from
    ``json.loads('"\\ud83d"')``, but UTF-8 cannot encode them, so every tokenizer library
    fails on them. Round-tripping through UTF-16 with "surrogatepass" joins valid pairs, and
    decoding with "replace" turns what is left into U+FFFD.
    """
    try:
        text.encode("utf-8")
        return text  # the common case: nothing to do
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TokenizerTypeError(
            f"encode() needs a str, got {type(text).__name__}; decode bytes first "
            "(e.g. data.decode('utf-8')) or pass each string of a list separately"
        )
    return clean_surrogates(text)


def _special_token_regex(tokens: dict[str, int], lstrip=(), rstrip=()) -> re.Pattern | None:
    """A regex matching any of the given token strings, longest first.

    Python's regex alternation takes the first alternative that matches, so sorting by
    length makes "<|reserved_special_token_10|>" win over a shorter token that is its prefix.
    ``lstrip``/``rstrip`` name tokens that swallow whitespace on that side (a transformers
    added-token option).
    """
    if not tokens:
        return None
    alternatives = []
    for t in sorted(tokens, key=len, reverse=True):
        pat = re.escape(t)
        if t in lstrip:
            pat = r"\s*" + pat
        if t in rstrip:
            pat = pat + r"\s*"
        alternatives.append(f"(?:{pat})")
    return re.compile("|".join(alternatives))


class Tokenizer:
    """Text <-> token ids for one model. Build one with ``tokenizer.load_tokenizer(path)``."""

    # --- filled in by the concrete classes ------------------------------------------
    kind: str = "?"  # "sentencepiece", "tiktoken-llama3", "bpe-json", "gguf-llama", "gguf-gpt2"
    vocab_size: int = 0
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos_token: bool = True  # whether encode(text, bos=True) actually adds BOS
    stop_ids: set[int]  # ids that end a chat turn or a document
    chat_template: str | None = None  # a Jinja template from the model files, if any
    chat_format: str | None = None  # built-in fallback: "llama3" | "llama2" | "chatml" | None
    source: str = ""  # where the tokenizer came from (for error messages and repr)

    def _setup_special(
        self,
        special: dict[str, int],
        always: dict[str, int] | None = None,
        lstrip: Iterable[str] = (),
        rstrip: Iterable[str] = (),
    ) -> None:
        """Register special tokens (matched only with allow_special=True) and added tokens
        that are always matched. Concrete classes call this once in their constructor."""
        self.special_tokens: dict[str, int] = dict(special)
        self.added_tokens: dict[str, int] = dict(always or {})
        lstrip, rstrip = set(lstrip), set(rstrip)
        self._always_re = _special_token_regex(self.added_tokens, lstrip, rstrip)
        self._all_re = _special_token_regex({**self.added_tokens, **self.special_tokens}, lstrip, rstrip)

    # --- to be implemented by concrete tokenizers -------------------------------------
    def _encode_plain(self, text: str) -> list[int]:
        raise NotImplementedError

    def _token_bytes(self, i: int) -> bytes:
        raise NotImplementedError

    def _is_special(self, i: int) -> bool:
        raise NotImplementedError

    # --- encoding ---------------------------------------------------------------------
    def encode(self, text: str, bos: bool = True, eos: bool = False, allow_special: bool = False) -> list[int]:
        """Token ids for ``text``.

        bos: add the BOS token if this model's tokenizer adds one (see ``add_bos_token``).
        eos: append the EOS token.
        allow_special: treat text such as "<|eot_id|>" as the special token it names;
            otherwise it is tokenized as the plain characters it consists of.
        """
        text = _check_text(text)
        ids: list[int] = []
        if bos and self.add_bos_token and self.bos_id is not None:
            ids.append(self.bos_id)
        for segment, token_id in self._split_added(text, allow_special):
            if token_id is not None:
                ids.append(token_id)
            elif segment:
                ids.extend(self._encode_plain(segment))
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _split_added(self, text: str, allow_special: bool):
        """Yield (plain_text, None) and (token_text, id) pieces, in order."""
        pattern = self._all_re if allow_special else self._always_re
        if pattern is None:
            yield text, None
            return
        table = {**self.added_tokens, **self.special_tokens} if allow_special else self.added_tokens
        start = 0
        for m in pattern.finditer(text):
            yield text[start : m.start()], None
            tok = m.group()
            if tok not in table:  # a token that swallowed whitespace (lstrip/rstrip)
                tok = tok.strip()
            yield tok, table[tok]
            start = m.end()
        yield text[start:], None

    def encode_batch(self, texts: list[str], **kwargs) -> list[list[int]]:
        return [self.encode(t, **kwargs) for t in texts]

    # --- decoding ---------------------------------------------------------------------
    def _check_ids(self, ids) -> list[int]:
        """Accept any sequence of integers (list, tuple, 1-D numpy array or torch tensor)."""
        if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise TokenizerTypeError(
                f"decode() needs a sequence of token ids, got {type(ids).__name__} "
                "(for a single id write decode([i]); for text use encode)"
            )
        try:
            # operator.index accepts ints (and numpy/torch integers) but not 1.5 or "3".
            out = [operator.index(i) for i in ids]
        except TypeError:
            raise TokenizerTypeError(
                "decode() needs a flat sequence of integer token ids, got a sequence holding "
                "something else (for a batch, decode each row)"
            ) from None
        n = self.vocab_size
        for i in out:
            if not 0 <= i < n:
                raise TokenIdError(f"token id {i} is out of range: this vocabulary has ids 0..{n - 1} ({self.source})")
        return out

    def decode(self, ids, skip_special: bool = False) -> str:
        """The text for ``ids``. Bytes that do not form valid UTF-8 become U+FFFD."""
        ids = self._check_ids(ids)
        if skip_special:
            ids = [i for i in ids if not self._is_special(i)]
        chunks = [self._token_bytes(i) for i in ids]
        for k, raw in enumerate(chunks):  # the first token with visible bytes
            if raw:
                chunks[k] = self._strip_leading(ids[k], raw)
                break
        return b"".join(chunks).decode("utf-8", errors="replace")

    def _strip_leading(self, i: int, raw: bytes) -> bytes:
        """Bytes of the first visible token of a text. Only SentencePiece changes them
        (it drops the space its dummy prefix added when encoding)."""
        return raw

    def stream_decoder(self, skip_special: bool = False) -> "StreamDecoder":
        """A decoder fed one id at a time that never returns half a UTF-8 character."""
        return StreamDecoder(self, skip_special)

    # --- display ----------------------------------------------------------------------
    def id_to_piece(self, i: int) -> str:
        """A human-readable piece: real spaces (' Paris'), special tokens by name, and bytes
        that are not a whole UTF-8 character as <0xNN>."""
        (i,) = self._check_ids([i])
        raw = self._token_bytes(i) if not self._is_special(i) else None
        if raw is None:
            return self.special_name(i)
        # Whole characters as text, stray bytes of a split character as <0xNN>.
        return raw.decode("utf-8", errors=_HEX_BYTES)

    def special_name(self, i: int) -> str:
        """How a special token is written in text ("<|eot_id|>", "<s>"): what a chat
        template calls bos_token / eos_token, and what id_to_piece shows for it."""
        return self._token_bytes(i).decode("utf-8", errors="replace")

    def pieces(self, ids) -> list[str]:
        return [self.id_to_piece(i) for i in self._check_ids(ids)]

    def tokens_with_ids(self, text: str, **encode_kwargs) -> list[tuple[int, str]]:
        """[(id, piece), ...] for text: the view a REPL prints to show tokenization."""
        ids = self.encode(text, **encode_kwargs)
        return list(zip(ids, self.pieces(ids)))

    def token_to_id(self, token: str) -> int | None:
        """Id of a special or added token given by its text, e.g. "<|eot_id|>"."""
        return self.special_tokens.get(token, self.added_tokens.get(token))

    # --- chat -------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return self.chat_template is not None or self.chat_format is not None

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for a conversation; encode it with ``encode_chat`` (or
        ``encode(text, bos=False, allow_special=True)``: the text already holds BOS)."""
        return render_chat(self, messages, add_generation_prompt)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        text = self.apply_chat_template(messages, add_generation_prompt)
        return self.encode(text, bos=False, allow_special=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, chat_format={self.chat_format!r}, source={self.source!r})"
        )


class StreamDecoder:
    """Turns token ids into text as they arrive, holding back incomplete UTF-8.

    A single character can span several tokens (byte-level BPE splits emoji into byte
    tokens; SentencePiece falls back to <0xNN> byte pieces), so printing each token's text
    on its own would show garbage. We collect each token's bytes and let Python's
    incremental UTF-8 decoder emit only complete characters; bytes that can never become a
    character are replaced with U+FFFD, exactly as ``decode`` does.

        dec = tok.stream_decoder()
        for i in generated_ids:
            print(dec.push(i), end="", flush=True)
        print(dec.flush())
    """

    def __init__(self, tok: Tokenizer, skip_special: bool = False):
        self.tok = tok
        self.skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True  # nothing visible emitted yet (SentencePiece strips one space there)

    def push(self, i: int) -> str:
        (i,) = self.tok._check_ids([i])
        if self.skip_special and self.tok._is_special(i):
            return ""
        raw = self.tok._token_bytes(i)
        if self._at_start and raw:
            raw = self.tok._strip_leading(i, raw)
            self._at_start = False
        return self._utf8.decode(raw)

    def flush(self) -> str:
        """Whatever is left (an incomplete character at the very end becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


__all__ = ["Tokenizer", "StreamDecoder", "clean_surrogates", "TokenizerError", "TokenizerTypeError", "TokenIdError"]
