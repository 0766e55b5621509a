"""What each attention head looks at, as one number per head (layer x head maps).

From the attention probabilities probs[b, h, t, s] (query t, key s; hook point
layers.L.attention.probs), averaged over the batch and over the query positions listed:

    previous-token   probs[t, t-1]          for t >= 1: "look at the token before me"
    first-token      probs[t, 0]            for t >= 1: the attention sink many models use
                                            as a place to put attention they do not need
    induction        probs[t, t - n + 1]    on a random sequence of n tokens repeated
                                            twice, for t in the second copy: "find the
                                            earlier occurrence of my token and look at
                                            the token that followed it"

Query 0 is left out of the first two scores: it can only look at itself, which says
nothing about the head. A score is an average probability, so it lies in [0, 1].

    scores = previous_token_scores(model, ids)     # HeadMap, scores (n_layers, H)
    ind = induction_scores(model, length=20, seed=0)
    ind.top(3)                                     # [(layer, head, score), ...]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..hooks import run_with_cache
from .common import HeadMap, InterpError, Prompt, as_prompt, dims, token_labels


def _probs(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of every layer: (n_layers, B, H, T, T) float32, CPU."""
    try:
        _, cache = run_with_cache(model, tokens, "layers.*.attention.probs")
    finally:
        model.reset_cache()
    return cache.stack("layers.*.attention.probs")


def _diagonal_score(probs: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and over pairs (queries[i], keys[i]) of probs[..., q, k]: (L, H)."""
    picked = probs[:, :, :, queries, keys]  # (L, B, H, n_pairs)
    return picked.mean(dim=(1, 3))


def _head_map(kind: str, scores: torch.Tensor, description: str, tokens: torch.Tensor, tokenizer) -> HeadMap:
    ids = tokens[0].tolist()
    return HeadMap(kind, scores.float(), description, ids, token_labels(ids, tokenizer))


def _check_long_enough(tokens: torch.Tensor, what: str) -> None:
    if tokens.shape[1] < 2:
        raise InterpError(f"the {what} score needs a prompt of at least 2 tokens, got {tokens.shape[1]}")


def attention_head_scores(model: torch.nn.Module, ids: Prompt, tokenizer: Any = None) -> dict[str, HeadMap]:
    """The previous-token and first-token scores of every head from one run of `ids`
    (one prompt, or a (B, T) batch: averaged over it)."""
    tokens = as_prompt(model, ids, "prompt", tokenizer, allow_batch=True)
    _check_long_enough(tokens, "previous-token")
    probs = _probs(model, tokens)
    T = tokens.shape[1]
    t = torch.arange(1, T)
    return {
        "previous-token": _head_map(
            "previous-token", _diagonal_score(probs, t, t - 1),
            "mean attention from each token to the one before it", tokens, tokenizer,
        ),
        "first-token": _head_map(
            "first-token", _diagonal_score(probs, t, torch.zeros_like(t)),
            "mean attention from each token (after the first) to the first token", tokens, tokenizer,
        ),
    }


def previous_token_scores(model: torch.nn.Module, ids: Prompt, tokenizer: Any = None) -> HeadMap:
    """Mean of probs[t, t-1] over t >= 1, per head: (n_layers, H)."""
    return attention_head_scores(model, ids, tokenizer)["previous-token"]


def first_token_scores(model: torch.nn.Module, ids: Prompt, tokenizer: Any = None) -> HeadMap:
    """Mean of probs[t, 0] over t >= 1, per head (attention sink): (n_layers, H)."""
    return attention_head_scores(model, ids, tokenizer)["first-token"]


def repeated_random_tokens(
    vocab_size: int,
    length: int,
    batch: int = 1,
    seed: int = 0,
    prefix: Sequence[int] = (),
    low: int = 0,
    high: int | None = None,
) -> torch.Tensor:
    """prefix + R + R for random R of `length` ids in [low, high): (batch, len(prefix) + 2*length).

    high defaults to vocab_size; pass low/high to keep special tokens out of R.
    """
    high = vocab_size if high is None else high
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise InterpError(f"length must be an integer >= 2, got {length!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InterpError(f"batch must be an integer >= 1, got {batch!r}")
    if not 0 <= low < high <= vocab_size:
        raise InterpError(f"need 0 <= low < high <= vocab_size ({vocab_size}), got low={low}, high={high}")
    gen = torch.Generator().manual_seed(int(seed))
    rand = torch.randint(low, high, (batch, length), generator=gen)  # (B, n)
    pre = torch.tensor(list(prefix), dtype=torch.long).reshape(1, -1).expand(batch, -1)
    return torch.cat([pre, rand, rand], dim=1)


def induction_scores(
    model: torch.nn.Module,
    length: int = 20,
    batch: int = 4,
    seed: int = 0,
    prefix: Sequence[int] = (),
    low: int = 0,
    high: int | None = None,
    tokens: torch.Tensor | None = None,
) -> HeadMap:
    """Induction score per head on random tokens repeated twice: (n_layers, H).

    For each query t in the second copy, the attention to t - length + 1: the position just
    after the same token's first occurrence. The sequences are prefix + R + R with R drawn
    from [low, high) by `seed` (see repeated_random_tokens); prefix is e.g. [bos_id] for a
    model that always sees BOS first. `tokens` (B, len(prefix) + 2*length) uses your own.
    """
    d = dims(model)
    if tokens is None:
        tokens = repeated_random_tokens(d.vocab_size, length, batch, seed, prefix, low, high)
    tokens = as_prompt(model, tokens, "repeated sequence", allow_batch=True)
    n, p = length, len(prefix)
    if tokens.shape[1] != p + 2 * n:
        raise InterpError(
            f"tokens has {tokens.shape[1]} positions, but prefix + 2 x length is {p + 2 * n}"
        )
    if not torch.equal(tokens[:, p : p + n], tokens[:, p + n :]):
        raise InterpError("tokens must be prefix + R + R: the two halves after the prefix differ")
    probs = _probs(model, tokens)
    q = torch.arange(p + n, p + 2 * n)  # queries: the second copy
    return _head_map(
        "induction", _diagonal_score(probs, q, q - n + 1),
        f"mean attention to the token after the earlier occurrence ({n} random tokens repeated)",
        tokens, None,
    )


__all__ = [
    "attention_head_scores",
    "previous_token_scores",
    "first_token_scores",
    "repeated_random_tokens",
    "induction_scores",
]
