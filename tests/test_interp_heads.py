"""Head ablation sweeps and attention-pattern head scores (llama.interp.ablation,
llama.interp.head_scores) against computations by hand, and a head built to attend to the
previous token.

* Every cell of the zero- and mean-ablation maps equals one run ablated by hand with
  llama.hooks (ablate_heads, or a lambda that writes the average head output).
* Previous-token, first-token and induction scores equal loops over the captured
  attention probabilities.
* In a tiny Qwen2-shaped model (q/k biases), one head's q/k weights are replaced so that it
  attends to position t-1 whatever the input: it gets the top previous-token score.
"""

from __future__ import annotations

import math

import pytest
import torch

from llama.hooks import ablate_heads, intervene, run_with_cache
from llama.interp import (
    ablated_logits,
    attention_head_scores,
    first_token_scores,
    head_ablation_sweep,
    induction_scores,
    logprob_metric,
    previous_token_scores,
    repeated_random_tokens,
)
from llama.model import rope_inv_freq
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model

T = 8


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def model(request):
    return ours_from_hf(tiny_hf_model(request.param))


def _tokens(model, batch=1, length=T, seed=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.args.vocab_size, (batch, length), generator=gen)


def _metric(model, tokens):
    # The runner-up: random tiny models are so sure of their top token that its log p is 0.
    with torch.no_grad():
        answer = int(model(tokens)[0, -1].topk(2).indices[1])
    return logprob_metric(model, answer)


def test_logprob_metric_is_the_log_softmax(model):
    tokens = _tokens(model)
    metric = _metric(model, tokens)
    with torch.no_grad():
        logits = model(tokens)
    assert metric(logits) == pytest.approx(float(torch.log_softmax(logits[0, -1], -1)[metric.answer]), abs=1e-6)


def test_zero_ablation_sweep_equals_ablating_each_head_by_hand(model):
    tokens = _tokens(model)
    metric = _metric(model, tokens)
    sweep = head_ablation_sweep(model, tokens, metric, mode="zero")
    a = model.args
    assert sweep.scores.shape == (a.n_layers, a.n_heads)
    with torch.no_grad():
        assert sweep.baseline == pytest.approx(metric(model(tokens)), abs=1e-5)
    for layer in range(a.n_layers):
        for h in range(a.n_heads):
            with intervene(model, {f"layers.{layer}.attention.heads": ablate_heads(h)}), torch.no_grad():
                want = metric(model(tokens))
            assert sweep.scores[layer, h] == pytest.approx(want, abs=1e-5)
    assert (sweep.scores - sweep.baseline).abs().max() > 1e-3  # ablations do change things


@pytest.mark.parametrize("reference", [None, "batch"])
def test_mean_ablation_sweep_equals_writing_the_average_by_hand(model, reference):
    tokens = _tokens(model)
    metric = _metric(model, tokens)
    ref = None if reference is None else _tokens(model, batch=3, length=5, seed=8)
    sweep = head_ablation_sweep(model, tokens, metric, mode="mean", reference_ids=ref)
    _, cache = run_with_cache(model, tokens if ref is None else ref, "layers.*.attention.heads")
    for layer in range(model.args.n_layers):
        mean = cache[f"layers.{layer}.attention.heads"].mean(dim=(0, 1))  # (H, Hd)
        for h in range(model.args.n_heads):
            def write_mean(value, h=h, mean=mean):
                out = value.clone()
                out[:, :, h] = mean[h]
                return out

            with intervene(model, {f"layers.{layer}.attention.heads": write_mean}), torch.no_grad():
                want = metric(model(tokens))
            assert sweep.scores[layer, h] == pytest.approx(want, abs=1e-5)
    assert sweep.kind == "mean ablation"


def test_ablating_several_heads_at_once(model):
    tokens = _tokens(model)
    got = ablated_logits(model, tokens, [(0, 1), (-1, 0), (0, 2)])
    with intervene(model, {"layers.0.attention.heads": ablate_heads(1, 2),
                           f"layers.{model.args.n_layers - 1}.attention.heads": ablate_heads(0)}), torch.no_grad():
        want = model(tokens)
    assert (got - want).abs().max() <= 1e-5


# ----------------------------------------------------------------------------------
# Attention-pattern scores
# ----------------------------------------------------------------------------------


