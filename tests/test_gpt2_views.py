"""The numbers of the GPT-2 views: the summary and the learned-position similarity."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2_models import GPT2_MEDIUM_CONFIG, GPT2_MEDIUM_PARAMS, tiny_gpt2, write_hf
from llama.gpt2 import GPT2, GPT2Config
from llama.gpt2_views import gpt2_param_counts, gpt2_summary, position_embeddings
from weights import load_model


def test_gpt2_medium_summary():
    args = GPT2Config.from_hf_config(GPT2_MEDIUM_CONFIG)
    s = gpt2_summary(args)
    assert (s.n_layers, s.dim, s.n_heads, s.n_positions) == (24, 1024, 16, 1024)
    assert (s.head_dim, s.hidden_dim, s.vocab_size, s.tied) == (64, 4096, 50257, True)
    assert s.total == GPT2_MEDIUM_PARAMS == 354_823_168
    assert s.params["token embeddings"] == 50257 * 1024
    assert s.params["position embeddings"] == 1024 * 1024
    assert s.params["output"] == 0  # tied: the embedding matrix again
    with torch.device("meta"):
        model = GPT2(args)
    assert gpt2_summary(model).total == model.num_params() == GPT2_MEDIUM_PARAMS


def test_counts_by_part_match_transformers_modules():
    hf = tiny_gpt2("small", tie_word_embeddings=False)
    parts = gpt2_param_counts(GPT2Config.from_hf_config(hf.config.to_dict()))

    def n(modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    blocks = hf.transformer.h
    assert parts["attention"] == n(b.attn for b in blocks)
    assert parts["mlp"] == n(b.mlp for b in blocks)
    assert parts["layer norms"] == n([*(b.ln_1 for b in blocks), *(b.ln_2 for b in blocks), hf.transformer.ln_f])
    assert parts["output"] == hf.lm_head.weight.numel()
    assert sum(parts.values()) == sum(p.numel() for p in hf.parameters())


def test_position_similarity_of_a_loaded_model(tmp_path):
    hf = tiny_gpt2("small")
    model = load_model(write_hf(hf, tmp_path))
    view = position_embeddings(model, positions=64)
    wpe = hf.transformer.wpe.weight[:64].detach()
    assert view.n_positions == 64 and torch.equal(view.matrix, wpe)
    assert torch.allclose(view.norms, wpe.norm(dim=-1))
    expected = torch.nn.functional.cosine_similarity(wpe[:, None, :], wpe[None, :, :], dim=-1)
    assert torch.allclose(view.cosine, expected, atol=1e-5)
    assert torch.allclose(view.cosine.diagonal(), torch.ones(64), atol=1e-5)
    assert view.by_offset[0].item() == pytest.approx(1.0, abs=1e-5)
    assert view.by_offset[3].item() == pytest.approx(expected.diagonal(3).mean().item(), abs=1e-5)
    assert position_embeddings(model).cosine.shape == (1024, 1024)


def test_smooth_positions_show_a_band():
    """Rows on a smooth curve (as trained GPT-2 learns them): similarity falls with distance."""
    model = GPT2(GPT2Config(vocab_size=10, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    p = torch.arange(32.0)[:, None]
    freqs = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) * math.pi / 256  # distance 16 turns the fastest pair by pi/2
    with torch.no_grad():
        model.pos_embeddings.weight.copy_(torch.cat([torch.cos(p * freqs), torch.sin(p * freqs)], dim=1))
    view = position_embeddings(model)
    assert (view.by_offset[1:16].diff() < 0).all()  # monotonically less similar, up to 16 apart
    assert view.cosine[0, 1] > 0.9 > view.cosine[0, 16]


def test_position_view_errors():
    from tiny_models import ours_from_hf, tiny_hf_model

    with pytest.raises(TypeError, match="no learned position embeddings.*RoPE"):
        position_embeddings(ours_from_hf(tiny_hf_model("llama2")))
    model = GPT2(GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match=r"1\.\.8"):
        position_embeddings(model, positions=9)
    with pytest.raises(TypeError, match="GPT2Config"):
        gpt2_summary("gpt2")
