"""llama.generate: distributions, filters, seeded sampling, and greedy generation that
matches transformers' generate(do_sample=False) token for token on tiny random models."""

import math

import pytest
import torch

from llama.generate import (
    CachedContext,
    GenerationError,
    check_sampling_args,
    choose_token,
    common_prefix_length,
    generate,
    generate_ids,
    make_generator,
    next_token_probs,
    sample,
    top_candidates,
    top_k_top_p_filter,
)
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model


pytestmark = pytest.mark.usefixtures("one_thread")

# ----------------------------------------------------------------------------------
# Distributions and filters, on hand-made numbers
# ----------------------------------------------------------------------------------


def test_next_token_probs_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    p1 = next_token_probs(logits, 1.0)
    expected = torch.exp(logits) / torch.exp(logits).sum()
    assert torch.allclose(p1, expected, atol=1e-7)
    p_half = next_token_probs(logits, 0.5)
    assert torch.allclose(p_half, torch.softmax(logits * 2, -1), atol=1e-7)
    assert p_half[0] > p1[0]  # colder = sharper
    p0 = next_token_probs(logits, 0)
    assert p0.tolist() == [1.0, 0.0, 0.0, 0.0]
    # bfloat16 logits come back as float32 probabilities
    assert next_token_probs(logits.bfloat16(), 1.0).dtype == torch.float32


def test_top_k_filter():
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])
    out = top_k_top_p_filter(probs, top_k=2)
    assert torch.allclose(out, torch.tensor([0.0, 0.4 / 0.7, 0.0, 0.3 / 0.7]))
    assert torch.equal(top_k_top_p_filter(probs, top_k=10), probs / probs.sum())


def test_top_p_filter_keeps_the_token_that_crosses_the_threshold():
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])
    # sorted: 0.4 (id 1), 0.3 (id 3), 0.2 (id 2), 0.1 (id 0)
    assert top_k_top_p_filter(probs, top_p=0.4).nonzero().flatten().tolist() == [1]
    assert top_k_top_p_filter(probs, top_p=0.41).nonzero().flatten().tolist() == [1, 3]
    assert top_k_top_p_filter(probs, top_p=0.7).nonzero().flatten().tolist() == [1, 3]
    assert top_k_top_p_filter(probs, top_p=0.75).nonzero().flatten().tolist() == [1, 2, 3]
    assert top_k_top_p_filter(probs, top_p=0.01).nonzero().flatten().tolist() == [1]
    out = top_k_top_p_filter(probs, top_p=0.75)
    assert math.isclose(out.sum().item(), 1.0, rel_tol=1e-6)
    # batched rows are filtered independently
    batch = torch.stack([probs, probs.flip(0)])
    out = top_k_top_p_filter(batch, top_k=1)
    assert out.argmax(-1).tolist() == [1, 2] and out.max(-1).values.tolist() == [1.0, 1.0]


def test_top_k_then_top_p():
    probs = torch.tensor([0.05, 0.35, 0.25, 0.35])
    # top_k=2 keeps ids 1 and 3 (0.35 each; ties rank the lower id first), renormalised to
    # 0.5 each; top_p=0.5 then keeps only id 1.
    out = top_k_top_p_filter(probs, top_k=2, top_p=0.5)
    assert out.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_seeded_sampling_reproduces_and_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    a = [int(sample(probs, make_generator(7))) for _ in range(3)]
    gen1, gen2 = make_generator(123), make_generator(123)
    draws1 = [int(sample(probs, gen1)) for _ in range(2000)]
    draws2 = [int(sample(probs, gen2)) for _ in range(2000)]
    assert draws1 == draws2
    assert len(set(a)) == 1  # a fresh generator with the same seed: the same first draw
    counts = [draws1.count(i) / 2000 for i in range(4)]
    assert counts[3] == 0
    for got, want in zip(counts, [0.5, 0.3, 0.2]):
        assert abs(got - want) < 0.05  # ~4.5 standard deviations at n = 2000
    draws3 = [int(sample(probs, make_generator(124))) for _ in range(1)] + [
        int(sample(probs, g)) for g in [make_generator(124)] for _ in range(199)
    ]
    assert draws3 != draws1[:200]


def test_choose_token_greedy_and_top_k_1():
    logits = torch.tensor([0.3, 2.5, 2.4, -1.0])
    assert choose_token(logits) == 1
    gen = make_generator(0)
    assert {choose_token(logits, 1.5, top_k=1, generator=gen) for _ in range(20)} == {1}
    picks = {choose_token(logits, 1.0, top_k=2, generator=gen) for _ in range(200)}
    assert picks == {1, 2}


def test_top_candidates():
    logits = torch.tensor([1.0, 3.0, 2.0, 3.0])
    cands = top_candidates(logits, k=3)
    assert [c.id for c in cands] == [1, 3, 2]
    assert [c.rank for c in cands] == [1, 2, 3]
    probs = torch.softmax(logits, -1)
    assert all(math.isclose(c.prob, probs[c.id].item(), rel_tol=1e-6) for c in cands)
    assert len(top_candidates(logits, k=100)) == 4


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_sampling_arguments(kwargs, fragment):
    with pytest.raises(GenerationError, match=fragment):
        check_sampling_args(**kwargs)
    with pytest.raises(GenerationError, match=fragment):
        choose_token(torch.zeros(5), **{"temperature": 1.0, **kwargs})


