"""llama.interp on the default model, SmolLM2-135M-Instruct (float32; skipped when absent).

"The capital of France is" against "The capital of Italy is": one token differs (position
3), and the model answers " Paris" for the first. Exact invariants of patching, not
numbers copied from a run (one picture-level check is marked as such): positions before the change hold identical values in both runs
(score 0); the final residual at the last position decides the last logits (score 1);
patching the one differing embedding turns the corrupted run into the clean one (score 1).
"""

from __future__ import annotations

import pytest
import torch

from llama.interp import (
    attribution,
    first_token_scores,
    induction_scores,
    logit_diff_metric,
    patched_logits,
    patching,
)
from real_models import SMOLLM2_GGUF, needs_smollm2

pytestmark = needs_smollm2

CLEAN, CORRUPT = "The capital of France is", "The capital of Italy is"


@pytest.fixture(scope="module")
def smollm2():
    from tokenizer import load_tokenizer
    from weights import load_model

    return load_model(SMOLLM2_GGUF, dtype="float32"), load_tokenizer(SMOLLM2_GGUF)


@pytest.mark.usefixtures("one_thread")
def test_residual_patching_france_to_italy(smollm2):
    model, tok = smollm2
    metric = logit_diff_metric(model, CLEAN, CORRUPT, " Paris", " Rome", tokenizer=tok)
    assert metric.clean_diff > 0 > metric.corrupt_diff  # Paris for France, Rome for Italy
    result = patching(model, CLEAN, CORRUPT, metric, site="resid_post", tokenizer=tok)
    assert result.scores.shape == (30, 5)
    assert result.clean_labels[3] == " France" and result.corrupt_labels[3] == " Italy"
    assert result.scores[:, :3].abs().max() <= 1e-4  # identical before the change
    assert result.scores[-1, -1] == pytest.approx(1.0, abs=1e-4)
    assert result.scores[-1, 3] == pytest.approx(0.0, abs=1e-4)  # too late to matter
    # Not an invariant but the known picture (the README's France example): early on the
    # information sits at " France", by the end it has moved to the last token.
    assert result.scores[0, 3] > 0.9 and result.scores[0, 4] < 0.1
    embedding = patched_logits(model, CLEAN, CORRUPT, "resid_pre", layer=0, position=3, tokenizer=tok)
    assert metric(embedding) == pytest.approx(1.0, abs=1e-4)


def test_dla_of_paris_sums_to_its_logit(smollm2):
    model, tok = smollm2
    ids = tok.encode(CLEAN)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1]
    paris, rome = tok.encode(" Paris", bos=False)[0], tok.encode(" Rome", bos=False)[0]
    result = attribution(model, ids, " Paris", tokenizer=tok)
    assert result.target == (paris, None)
    assert abs(result.total - float(logits[paris])) <= 1e-4
    assert abs(sum(result.parts(heads=True).values()) - float(logits[paris])) <= 1e-4
    diff = attribution(model, ids, (" Paris", " Rome"), tokenizer=tok)
    assert abs(diff.total - float(logits[paris] - logits[rome])) <= 1e-4
    assert diff.target_label == "' Paris' - ' Rome'"


def test_a_trained_model_has_induction_heads_and_sinks(smollm2):
    """Random tiny models score about 1/T on both; a trained model has heads near 1
    (SmolLM2's induction heads are what the gallery's attention_head.png shows)."""
    model, tok = smollm2
    induction = induction_scores(model, length=20, batch=2, seed=0, low=100)
    assert induction.top(1)[0][2] > 0.5
    sink = first_token_scores(model, "The quick brown fox jumps over the lazy dog", tokenizer=tok)
    assert sink.top(1)[0][2] > 0.9
