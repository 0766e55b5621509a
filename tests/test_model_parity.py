"""Our Transformer against transformers' LlamaForCausalLM / Qwen2ForCausalLM, logit by logit."""

import pytest
import torch

from llama.parity.reference import cached_step
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model

KINDS = list(TINY_CONFIGS)
ATOL_F32 = 1e-4  # max abs logit difference allowed in float32


def _tokens(vocab: int, batch: int = 2, length: int = 72, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


@pytest.fixture(scope="module", params=KINDS)
def pair(request):
    hf = tiny_hf_model(request.param)
    return request.param, hf, ours_from_hf(hf)


def test_float32_logits_match(pair):
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size)
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens)
    assert got.shape == expected.shape == (2, 72, hf.config.vocab_size)
    assert got.dtype == torch.float32
    assert expected.abs().max() > 1.0, "random model too tame to test anything"
    diff = (got - expected).abs().max().item()
    assert diff <= ATOL_F32, f"{kind}: max abs logit diff {diff:.3g}"


def test_explicit_attention_equals_fused(pair):
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size, seed=3)
    with torch.no_grad():
        fused = ours(tokens)
        ours.set_attention_impl("explicit")
        try:
            explicit = ours(tokens)
        finally:
            ours.set_attention_impl("sdpa")
    assert (fused - explicit).abs().max().item() <= ATOL_F32


def test_bfloat16_same_top1(pair):
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size, seed=2)
    hf16 = tiny_hf_model(kind).to(torch.bfloat16)
    ours16 = ours_from_hf(tiny_hf_model(kind)).to(torch.bfloat16)
    assert ours16.tok_embeddings.weight.dtype == torch.bfloat16
    assert ours16.freqs_cis.dtype == torch.complex64  # the RoPE table survives .to(bf16)
    with torch.no_grad():
        expected = hf16(tokens).logits.float().argmax(-1)
        got = ours16(tokens)
    assert got.dtype == torch.float32  # logits are float32 whatever the weights
    mismatches = (got.argmax(-1) != expected).sum().item()
    assert mismatches == 0, f"{kind}: {mismatches} positions disagree on the top-1 token"


def test_prefill_then_decode_equals_full_forward(pair):
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size, length=70, seed=4)
    with torch.no_grad():
        full = ours(tokens)
        ours.reset_cache()
        pieces = [ours(tokens[:, :40], start_pos=0)]
        pieces.append(ours(tokens[:, 40:45], start_pos=40))  # a chunk through the cache
        for pos in range(45, 70):  # then token by token
            pieces.append(ours(tokens[:, pos : pos + 1], start_pos=pos))
    stepped = torch.cat(pieces, dim=1)
    assert ours.cache_length == 70
    assert (stepped - full).abs().max().item() <= ATOL_F32


def test_decode_matches_transformers_cache():
    """Incremental decoding against transformers' own KV-cache decoding."""
    hf = tiny_hf_model("llama32")
    ours = ours_from_hf(hf)
    tokens = _tokens(hf.config.vocab_size, batch=1, length=20, seed=5)
    with torch.no_grad():
        out, past = cached_step(hf, tokens[:, :12])
        ours(tokens[:, :12])
        for pos in range(12, 20):
            out, past = cached_step(hf, tokens[:, pos : pos + 1], past)
            got = ours(tokens[:, pos : pos + 1], start_pos=pos)
            assert (got - out.logits).abs().max().item() <= ATOL_F32


def test_rewind_overwrites_cache():
    hf = tiny_hf_model("llama2")
    ours = ours_from_hf(hf)
    a = _tokens(hf.config.vocab_size, batch=1, length=10, seed=6)
    b = a.clone()
    b[0, 7:] = (b[0, 7:] + 1) % hf.config.vocab_size
    with torch.no_grad():
        ours(a)
        rewound = ours(b[:, 7:], start_pos=7)  # replace the last three tokens
        fresh = ours(b)[:, 7:]
    assert (rewound - fresh).abs().max().item() <= ATOL_F32