def test_bad_inputs_have_clear_messages():
    with pytest.raises(GenerationError, match=r"logits\[:, -1\]"):
        next_token_probs(torch.zeros(1, 2, 5))
    with pytest.raises(GenerationError, match="floating-point"):
        next_token_probs(torch.zeros(5, dtype=torch.long))
    with pytest.raises(GenerationError, match="seed"):
        make_generator(-3)
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2


# ----------------------------------------------------------------------------------
# Generation on tiny random models, against transformers
# ----------------------------------------------------------------------------------


def lively_hf_model(kind: str):
    """A tiny random model whose greedy continuation is not just its last input token.

    With tiny_models' weights the residual stream is dominated by the token embedding, so
    the prediction is the input token again and greedy decoding repeats one token forever.
    Random final-norm weights (some negative) break that self-similarity.
    """
    hf = tiny_hf_model(kind)
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        hf.model.norm.weight.copy_(torch.randn(hf.model.norm.weight.shape, generator=gen))
    return hf


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def pair(request):
    hf = lively_hf_model(request.param)
    return request.param, hf, ours_from_hf(hf)


def _prompt(vocab: int, n: int = 9, seed: int = 5) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _hf_greedy(hf, prompt, n, eos=None):
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    return out[0, len(prompt) :].tolist()


def test_greedy_equals_transformers_generate(pair):
    kind, hf, ours = pair
    seen = set()
    for seed in range(3):
        prompt = _prompt(hf.config.vocab_size, seed=seed)
        expected = _hf_greedy(hf, prompt, 24)
        got = generate_ids(ours, prompt, 24)
        assert len(expected) == 24
        assert got == expected, f"{kind}, prompt {seed}"
        seen.update(expected)
    assert len(seen) >= 6, "degenerate continuations: the test would prove little"


def test_greedy_stops_at_stop_token_like_transformers(pair):
    kind, hf, ours = pair
    prompt = _prompt(hf.config.vocab_size, seed=1)
    free = _hf_greedy(hf, prompt, 16)
    stop = free[2]  # a token the greedy continuation reaches: both must stop there
    expected = _hf_greedy(hf, prompt, 16, eos=stop)
    steps = list(generate(ours, prompt, 16, stop_ids=[stop]))
    assert [s.id for s in steps] == expected == free[: free.index(stop) + 1]
    assert steps[-1].is_stop and not any(s.is_stop for s in steps[:-1])


def test_generation_uses_one_decode_step_per_token(pair):
    """Prefill once, then every new token is a single-token forward through the cache."""
    kind, hf, ours = pair
    calls = []
    handle = ours.register_forward_pre_hook(lambda m, args, kw: calls.append((args[0].shape[1], kw.get("start_pos", 0))), with_kwargs=True)
    try:
        ids = generate_ids(ours, _prompt(hf.config.vocab_size, n=7), 5)
    finally:
        handle.remove()
    assert len(ids) == 5
    # The 5th token needs no forward pass after it is chosen.
    assert calls == [(7, 0), (1, 7), (1, 8), (1, 9), (1, 10)]


def test_seeded_sampling_generation_reproduces(pair):
    kind, hf, ours = pair
    prompt = _prompt(hf.config.vocab_size)
    kw = dict(temperature=8.0, top_k=50, top_p=0.95)  # random models are very peaked
    a = generate_ids(ours, prompt, 20, seed=11, **kw)
    b = generate_ids(ours, prompt, 20, seed=11, **kw)
    c = generate_ids(ours, prompt, 20, seed=12, **kw)
    assert a == b
    assert a != c
    assert a != generate_ids(ours, prompt, 20)  # it really sampled


def test_cached_context_reuses_common_prefix(pair):
    kind, hf, ours = pair
    ids = _prompt(hf.config.vocab_size, n=12, seed=8)
    ctx = CachedContext(ours)
    calls = []
    handle = ours.register_forward_pre_hook(lambda m, args, kw: calls.append((args[0].shape[1], kw.get("start_pos", 0))), with_kwargs=True)
    try:
        a = ctx.logits_for(ids[:8])
        b = ctx.logits_for(ids)  # extends: runs 4 new tokens
        c = ctx.logits_for(ids[:5] + ids[9:])  # edited: rewinds to the 5 shared tokens
        d = ctx.logits_for(ids[:5] + ids[9:])  # same again: reruns only the last token
    finally:
        handle.remove()
    assert calls == [(8, 0), (4, 8), (3, 5), (1, 7)]
    with torch.no_grad():
        for got, seq in [(a, ids[:8]), (b, ids), (c, ids[:5] + ids[9:]), (d, ids[:5] + ids[9:])]:
            ref = hf(torch.tensor([seq])).logits[0, -1]
            assert (got - ref).abs().max().item() <= 1e-4


def test_generate_argument_errors(pair):
    kind, hf, ours = pair
    with pytest.raises(GenerationError, match="tokenizer"):
        next(generate(ours, "some text", 3))
    with pytest.raises(GenerationError, match="empty"):
        next(generate(ours, [], 3))
    with pytest.raises(GenerationError, match="max_new_tokens"):
        next(generate(ours, [1, 2], -1))
    with pytest.raises(GenerationError, match="top_p"):
        next(generate(ours, [1, 2], 3, temperature=1.0, top_p=2))
    with pytest.raises(GenerationError, match="context"):
        CachedContext(ours).logits_for([1] * (ours.args.max_seq_len + 1))


def test_generation_stops_when_context_is_full():
    hf = tiny_hf_model("llama2", max_position_embeddings=16)
    ours = ours_from_hf(hf)
    assert len(generate_ids(ours, list(range(1, 13)), 10)) == 4
