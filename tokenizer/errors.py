"""The errors every tokenizer raises, in a module of their own so that any part of the
package (the interface in base.py, chat formatting in chat.py, the concrete tokenizers)
can import them without importing each other."""

from __future__ import annotations


class TokenizerError(ValueError):
    """Bad input to a tokenizer (a ValueError, so callers can catch either)."""


class TokenizerTypeError(TypeError, ValueError):
    """Input of the wrong type; both a TypeError and a ValueError, whichever you catch."""


class TokenIdError(IndexError, ValueError):
    """An id outside the vocabulary; both an IndexError and a ValueError."""


__all__ = ["TokenizerError", "TokenizerTypeError", "TokenIdError"]
