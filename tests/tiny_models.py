"""Tiny random transformers models that keep the real models' architectural choices.

Each factory returns a transformers model (float32, eval mode) with random weights drawn
so that activations and logits are far from trivial (norm weights around 1, biases
non-zero), and the matching ModelArgs for our Transformer.
"""

from __future__ import annotations

import torch

from llama.config import ModelArgs
from llama.model import Transformer
from weights.hf_layout import hf_to_meta_state_dict

# Scaled-down configurations: the same ratios and switches as the real models.
TINY_CONFIGS = {
    # Llama-2 7B: multi-head (kv = heads), untied output, theta 1e4, eps 1e-5.
    "llama2": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=320,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        max_position_embeddings=512,
    ),
    # Llama-3.2 1B: 4:1 grouped-query attention, tied embeddings, theta 5e5, llama3 RoPE
    # scaling with factor 32.
    "llama32": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=384,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    # Qwen2 (DeepSeek-R1-Distill-Qwen-1.5B): q/k/v bias, grouped-query, theta 1e4... 1e6.
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=96,
        intermediate_size=224,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=352,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        max_position_embeddings=512,
        use_sliding_window=False,
    ),
}


def hf_config(kind: str, **overrides):
    from transformers import LlamaConfig, Qwen2Config

    cfg = dict(TINY_CONFIGS[kind])
    cfg.update(overrides)
    model_type = cfg.pop("model_type")
    cls = Qwen2Config if model_type == "qwen2" else LlamaConfig
    return cls(**cfg)


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Fill every parameter with non-trivial random values (norm weights near 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(noise)  # wide logits, so top-1 is clear even in bfloat16
            else:
                p.copy_(scale * noise * 3 / (p.shape[-1] ** 0.5) if p.dim() > 1 else scale * noise)
        # Like trained models, make an untied output matrix correlated with the embedding:
        # predictions then have clear winners, so a bfloat16 run has no near-ties to flip.
        out, emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out.weight is not emb.weight:
            out.weight.mul_(0.5).add_(emb.weight)


def tiny_hf_model(kind: str, seed: int = 0, **overrides):
    """A random transformers model of the given kind, float32, eval mode, eager attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = hf_config(kind, **overrides)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    randomize_(model, seed)
    return model.eval()


def ours_from_hf(hf_model) -> Transformer:
    """Our Transformer with the weights of a transformers model (through weights.hf_layout)."""
    args = ModelArgs.from_hf_config(hf_model.config.to_dict())
    model = Transformer(args)
    state = hf_to_meta_state_dict(dict(hf_model.state_dict()), args)
    model.load_state_dict(state, strict=True)
    return model.eval()
