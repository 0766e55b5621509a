"""Bad input to llama.interp gets an InterpError that says what was wrong and what to do."""

from __future__ import annotations

import pytest
import torch

from llama.interp import (
    SITES,
    InterpError,
    ablated_logits,
    answer_id,
    attribution,
    head_ablation_sweep,
    induction_scores,
    logit_attribution,
    logit_diff_metric,
    patch_sweep,
    patched_logits,
    patching,
    previous_token_scores,
    steer,
    steering_topk,
    steering_vector,
)
from real_models import INSTALL, SMOLLM2_GGUF
from tiny_models import ours_from_hf, tiny_hf_model


@pytest.fixture(scope="module")
def model():
    return ours_from_hf(tiny_hf_model("llama32"))  # 2 layers, 8 query heads, 2 kv heads


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if SMOLLM2_GGUF is None:
        pytest.skip(f"SmolLM2 GGUF not installed ({INSTALL})")
    from tokenizer import load_tokenizer

    return load_tokenizer(SMOLLM2_GGUF)


CLEAN = [5, 17, 99, 201, 8, 63, 7]
CORRUPT = [5, 17, 98, 201, 8, 63, 7]


def _metric(model):
    return logit_diff_metric(model, CLEAN, CORRUPT, 3, 4)


def test_prompts_of_different_lengths(model):
    longer = CORRUPT + [9]
    with pytest.raises(InterpError, match=r"clean prompt has 7 tokens but the corrupted prompt has 8.*same number of tokens"):
        patch_sweep(model, CLEAN, longer, lambda lg: 0.0)
    with pytest.raises(InterpError, match="7 tokens but the corrupted prompt has 8"):
        logit_diff_metric(model, CLEAN, longer, 3, 4)
    with pytest.raises(InterpError, match="7 tokens but the corrupted prompt has 8"):
        patched_logits(model, CLEAN, longer, "resid_post", layer=0)


def test_an_answer_that_is_not_a_single_token_says_what_it_tokenizes_to(smollm2_tokenizer):
    tok = smollm2_tokenizer
    with pytest.raises(InterpError) as e:
        answer_id(" Parisians", 49152, tok)
    msg = str(e.value)
    assert "' Parisians' is not a single token" in msg
    assert "tokenizes to 2 tokens [' Paris', 'ians']" in msg
    assert f"ids {tok.encode(' Parisians', bos=False)}" in msg
    assert answer_id(" Paris", 49152, tok) == tok.encode(" Paris", bos=False)[0]
    with pytest.raises(InterpError, match="not a single token: it tokenizes to 0 tokens"):
        answer_id("", 49152, tok)
    # Through the experiments that take answers.
    model = ours_from_hf(tiny_hf_model("llama32"))
    with pytest.raises(InterpError, match="' Parisians' is not a single token"):
        logit_diff_metric(model, CLEAN, CORRUPT, " Parisians", 4, tokenizer=tok)
    with pytest.raises(InterpError, match="not a single token"):
        logit_attribution(model, CLEAN, (" Parisians", 3), tokenizer=tok)
    # A real token that this (tiny) model's vocabulary does not have.
    with pytest.raises(InterpError, match="outside this model's vocabulary 0..383"):
        logit_attribution(model, CLEAN, " Paris", tokenizer=tok)


def test_answers_and_targets(model):
    with pytest.raises(InterpError, match="is text: pass tokenizer="):
        logit_attribution(model, CLEAN, " Paris")
    with pytest.raises(InterpError, match="token id 384 is out of range: this model's vocabulary is 0..383"):
        logit_attribution(model, CLEAN, 384)
    with pytest.raises(InterpError, match="token id -1 is out of range"):
        logit_diff_metric(model, CLEAN, CORRUPT, -1, 4)
    with pytest.raises(InterpError, match="a token id \\(int\\) or one token's text, got 2.5"):
        logit_attribution(model, CLEAN, 2.5)
    with pytest.raises(InterpError, match="a pair .* got 3 items"):
        logit_attribution(model, CLEAN, (1, 2, 3))
    with pytest.raises(InterpError, match="the same token"):
        logit_diff_metric(model, CLEAN, CORRUPT, 3, 3)
    with pytest.raises(InterpError, match="same logit difference .* undefined"):
        logit_diff_metric(model, CLEAN, CLEAN, 3, 4)


def test_layers_heads_and_positions_out_of_range(model):
    with pytest.raises(InterpError, match=r"layer 2 is out of range: this model has 2 layers, so use 0\.\.1"):
        steering_vector(model, CLEAN, CORRUPT, layer=2)
    with pytest.raises(InterpError, match="layer -3 is out of range"):
        patched_logits(model, CLEAN, CORRUPT, "resid_post", layer=-3)
    with pytest.raises(InterpError, match=r"head 8 is out of range: this model has 8 query heads, so use 0\.\.7"):
        patched_logits(model, CLEAN, CORRUPT, "heads", layer=0, head=8)
    with pytest.raises(InterpError, match=r"kv head 2 is out of range: this model has 2 key/value heads"):
        patched_logits(model, CLEAN, CORRUPT, "kv_heads", layer=0, head=2)
    with pytest.raises(InterpError, match="head 99 is out of range"):
        ablated_logits(model, CLEAN, [(0, 99)])
    with pytest.raises(InterpError, match="layer 5 is out of range"):
        ablated_logits(model, CLEAN, [(5, 0)])
    with pytest.raises(InterpError, match=r"position 7 is out of range: there are 7 positions \(position 0\.\.6, or -1 for the last\)"):
        logit_attribution(model, CLEAN, 3, position=7)
    with pytest.raises(InterpError, match="position -8 is out of range"):
        patching(model, CLEAN, CORRUPT, _metric(model), site="heads", position=-8)
    with pytest.raises(InterpError, match="layer must be an integer"):
        steering_vector(model, CLEAN, CORRUPT, layer="1")
    result = patching(model, CLEAN, CORRUPT, _metric(model), site="kv_heads")
    with pytest.raises(InterpError, match="kv head 2 is out of range"):
        result.cell(0, 2)
    with pytest.raises(InterpError, match="layer 2 is out of range"):
        result.cell(2, 0)
    scores = previous_token_scores(model, CLEAN)
    with pytest.raises(InterpError, match="head 8 is out of range"):
        scores.cell(0, 8)


