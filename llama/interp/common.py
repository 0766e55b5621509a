"""What every experiment in llama.interp shares: the error type, reading prompts and
answer tokens, the model's sizes, token labels, and which query heads share a kv head.

Everything here goes through the model protocol that every model family of this project
offers (model.args.n_layers / n_heads / n_kv_heads / head_dim / dim / vocab_size,
model.tok_embeddings, model.layers[i].attention.wo, model.norm, model.output,
model.hook_names()), never through Llama-only names.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

from ..checks import check_index


class InterpError(ValueError):
    """An experiment that cannot run as asked (bad prompt, answer, index or site)."""


# A prompt: token ids as a list, a (T,) or (1, T) tensor, or text (with a tokenizer).
Prompt = Union[str, Sequence[int], torch.Tensor]
# An answer token: an id, or text that is exactly one token (with a tokenizer).
Answer = Union[int, str]


# ----------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    """The sizes an experiment needs, read from model.args."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    dim: int
    vocab_size: int
    max_seq_len: int

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


def dims(model: Any) -> Dims:
    """The model's sizes; a TypeError for anything that is not one of this project's models."""
    if not (hasattr(model, "args") and hasattr(model, "hook_names") and hasattr(model, "layers")):
        raise TypeError(
            f"expected a model of this project (e.g. from weights.load_model), got "
            f"{type(model).__name__}: the experiments in llama.interp run through its hook points"
        )
    a = model.args
    return Dims(
        n_layers=int(a.n_layers),
        n_heads=int(a.n_heads),
        n_kv_heads=int(a.n_kv_heads),
        head_dim=int(a.head_dim),
        dim=int(a.dim),
        vocab_size=int(a.vocab_size),
        max_seq_len=int(a.max_seq_len),
    )


def query_heads_of(kv_head: int, d: Dims) -> list[int]:
    """The query heads that read key/value head `kv_head`.

    Grouped-query attention shares kv head g among the n_heads / n_kv_heads consecutive
    query heads g*n_rep .. (g+1)*n_rep - 1 (llama.model.repeat_kv lays them out this way,
    and so does torch's scaled_dot_product_attention with enable_gqa).
    """
    n_rep = d.group_size
    return list(range(kv_head * n_rep, (kv_head + 1) * n_rep))


def check_layer(layer: object, d: Dims) -> int:
    return check_index(layer, d.n_layers, "layer", "layers", error=InterpError)


def check_head(head: object, d: Dims) -> int:
    return check_index(head, d.n_heads, "head", "query heads", error=InterpError)


def check_kv_head(head: object, d: Dims) -> int:
    return check_index(head, d.n_kv_heads, "kv head", "key/value heads", error=InterpError)


def check_position(position: object, length: int) -> int:
    return check_index(position, length, "position", error=InterpError)  # "there are T positions"


def device_of(model: torch.nn.Module) -> torch.device:
    return model.tok_embeddings.weight.device


# ----------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------


