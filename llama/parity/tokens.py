"""The tokenizer check: our ids against transformers' tokenizer, on the prompts and on a
built-in corpus of the texts tokenizers get wrong.

A model comparison feeds the same ids to both models, so it cannot see a tokenizer bug;
this check can, and it never blames the model for one.

Two ways of treating text that looks like a special token ("<|im_start|>") are compared:
"parsed" (ours with allow_special=True against transformers' default, which matches added
tokens in text) and "as text" (ours with allow_special=False against transformers with
split_special_tokens=True), the latter only for texts that contain such a token.
"""

from __future__ import annotations

from typing import Any, Iterable

from .report import TokenizerCase, TokenizerCheck

# Texts that exercise what byte-level BPE and SentencePiece tokenizers disagree on.
CORPUS: tuple[str, ...] = (
    # whitespace
    "hello world",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "tabs\tand\ttabs",
    "line one\nline two\n\nafter a blank line\n",
    "\n\n\n",
    "a  b   c    d",
    "    indented code\n\tand a tab",
    # digits
    "1234567890",
    "3.14159 and 2,718,281",
    "in 2024, 12 of 365 days",
    "x = 10**9 + 7",
    # emoji, accents, scripts
    "emoji: 🙂👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "Grüße aus Köln, naïve café, Ångström",
    "你好，世界！ 中文分词很难。",
    "日本語のテキストとカタカナ",
    "한국어 문장입니다",
    "Привет, мир! Ελληνικά",
    "مرحبا بالعالم",
    # code and punctuation
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    "{'key': [1, 2, 3], \"quote\": null}",
    "can't won't it's we're I'm you'll they'd",
    "...!!!???---___***",
    # special-looking text
    "<s> </s> <unk> <pad>",
    "<|endoftext|>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "[INST] hello [/INST]",
    "<|not_a_real_token|>",
)


def _their_ids(hf_tok: Any, text: str, split_special: bool) -> list[int]:
    if split_special:
        return list(hf_tok(text, split_special_tokens=True)["input_ids"])
    return list(hf_tok(text)["input_ids"])


def _looks_special(hf_tok: Any, text: str) -> bool:
    names = set(getattr(hf_tok, "all_special_tokens", []) or [])
    names |= {str(t) for t in (getattr(hf_tok, "added_tokens_decoder", {}) or {}).values()}
    return any(n and n in text for n in names)


def _note(ours: list[int], theirs: list[int], bos: int | None) -> str:
    if bos is not None and ours[1:] == theirs and ours[:1] == [bos]:
        return "differs only in a leading BOS (ours adds it, transformers does not)"
    if bos is not None and theirs[1:] == ours and theirs[:1] == [bos]:
        return "differs only in a leading BOS (transformers adds it, ours does not)"
    if len(ours) == len(theirs):
        swapped = {(a, b) for a, b in zip(ours, theirs) if a != b}
        if len(swapped) <= 2:
            pairs = ", ".join(f"ours {a} for their {b}" for a, b in sorted(swapped))
            return f"same length, different ids: {pairs}"
    return ""


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_tokenizers(
    ours: Any, hf_tok: Any, prompts: Iterable[str], corpus: Iterable[str] = CORPUS
) -> TokenizerCheck:
    """Encode every prompt and corpus text with both tokenizers (BOS as each adds it)."""
    check = TokenizerCheck(available=True)
    bos = getattr(ours, "bos_id", None)
    seen: set[str] = set()
    for where, texts in (("prompt", prompts), ("corpus", corpus)):
        for text in texts:
            if text in seen:
                continue
            seen.add(text)
            modes = [("parsed", True, False)]
            if _looks_special(hf_tok, text):
                modes.append(("as text", False, True))
            for special, allow, split in modes:
                mine = list(ours.encode(text, bos=True, allow_special=allow))
                try:
                    theirs = _their_ids(hf_tok, text, split)
                except TypeError:  # an old transformers without split_special_tokens
                    continue
                case = TokenizerCase(text, where, special, mine, theirs)
                if not case.match:
                    case.first_difference = _first_difference(mine, theirs)
                    case.note = _note(mine, theirs, bos)
                check.cases.append(case)
    return check


__all__ = ["CORPUS", "compare_tokenizers"]
