"""RoPE frequencies and rotations against transformers at positions in the thousands.

Short-prompt parity tests cannot see a wrong Llama 3 scale factor (the scaled frequencies
only matter far out), so these compare the frequencies themselves and the rotated q/k at
positions up to 32768.
"""

import pytest
import torch

from llama.config import ModelArgs
from llama.model import apply_rotary_emb, precompute_freqs_cis, rope_inv_freq

HEAD_DIM = 64
THETA = 500000.0
POSITIONS = [0, 1, 7, 100, 1000, 4095, 8191, 8192, 16384, 30000, 32767, 32768]


def _hf_rope(factor):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    kwargs = {}
    if factor is not None:
        kwargs["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": float(factor),
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    config = LlamaConfig(
        hidden_size=HEAD_DIM * 4,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=THETA,
        max_position_embeddings=131072,
        **kwargs,
    )
    return config, LlamaRotaryEmbedding(config)


def _scaling(factor):
    if factor is None:
        return None
    return dict(factor=float(factor), low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)


@pytest.mark.parametrize("factor", [None, 8, 32])
def test_inverse_frequencies_match_transformers(factor):
    _, rope = _hf_rope(factor)
    ours = rope_inv_freq(HEAD_DIM, THETA, _scaling(factor))
    assert ours.dtype == torch.float32 and ours.shape == (HEAD_DIM // 2,)
    torch.testing.assert_close(ours, rope.inv_freq.float(), rtol=1e-7, atol=0)


def test_scaling_changes_low_frequencies_only():
    plain = rope_inv_freq(HEAD_DIM, THETA)
    f8 = rope_inv_freq(HEAD_DIM, THETA, _scaling(8))
    f32 = rope_inv_freq(HEAD_DIM, THETA, _scaling(32))
    assert torch.equal(plain[:4], f8[:4])  # fast pairs are untouched
    torch.testing.assert_close(f8[-1], plain[-1] / 8)  # the slowest pairs are slowed by factor
    torch.testing.assert_close(f32[-1], plain[-1] / 32)
    assert not torch.allclose(f8, f32)  # the factor matters, so a wrong one is visible


def _to_interleaved(x):
    """Per-head features in rotate-half order [x0 x2 .. | x1 x3 ..] -> Meta's [x0 x1 x2 ..]."""
    return x.reshape(*x.shape[:-1], 2, x.shape[-1] // 2).transpose(-1, -2).flatten(-2)


def _to_rotate_half(x):
    return x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2).transpose(-1, -2).flatten(-2)


@pytest.mark.parametrize("factor", [None, 8, 32])
def test_rotated_q_k_match_transformers_far_out(factor):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    _, rope = _hf_rope(factor)
    gen = torch.Generator().manual_seed(0)
    P = len(POSITIONS)
    q = torch.randn(1, 4, P, HEAD_DIM, generator=gen)  # HF layout (B, H, T, Hd), rotate-half
    k = torch.randn(1, 2, P, HEAD_DIM, generator=gen)
    position_ids = torch.tensor([POSITIONS])
    cos, sin = rope(q, position_ids)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)

    table = precompute_freqs_cis(HEAD_DIM, max(POSITIONS) + 1, THETA, _scaling(factor))
    freqs = table[POSITIONS]  # (T, Hd/2)
    # ours: (B, T, H, Hd) in the interleaved layout
    q_ours, k_ours = apply_rotary_emb(
        _to_interleaved(q.transpose(1, 2)), _to_interleaved(k.transpose(1, 2)), freqs
    )
    q_back = _to_rotate_half(q_ours).transpose(1, 2)
    k_back = _to_rotate_half(k_ours).transpose(1, 2)
    assert (q_back - q_hf).abs().max().item() <= 1e-5
    assert (k_back - k_hf).abs().max().item() <= 1e-5
    # and the rotation is not the identity far out (the comparison means something)
    assert (q_hf[:, :, -1] - q[:, :, -1]).abs().max() > 0.1


def test_wrong_factor_is_visible_in_rotations():
    """Factor 8 vs 32 rotate identically at small positions but not at position 32768."""
    t8 = precompute_freqs_cis(HEAD_DIM, 32769, THETA, _scaling(8))
    t32 = precompute_freqs_cis(HEAD_DIM, 32769, THETA, _scaling(32))
    assert (t8[:2] - t32[:2]).abs().max() < 1e-4
    assert (t8[32768] - t32[32768]).abs().max() > 0.5


def test_model_uses_config_factor():
    from llama.model import Transformer

    args = ModelArgs(
        dim=128, n_layers=1, n_heads=2, vocab_size=16, use_scaled_rope=True,
        rope_scaling_factor=32.0, rope_theta=THETA, max_seq_len=40000,
    )
    model = Transformer(args)
    expected = precompute_freqs_cis(HEAD_DIM, 40000, THETA, _scaling(32))
    assert torch.equal(model.freqs_cis, expected)
    model = model.to(torch.bfloat16)
    assert torch.equal(model.freqs_cis, expected)  # rebuilt in complex64, not cast