def as_prompt(
    model: torch.nn.Module,
    prompt: Prompt,
    what: str = "prompt",
    tokenizer: Any = None,
    allow_batch: bool = False,
) -> torch.Tensor:
    """One prompt as a (1, T) long tensor on the model's device (or (B, T) with allow_batch).

    prompt: token ids (a list, a (T,) or (1, T) tensor) or text, which needs `tokenizer`
    (encoded as the tokenizer does by default, with BOS where the model uses one).
    """
    d = dims(model)
    if isinstance(prompt, str):
        if tokenizer is None:
            raise InterpError(
                f"the {what} is text ({prompt!r}): pass tokenizer=... to encode it, or give "
                "token ids"
            )
        prompt = tokenizer.encode(prompt)
    if isinstance(prompt, torch.Tensor):
        ids = prompt.detach()
    else:
        try:
            ids = torch.tensor(list(prompt), dtype=torch.long)
        except (TypeError, ValueError, RuntimeError):
            raise InterpError(
                f"the {what} must be token ids (a list of ints or a (1, T) tensor) or text, "
                f"got {type(prompt).__name__}"
            ) from None
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise InterpError(f"the {what} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() == 1:
        ids = ids[None]  # (T,) -> (1, T)
    if ids.dim() != 2:
        raise InterpError(
            f"the {what} must be token ids of shape (T,) or (1, T), got shape {tuple(ids.shape)}"
        )
    if ids.shape[0] != 1 and not allow_batch:
        raise InterpError(
            f"the {what} must be one sequence (1, T), got a batch of {ids.shape[0]}: "
            "run the experiment once per prompt"
        )
    if ids.shape[1] == 0:
        raise InterpError(f"the {what} is empty: give at least one token")
    if ids.shape[1] > d.max_seq_len:
        raise InterpError(
            f"the {what} has {ids.shape[1]} tokens, more than the model's context of "
            f"{d.max_seq_len}"
        )
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= d.vocab_size:
        raise InterpError(
            f"the {what} has token ids from {lo} to {hi}, but this model's vocabulary is "
            f"0..{d.vocab_size - 1}: was it encoded with this model's tokenizer?"
        )
    return ids.to(device=device_of(model), dtype=torch.long)


def same_length_prompts(
    model: torch.nn.Module, clean: Prompt, corrupt: Prompt, tokenizer: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted prompt as (1, T) tensors with the same T, or a clear error."""
    c = as_prompt(model, clean, "clean prompt", tokenizer)
    x = as_prompt(model, corrupt, "corrupted prompt", tokenizer)
    if c.shape[1] != x.shape[1]:
        detail = ""
        if tokenizer is not None:
            detail = (
                f" (clean: {token_labels(c[0].tolist(), tokenizer)}, corrupted: "
                f"{token_labels(x[0].tolist(), tokenizer)})"
            )
        raise InterpError(
            f"the clean prompt has {c.shape[1]} tokens but the corrupted prompt has "
            f"{x.shape[1]}{detail}: activation patching copies values position by position, "
            "so both prompts must have the same number of tokens (change a word for one "
            "that is a single token too)"
        )
    return c, x


# ----------------------------------------------------------------------------------
# Answer tokens and labels
# ----------------------------------------------------------------------------------


def token_label(i: int, tokenizer: Any = None) -> str:
    """How a token reads in a table or on an axis: its text, else its piece, else #id."""
    if tokenizer is None:
        return f"#{int(i)}"
    try:
        text = tokenizer.decode([int(i)])
    except Exception:  # noqa: BLE001 - a lone byte of a character decodes to nothing useful
        text = ""
    if text in ("", "\ufffd") and hasattr(tokenizer, "id_to_piece"):
        try:
            text = tokenizer.id_to_piece(int(i))
        except Exception:  # noqa: BLE001
            text = ""
    return text if text else f"#{int(i)}"


def token_labels(ids: Sequence[int], tokenizer: Any = None) -> list[str]:
    return [token_label(i, tokenizer) for i in ids]


def answer_id(answer: Answer, vocab_size: int, tokenizer: Any = None, what: str = "answer") -> int:
    """A token id from an id or from text that is exactly one token.

    Text that tokenizes to several tokens (or none) is an error that says what it became.
    """
    if isinstance(answer, str):
        if tokenizer is None:
            raise InterpError(
                f"the {what} {answer!r} is text: pass tokenizer=... to look it up, or give "
                "its token id"
            )
        ids = list(tokenizer.encode(answer, bos=False))
        if len(ids) != 1:
            pieces = [token_label(i, tokenizer) for i in ids]
            raise InterpError(
                f"the {what} {answer!r} is not a single token: it tokenizes to {len(ids)} "
                f"tokens {pieces} (ids {ids}). Give a text that is one token (words usually "
                "carry their leading space, e.g. ' Paris') or a token id"
            )
        i = int(ids[0])
        if not 0 <= i < vocab_size:
            raise InterpError(
                f"the {what} {answer!r} is token {i}, outside this model's vocabulary "
                f"0..{vocab_size - 1}: is this the model's own tokenizer?"
            )
        return i
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()  # a one-element tensor of ids, as argmax returns
    try:
        if isinstance(answer, bool):
            raise TypeError
        i = operator.index(answer)  # ints and numpy/torch integers, not 1.5 or "3"
    except TypeError:
        raise InterpError(
            f"the {what} must be a token id (int) or one token's text, got {answer!r}"
        ) from None
    if not 0 <= i < vocab_size:
        raise InterpError(
            f"the {what} token id {i} is out of range: this model's vocabulary is "
            f"0..{vocab_size - 1}"
        )
    return i


def resolve_target(
    target: Any, vocab_size: int, tokenizer: Any = None
) -> tuple[int, int | None]:
    """(id, None) for one token, (id_a, id_b) for a difference logit[a] - logit[b]."""
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise InterpError(
                f"target must be one token or a pair (token, other token) for their logit "
                f"difference, got {len(target)} items"
            )
        a = answer_id(target[0], vocab_size, tokenizer, "target")
        b = answer_id(target[1], vocab_size, tokenizer, "second target")
        if a == b:
            raise InterpError(
                f"the two target tokens are the same (id {a}): their difference is always 0"
            )
        return a, b
    return answer_id(target, vocab_size, tokenizer, "target"), None


def target_label(target: tuple[int, int | None], tokenizer: Any = None) -> str:
    a, b = target
    la = repr(token_label(a, tokenizer)) if tokenizer is not None else token_label(a)
    if b is None:
        return la
    lb = repr(token_label(b, tokenizer)) if tokenizer is not None else token_label(b)
    return f"{la} - {lb}"


# ----------------------------------------------------------------------------------
# A layer x head map (ablation sweeps, attention-pattern scores)
# ----------------------------------------------------------------------------------


@dataclass
class HeadMap:
    """A number for every head: scores[layer, head], with what the number means.

    kind: e.g. "zero ablation", "previous-token"; description: one line for a title or a
    table; baseline: the metric of the unedited run (ablation), else None; ids/labels: the
    prompt the map was measured on (the first row when it was a batch).
    """

    kind: str
    scores: torch.Tensor  # (n_layers, H) float32, CPU
    description: str
    ids: list[int]
    labels: list[str]
    baseline: float | None = None

    @property
    def row_labels(self) -> list[str]:
        return [f"L{i}" for i in range(self.scores.shape[0])]

    @property
    def column_labels(self) -> list[str]:
        return [f"H{h}" for h in range(self.scores.shape[1])]

    def cell(self, layer: int, head: int) -> float:
        n_layers, n_heads = self.scores.shape
        layer = check_index(layer, n_layers, "layer", "layers", error=InterpError)
        head = check_index(head, n_heads, "head", "query heads", error=InterpError)
        return float(self.scores[layer, head])

    def top(self, k: int = 5, largest: bool = True) -> list[tuple[int, int, float]]:
        """The k heads with the highest (or lowest) scores: (layer, head, score)."""
        flat = self.scores.flatten()
        order = torch.argsort(flat, descending=largest, stable=True)[: max(0, int(k))]
        n = self.scores.shape[1]
        return [(int(i) // n, int(i) % n, float(flat[i])) for i in order]


def metric_value(metric: Any, logits: torch.Tensor) -> float:
    """Call metric(logits) for one run (1, T, V) and make sure it gave one number."""
    value = metric(logits)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InterpError(
                f"the metric must return one number for a (1, T, V) run, got a tensor of "
                f"shape {tuple(value.shape)}"
            )
        return float(value.detach().reshape(()).item())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InterpError(
            f"the metric must return one number (a float or a one-element tensor), got "
            f"{type(value).__name__}"
        ) from None


def check_metric(metric: Any) -> None:
    if not callable(metric):
        raise InterpError(
            f"metric must be a function logits (1, T, V) -> float, got {type(metric).__name__}; "
            "llama.interp.logit_diff_metric(model, clean, corrupt, answer, wrong) builds the usual one"
        )


__all__ = [
    "InterpError",
    "Prompt",
    "Answer",
    "Dims",
    "dims",
    "query_heads_of",
    "check_layer",
    "check_head",
    "check_kv_head",
    "check_position",
    "as_prompt",
    "same_length_prompts",
    "token_label",
    "token_labels",
    "answer_id",
    "resolve_target",
    "target_label",
    "HeadMap",
    "metric_value",
    "check_metric",
]
