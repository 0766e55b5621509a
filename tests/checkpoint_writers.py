"""Writers of tiny checkpoints in every format, from a random transformers model.

Each writer produces what the real publisher's tools produce (Meta's params.json and
consolidated.NN.pth, save_pretrained's safetensors, llama.cpp-style GGUF), so that loading
them and comparing with transformers tests our readers. (No tests in this file.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from llama.config import ModelArgs
from weights.hf_layout import hf_to_meta_state_dict, hf_to_meta_tensor

ATOL_F32 = 1e-4


def tokens_for(vocab: int, length: int = 24, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


def hf_logits(hf_model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(tokens).logits.float()


def max_diff(ours, hf_model, tokens) -> float:
    with torch.no_grad():
        got = ours(tokens)
    return (got - hf_logits(hf_model, tokens)).abs().max().item()


# --------------------------------------------------------------------------------------
# Meta: params.json with Meta's own field names, consolidated.NN.pth of plain tensors
# --------------------------------------------------------------------------------------

# The way Meta's model-parallel layers split each tensor across files (None: replicated).
META_SPLIT = {
    "attention.wq": 0, "attention.wk": 0, "attention.wv": 0, "feed_forward.w1": 0,
    "feed_forward.w3": 0, "output": 0, "attention.wo": 1, "feed_forward.w2": 1,
}


def meta_state(hf_model) -> tuple[dict[str, torch.Tensor], ModelArgs]:
    args = ModelArgs.from_hf_config(hf_model.config.to_dict())
    return hf_to_meta_state_dict(dict(hf_model.state_dict()), args), args


def write_meta(
    hf_model,
    folder: Path,
    params: dict,
    n_shards: int = 1,
    llama3: bool = False,
    rope_freqs: bool = False,
    drop_output: bool = False,
) -> Path:
    """A Meta folder as Meta publishes it, split into n_shards like 13B (2) or 70B (8)."""
    state, args = meta_state(hf_model)
    if drop_output:
        state.pop("output.weight", None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    shards = [{} for _ in range(n_shards)]
    for name, t in state.items():
        stem = name.rsplit(".", 1)[0].split(".", 2)[-1] if name.startswith("layers.") else name.rsplit(".", 1)[0]
        if name == "tok_embeddings.weight":
            d = 0 if llama3 else 1  # Llama 3 splits the vocabulary, Llama 1/2 the width
        else:
            d = META_SPLIT.get(stem)
        for i, s in enumerate(shards):
            s[name] = t.clone() if d is None else t.chunk(n_shards, dim=d)[i].clone()
    for i, s in enumerate(shards):
        if rope_freqs:  # Llama 2's files carry the RoPE frequencies (ignored by loaders)
            s["rope.freqs"] = 1.0 / (10000.0 ** (torch.arange(0, args.head_dim, 2).float() / args.head_dim))
        torch.save(s, folder / f"consolidated.{i:02d}.pth")
    return folder


LLAMA2_PARAMS = {  # Llama-2 7B's params.json, scaled down like TINY_CONFIGS["llama2"]
    "dim": 64, "multiple_of": 4, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-05, "vocab_size": -1,
}
LLAMA32_PARAMS = {  # Llama-3.2 1B's params.json, scaled down like TINY_CONFIGS["llama32"]
    "dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "vocab_size": 384,
    "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-05, "rope_theta": 500000.0,
    "use_scaled_rope": True,
}


# --------------------------------------------------------------------------------------
# GGUF, as llama.cpp's converter writes it
# --------------------------------------------------------------------------------------


def write_gguf(hf_model, path: Path, qtype: str = "F32", rope_freqs: bool = False) -> Path:
    """A GGUF file of the model: llama q/k rows in Meta's order, qwen2 left rotate-half."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    cfg = hf_model.config
    arch = cfg.model_type  # "llama" or "qwen2"
    args = ModelArgs.from_hf_config(cfg.to_dict())
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(args.rope_theta)
    w.add_rope_dimension_count(args.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K": 15}[qtype])
    # A byte-level vocabulary, so tools that read the tokenizer find one.
    tokens = [f"<t{i}>" for i in range(cfg.vocab_size)]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * cfg.vocab_size)
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)

    names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for hf_name, t in hf_model.state_dict().items():
        t = t.detach().float()
        if hf_name.startswith("model.layers."):
            _, _, i, *rest = hf_name.split(".")
            stem, kind = ".".join(rest[:-1]), rest[-1]
            name = f"blk.{i}.{names[stem]}.{kind}"
            if arch == "llama" and stem in ("self_attn.q_proj", "self_attn.k_proj"):
                # llama.cpp runs llama with interleaved RoPE: it reorders q/k rows to Meta's.
                meta = "layers.0.attention." + ("wq." if "q_proj" in stem else "wk.") + kind
                t = hf_to_meta_tensor(meta, t, args)
        elif hf_name == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif hf_name == "model.norm.weight":
            name = "output_norm.weight"
        elif hf_name == "lm_head.weight":
            if cfg.tie_word_embeddings:
                continue
            name = "output.weight"
        else:
            raise AssertionError(hf_name)
        data = t.numpy()
        block = gguf.GGML_QUANT_SIZES[Q[qtype]][0]
        if data.ndim == 1 or qtype == "F32":
            w.add_tensor(name, data.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor(name, data.astype(np.float16))
        elif data.shape[-1] % block:  # llama.cpp keeps rows that do not split into blocks
            w.add_tensor(name, data.astype(np.float16))
        elif qtype == "Q4_K":  # the gguf package cannot quantize to Q4_K: quantize_q4_k does
            w.add_tensor(name, quantize_q4_k(data), raw_dtype=Q.Q4_K)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, Q[qtype]), raw_dtype=Q[qtype])
    if rope_freqs:
        # llama.cpp stores Llama 3.1 RoPE scaling as one divisor per frequency.
        from llama.model import rope_inv_freq

        scaling = dict(factor=args.rope_scaling_factor, low_freq_factor=args.rope_low_freq_factor,
                       high_freq_factor=args.rope_high_freq_factor,
                       original_max_seq_len=args.rope_original_max_seq_len)
        divisors = rope_inv_freq(args.head_dim, args.rope_theta) / rope_inv_freq(args.head_dim, args.rope_theta, scaling)
        w.add_tensor("rope_freqs.weight", divisors.numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def quantize_q4_k(data: np.ndarray) -> np.ndarray:
    """(rows, cols) float -> llama.cpp's Q4_K bytes (rows, cols / 256 * 144), simply: per
    group of 32 its min..max in 15 steps, the groups' scales and mins as 6-bit multiples of
    one float16 d and dmin per 256 values. (Tests check it with gguf's own dequantize.)"""
    rows, cols = data.shape
    g = data.astype(np.float32).reshape(-1, 8, 32)  # (blocks of 256, 8 groups, 32)
    lo = np.minimum(g.min(-1), 0)  # w = a q - b with b >= 0
    a = (g.max(-1) - lo) / 15  # (blocks, 8)
    d = (a.max(-1) / 63).astype(np.float16)
    dmin = ((-lo).max(-1) / 63).astype(np.float16)
    d32, dmin32 = np.maximum(d.astype(np.float32), 1e-12), np.maximum(dmin.astype(np.float32), 1e-12)
    sc = np.clip(np.round(a / d32[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.round(-lo / dmin32[:, None]), 0, 63).astype(np.uint8)
    step = np.maximum(d32[:, None] * sc, 1e-12)
    q = np.clip(np.round((g + dmin32[:, None, None] * mn[..., None]) / step[..., None]), 0, 15).astype(np.uint8)
    s = np.zeros((g.shape[0], 12), dtype=np.uint8)  # groups 0-3 in bytes 0-7, 4-7 spread
    s[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    runs = q.reshape(-1, 4, 2, 32)  # 4 runs of 32 bytes: low nibbles group 2r, high 2r + 1
    qs = (runs[:, :, 0] | (runs[:, :, 1] << 4)).reshape(-1, 128)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), s, qs], axis=1)
    return out.reshape(rows, cols // 256 * 144)


def hf_from_gguf(path: Path):
    """transformers' own reading of a GGUF file: the independent oracle (float32)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()