def test_previous_and_first_token_scores_equal_loops_over_the_probabilities(model):
    tokens = _tokens(model, batch=2)
    _, cache = run_with_cache(model, tokens, "layers.*.attention.probs")
    scores = attention_head_scores(model, tokens)
    a = model.args
    for layer in range(a.n_layers):
        p = cache[f"layers.{layer}.attention.probs"]  # (B, H, T, T)
        for h in range(a.n_heads):
            prev = [float(p[b, h, t, t - 1]) for b in range(2) for t in range(1, T)]
            first = [float(p[b, h, t, 0]) for b in range(2) for t in range(1, T)]
            assert scores["previous-token"].cell(layer, h) == pytest.approx(sum(prev) / len(prev), abs=1e-6)
            assert scores["first-token"].cell(layer, h) == pytest.approx(sum(first) / len(first), abs=1e-6)
    assert torch.equal(previous_token_scores(model, tokens).scores, scores["previous-token"].scores)
    assert torch.equal(first_token_scores(model, tokens).scores, scores["first-token"].scores)


def test_induction_scores_equal_a_loop_over_the_repeated_sequence(model):
    n, prefix = 6, [1]
    tokens = repeated_random_tokens(model.args.vocab_size, n, batch=3, seed=2, prefix=prefix)
    assert tokens.shape == (3, 1 + 2 * n)
    assert torch.equal(tokens[:, 1 : 1 + n], tokens[:, 1 + n :]) and (tokens[:, 0] == 1).all()
    got = induction_scores(model, length=n, batch=3, seed=2, prefix=prefix)
    _, cache = run_with_cache(model, tokens, "layers.*.attention.probs")
    for layer in range(model.args.n_layers):
        p = cache[f"layers.{layer}.attention.probs"]
        for h in range(model.args.n_heads):
            # Query at 1 + n + j (the second R[j]) looks at 1 + j + 1 (what followed R[j] first).
            vals = [float(p[b, h, 1 + n + j, 1 + j + 1]) for b in range(3) for j in range(n)]
            assert got.cell(layer, h) == pytest.approx(sum(vals) / len(vals), abs=1e-6)


def test_a_head_built_to_attend_to_the_previous_token_gets_the_top_score():
    """Qwen2 has q/k biases. Zero the q rows of head 3 in layer 1 (and the k rows of the kv
    head it reads) and set their biases, so q and k are the same vectors at every position
    whatever the input. RoPE then rotates them by their positions: in the complex pairs of
    Meta's layout, q = A e^{-i theta_j} and k = A give q_t . k_s = A^2 sum_j cos((t-1-s)
    theta_j), largest exactly when s = t - 1. With a few fast-rotating pairs and A = 10 the
    softmax puts almost all of its weight there: a previous-token head by construction."""
    model = ours_from_hf(tiny_hf_model("qwen2"))
    a = model.args
    layer, head = 1, 3
    kv = head // (a.n_heads // a.n_kv_heads)
    Hd = a.head_dim
    theta = rope_inv_freq(Hd, a.rope_theta)  # (Hd/2,) radians per position of each pair
    q0, k0 = torch.zeros(Hd), torch.zeros(Hd)
    A = 10.0
    for j in range(3):  # the three fastest pairs; the others stay 0
        q0[2 * j], q0[2 * j + 1] = A * math.cos(theta[j]), -A * math.sin(theta[j])
        k0[2 * j] = A
    att = model.layers[layer].attention
    with torch.no_grad():
        att.wq.weight[head * Hd : (head + 1) * Hd] = 0
        att.wq.bias[head * Hd : (head + 1) * Hd] = q0
        att.wk.weight[kv * Hd : (kv + 1) * Hd] = 0
        att.wk.bias[kv * Hd : (kv + 1) * Hd] = k0
    tokens = _tokens(model, batch=2, length=12, seed=3)
    scores = previous_token_scores(model, tokens)
    assert scores.top(1)[0][:2] == (layer, head)
    assert scores.cell(layer, head) > 0.95
    others = scores.scores.clone()
    others[layer, head] = 0
    assert others.max() < 0.6  # nothing else in the random model comes close
    # Its attention really is on t-1 for every query (not just on average).
    _, cache = run_with_cache(model, tokens, f"layers.{layer}.attention.probs")
    p = cache[f"layers.{layer}.attention.probs"][:, head]  # (B, T, T)
    assert (p[:, 1:].argmax(-1) == torch.arange(0, 11)).all()
