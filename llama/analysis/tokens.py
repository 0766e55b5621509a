"""Token labels: a prompt's ids with one readable label per token.

Byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2) spell a space as "Ġ" and a newline
as "Ċ"; SentencePiece (Llama 2) spells a space as "▁". A label shows what the token
means, with the invisible characters made visible ("␣" for a space, "↵" for a newline).
Labels are plain text: a front end escapes them for its medium (llama.plots does for
matplotlib's mathtext, a web page for HTML).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

_PIECE_MARKERS = {"Ġ": " ", "Ċ": "\n", "ĉ": "\t", "▁": " "}


def visible_token(text: str, max_len: int = 14) -> str:
    """A token's text made visible: leading space -> "␣", newline -> "↵", "" -> "∅"."""
    for marker, real in _PIECE_MARKERS.items():
        text = text.replace(marker, real)
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    if text == "":
        text = "∅"
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text


@dataclass
class Tokens:
    """A prompt as the views see it: ids and one display label per token."""

    ids: list[int]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def axis_labels(self, with_index: bool = False) -> list[str]:
        if with_index:
            return [f"{i}:{lab}" for i, lab in enumerate(self.labels)]
        return list(self.labels)


def token_text(tok, token_id: int) -> str:
    """What one token id reads as: decoded on its own, else its piece, else "#id"."""
    try:
        text = tok.decode([int(token_id)])
    except Exception:  # a lone byte of a multi-byte character decodes to nothing useful
        text = ""
    if text == "" or text == "\ufffd":
        try:
            text = tok.id_to_piece(int(token_id))
        except Exception:
            text = f"#{int(token_id)}"
    return text


def tokens_from_tokenizer(tok, ids: Sequence[int]) -> Tokens:
    """Labels from a tokenizer: decode each id on its own (falls back to its piece)."""
    return Tokens([int(i) for i in ids], [visible_token(token_text(tok, i)) for i in ids])


def tokens_from_pieces(ids: Sequence[int], pieces: Sequence[str] | None) -> Tokens:
    """Labels from stored pieces (an export's context), or from the ids alone."""
    ids = [int(i) for i in ids]
    if pieces is None or len(pieces) != len(ids):
        return Tokens(ids, [f"#{i}" for i in ids])
    return Tokens(ids, [visible_token(str(p)) for p in pieces])


def plain_tokens(ids: Sequence[int]) -> Tokens:
    """Labels "#id" for when no tokenizer is at hand (tiny random models, tests)."""
    return tokens_from_pieces(ids, None)


__all__ = ["Tokens", "visible_token", "token_text", "tokens_from_tokenizer",
           "tokens_from_pieces", "plain_tokens"]