def test_a_site_that_does_not_exist_lists_the_valid_ones(model):
    with pytest.raises(InterpError) as e:
        patch_sweep(model, CLEAN, CORRUPT, _metric(model), site="resid")
    msg = str(e.value)
    assert "no patching site 'resid'" in msg
    assert "resid_pre, resid_mid, resid_post, attn_out, mlp_out, heads, kv_heads" in msg
    assert all(site in msg for site in SITES)
    with pytest.raises(InterpError, match="the sites are"):
        patched_logits(model, CLEAN, CORRUPT, "attention", layer=0)


def test_options_that_do_not_fit_the_site(model):
    m = _metric(model)
    with pytest.raises(InterpError, match="position= applies to the per-head sites"):
        patching(model, CLEAN, CORRUPT, m, site="resid_post", position=3)
    with pytest.raises(InterpError, match="kv_part= applies to site='kv_heads' only"):
        patching(model, CLEAN, CORRUPT, m, site="heads", kv_part="k")
    with pytest.raises(InterpError, match="kv_part must be one of kv, k, v"):
        patching(model, CLEAN, CORRUPT, m, site="kv_heads", kv_part="q")
    with pytest.raises(InterpError, match="head= applies to the per-head sites"):
        patched_logits(model, CLEAN, CORRUPT, "resid_post", layer=0, head=1)
    with pytest.raises(InterpError, match="patches one head: give head="):
        patched_logits(model, CLEAN, CORRUPT, "heads", layer=0)
    with pytest.raises(InterpError, match="mode must be 'zero' or 'mean'"):
        head_ablation_sweep(model, CLEAN, m, mode="max")
    with pytest.raises(InterpError, match="reference_ids= is for mode='mean'"):
        head_ablation_sweep(model, CLEAN, m, mode="zero", reference_ids=CLEAN)
    with pytest.raises(InterpError, match="how must be 'mean'"):
        steering_vector(model, CLEAN, CORRUPT, layer=0, how="first")
    v = steering_vector(model, CLEAN, CORRUPT, layer=0)
    with pytest.raises(InterpError, match="taken at layer 0; adding it at layer 1"):
        steering_topk(model, CLEAN, v, layer=1)
    with pytest.raises(InterpError, match="needs layer="):
        with steer(model, v.vector):
            pass
    with pytest.raises(InterpError, match=r"shape \(64,\) for this model, got \(3,\)"):
        with steer(model, torch.ones(3), layer=0):
            pass
    with pytest.raises(InterpError, match="two halves after the prefix differ"):
        induction_scores(model, length=3, tokens=torch.tensor([[1, 2, 3, 1, 2, 4]]))


def test_metrics_that_are_not_functions_of_one_run(model):
    with pytest.raises(InterpError, match="metric must be a function logits"):
        patch_sweep(model, CLEAN, CORRUPT, "logit_diff")
    with pytest.raises(InterpError, match=r"return one number for a \(1, T, V\) run, got a tensor of shape \(7, 384\)"):
        patch_sweep(model, CLEAN, CORRUPT, lambda logits: logits[0])
    with pytest.raises(InterpError, match="must return one number"):
        head_ablation_sweep(model, CLEAN, lambda logits: "good")


def test_prompts_that_are_not_one_sequence_of_ids(model):
    with pytest.raises(InterpError, match="must be one sequence \\(1, T\\), got a batch of 2"):
        patch_sweep(model, torch.tensor([CLEAN, CLEAN]), torch.tensor([CORRUPT, CORRUPT]), _metric(model))
    with pytest.raises(InterpError, match="must hold integer token ids, got dtype torch.float32"):
        logit_attribution(model, torch.tensor(CLEAN, dtype=torch.float32), 3)
    with pytest.raises(InterpError, match=r"token ids from 5 to 999, but this model's vocabulary is 0\.\.383"):
        attribution(model, CLEAN[:-1] + [999], 3)
    with pytest.raises(InterpError, match="the prompt is empty"):
        attribution(model, [], 3)
    with pytest.raises(InterpError, match="is text .*: pass tokenizer="):
        attribution(model, "The capital of France is", 3)
    with pytest.raises(InterpError, match="at least 2 tokens"):
        previous_token_scores(model, [5])
    with pytest.raises(TypeError, match="expected a model of this project"):
        patch_sweep(torch.nn.Linear(2, 2), CLEAN, CORRUPT, _metric(model))
