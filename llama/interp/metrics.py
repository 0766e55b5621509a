"""Metrics for patching and ablation: functions logits (1, T, V) -> float.

The usual one is the logit difference between the right answer and a wrong one at the
last position, normalised so that the clean run scores 1 and the corrupted run 0:

    metric = logit_diff_metric(model, clean_ids, corrupt_ids, " Paris", " Rome", tokenizer=tok)
    metric(patched_logits)   # 1: the patch restores everything, 0: it restores nothing

A patch that brings back half of the clean run's preference for the right answer scores
0.5; values outside [0, 1] mean the patch overshoots (or reverses) the clean behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .common import (
    Answer,
    InterpError,
    Prompt,
    check_position,
    dims,
    answer_id,
    same_length_prompts,
    token_label,
)


def _check_run(logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[0] != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InterpError(f"a metric gets the logits of one run, shape (1, T, V); got {shape}")
    return logits


def logit_diff(logits: torch.Tensor, answer: int, wrong: int, position: int = -1) -> float:
    """logits[0, position, answer] - logits[0, position, wrong] for one run (1, T, V)."""
    row = _check_run(logits)[0, check_position(position, logits.shape[1])]  # (V,)
    return float(row[answer].float() - row[wrong].float())


@dataclass(frozen=True)
class LogitDiffMetric:
    """(logit diff of a run - corrupted run's) / (clean run's - corrupted run's).

    Call it on one run's logits (1, T, V). clean_diff and corrupt_diff are the two
    reference logit differences it was normalised with.
    """

    answer: int
    wrong: int
    position: int
    clean_diff: float
    corrupt_diff: float
    answer_label: str = ""
    wrong_label: str = ""

    def raw(self, logits: torch.Tensor) -> float:
        """The plain logit difference of this run."""
        return logit_diff(logits, self.answer, self.wrong, self.position)

    def __call__(self, logits: torch.Tensor) -> float:
        return (self.raw(logits) - self.corrupt_diff) / (self.clean_diff - self.corrupt_diff)

    def describe(self) -> str:
        a = self.answer_label or f"#{self.answer}"
        w = self.wrong_label or f"#{self.wrong}"
        return (
            f"normalised logit difference {a!r} - {w!r} at position {self.position} "
            f"(clean {self.clean_diff:+.3f} -> 1, corrupted {self.corrupt_diff:+.3f} -> 0)"
        )


def logit_diff_metric(
    model: torch.nn.Module,
    clean_ids: Prompt,
    corrupt_ids: Prompt,
    answer: Answer,
    wrong: Answer,
    position: int = -1,
    tokenizer: Any = None,
) -> LogitDiffMetric:
    """The normalised logit difference answer - wrong: clean run 1, corrupted run 0.

    answer, wrong: token ids, or single-token texts with `tokenizer` (" Paris"). Runs both
    prompts once to measure the two reference differences; an error if they are equal
    (there is then nothing for a patch to restore). Resets the model's KV cache.
    """
    d = dims(model)
    clean, corrupt = same_length_prompts(model, clean_ids, corrupt_ids, tokenizer)
    a = answer_id(answer, d.vocab_size, tokenizer, "answer")
    w = answer_id(wrong, d.vocab_size, tokenizer, "wrong answer")
    if a == w:
        raise InterpError(f"the answer and the wrong answer are the same token (id {a})")
    position = check_position(position, clean.shape[1])
    try:
        with torch.no_grad():
            clean_diff = logit_diff(model(clean), a, w, position)
            corrupt_diff = logit_diff(model(corrupt), a, w, position)
    finally:
        model.reset_cache()
    if abs(clean_diff - corrupt_diff) < 1e-6:
        raise InterpError(
            f"the clean and corrupted prompts give the same logit difference "
            f"({clean_diff:.6g}) between the two answers: the normalised metric is undefined. "
            "Choose prompts that the model answers differently, or other answer tokens"
        )
    return LogitDiffMetric(
        answer=a,
        wrong=w,
        position=position,
        clean_diff=clean_diff,
        corrupt_diff=corrupt_diff,
        answer_label=token_label(a, tokenizer) if tokenizer is not None else "",
        wrong_label=token_label(w, tokenizer) if tokenizer is not None else "",
    )


@dataclass(frozen=True)
class LogProbMetric:
    """log p(answer) at `position` of one run (1, T, V): a metric that needs no second prompt."""

    answer: int
    position: int = -1
    answer_label: str = ""

    def __call__(self, logits: torch.Tensor) -> float:
        row = _check_run(logits)[0, check_position(self.position, logits.shape[1])]  # (V,)
        return float(row.float().log_softmax(-1)[self.answer])

    def describe(self) -> str:
        a = self.answer_label or f"#{self.answer}"
        return f"log p({a!r}) at position {self.position}"


def logprob_metric(
    model: torch.nn.Module, answer: Answer, position: int = -1, tokenizer: Any = None
) -> LogProbMetric:
    """The log-probability of `answer` (an id, or one token's text with `tokenizer`)."""
    a = answer_id(answer, dims(model).vocab_size, tokenizer, "answer")
    if isinstance(position, bool) or not isinstance(position, int):
        raise InterpError(f"position must be an integer, got {position!r}")
    label = token_label(a, tokenizer) if tokenizer is not None else ""
    return LogProbMetric(answer=a, position=position, answer_label=label)


__all__ = ["logit_diff", "LogitDiffMetric", "logit_diff_metric", "LogProbMetric", "logprob_metric"]
