"""Tiny random GPT-2 models shaped like GPT-2 small and medium, and writers of their
checkpoints in the published formats (no tests in this file).

    tiny_gpt2(kind)           a transformers GPT2LMHeadModel, float32, eval, eager attention
    write_hf(model, folder)   save_pretrained's folder (config.json + model.safetensors)
    write_bin(model, folder)  config.json + pytorch_model.bin as the hub's GPT-2 repos hold it
                              (names without "transformer.", the old attn.bias buffers)
    write_gguf_gpt2(model, path)  what llama.cpp's converter writes for architecture gpt2
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

ATOL_F32 = 1e-4

# GPT-2 small (768 wide, 12 heads, 12 layers) and medium (1024, 16, 24), scaled down with
# the same ratios: head size equal in both (64 there, 8 here), width 3:4, layers 1:2, MLP
# 4x the width, 1024 learned positions, tied embeddings, eps 1e-5, gelu_new. The
# vocabulary is odd-sized like GPT-2's 50,257.
TINY_GPT2 = {
    "small": dict(n_embd=96, n_head=12, n_layer=3, vocab_size=503, n_positions=1024),
    "medium": dict(n_embd=128, n_head=16, n_layer=6, vocab_size=503, n_positions=1024),
}

# gpt2-medium's published config.json (the fields that shape the model), and the
# parameter count transformers reports for GPT2LMHeadModel built from it.
GPT2_MEDIUM_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 1024,
    "n_head": 16,
    "n_layer": 24,
    "n_positions": 1024,
    "n_special": 0,
    "predict_special_tokens": True,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "vocab_size": 50257,
}
GPT2_MEDIUM_PARAMS = 354_823_168


def tokens_for(vocab: int, length: int = 72, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


def randomize_gpt2_(model, seed: int = 0) -> None:
    """Non-trivial random weights: norms near 1 with visible biases, wide embeddings (so
    logits are large and top-1 is clear), matrices scaled by their fan-in."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if ".ln_" in name:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("wte.weight"):
                p.copy_(noise)
            elif name.endswith("wpe.weight"):
                p.copy_(0.5 * noise)
            elif p.dim() == 2:
                # Conv1D weights are (in, out): the fan-in is the first dimension.
                p.copy_(0.3 * noise / p.shape[0] ** 0.5)
            else:
                p.copy_(0.1 * noise)


def hf_gpt2_config(kind: str, **overrides):
    from transformers import GPT2Config as HFGPT2Config

    cfg = dict(TINY_GPT2[kind], bos_token_id=0, eos_token_id=0)
    cfg.update(overrides)
    return HFGPT2Config(**cfg)


def tiny_gpt2(kind: str, seed: int = 0, **overrides):
    """A random transformers GPT2LMHeadModel, float32, eval mode, eager attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_gpt2_config(kind, **overrides), attn_implementation="eager")
    randomize_gpt2_(model, seed)
    return model.eval()


def write_hf(model, folder: Path) -> Path:
    """save_pretrained's folder: config.json + model.safetensors (lm_head left out: tied)."""
    model.save_pretrained(str(folder))
    return folder


def write_bin(model, folder: Path, prefix: str = "", mask_buffers: bool = True) -> Path:
    """config.json + pytorch_model.bin in the layout of the hub's original GPT-2 files:
    tensor names without "transformer.", each layer's causal-mask buffers attn.bias and
    attn.masked_bias saved with the weights, no lm_head (tied)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    state = {}
    P = model.config.n_positions
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        state[prefix + name.removeprefix("transformer.")] = t.clone()
    if mask_buffers:
        for i in range(model.config.n_layer):
            state[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(P, P, dtype=torch.uint8))[None, None].bool()
            state[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


# GGUF names llama.cpp's converter gives GPT-2's tensors (gguf-py's tensor mapping).
_GGUF_LAYER = {
    "ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}
_GGUF_TOP = {"wte": "token_embd", "wpe": "position_embd", "ln_f": "output_norm"}


def write_gguf_gpt2(
    model,
    path: Path,
    qtype: str = "F32",
    output_copy: bool = False,
    tokens: list[str] | None = None,
    merges: list[str] | None = None,
    token_types: list[int] | None = None,
) -> Path:
    """A GGUF file of architecture gpt2 as llama.cpp's convert_hf_to_gguf.py writes it:
    Conv1D weights transposed to (out, in), the mask buffers dropped, no output tensor
    (output_copy=True: older converters wrote token_embd a second time as output)."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_name("tiny-gpt2")
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.n_positions)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7}[qtype])
    if tokens is None:  # a byte-level vocabulary, so tools that read the tokenizer find one
        tokens = [f"<t{i}>" for i in range(cfg.vocab_size)]
        merges, token_types = [], [1] * cfg.vocab_size
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)

    def add(name: str, t: torch.Tensor) -> None:
        data = t.detach().float().numpy()
        block = gguf.GGML_QUANT_SIZES[Q.Q8_0][0]
        if data.ndim == 1 or qtype == "F32":
            w.add_tensor(name, data.astype(np.float32))
        elif qtype == "F16" or data.shape[-1] % block:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, Q.Q8_0), raw_dtype=Q.Q8_0)

    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue
        bare = hf_name.removeprefix("transformer.")
        if bare.startswith("h."):
            _, i, *rest = bare.split(".")
            stem, kind = ".".join(rest[:-1]), rest[-1]
            if stem not in _GGUF_LAYER:
                continue  # attn.bias buffers: "we don't need these"
            if kind == "weight" and stem not in ("ln_1", "ln_2"):
                t = t.t()  # Conv1D (in, out) -> (out, in)
            add(f"blk.{i}.{_GGUF_LAYER[stem]}.{kind}", t)
        else:
            stem, kind = bare.rsplit(".", 1)
            add(f"{_GGUF_TOP[stem]}.{kind}", t)
            if stem == "wte" and output_copy:
                add("output.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hf_from_gguf(path: Path):
    """transformers' own reading of a GGUF file (float32, eager attention): the oracle."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def write_gpt2_with_tokenizer(folder: Path, kind: str = "small", seed: int = 0) -> Path:
    """A Hugging Face GPT-2 folder that llama-repl, llama-plot and llama-explain can load:
    a tiny random model (shaped like `kind`) saved with save_pretrained, and beside it the
    vocab.json + merges.txt of a byte-level BPE trained here in GPT-2's shape (the 256 byte
    tokens first, ids in merge order, "<|endoftext|>" last), whose vocabulary is the model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from test_tokenizer import training_text

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(training_text(), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tk.model.save(str(folder))  # vocab.json, merges.txt
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    eot = vocab["<|endoftext|>"]
    hf = tiny_gpt2(kind, seed=seed, vocab_size=len(vocab), bos_token_id=eot, eos_token_id=eot)
    with torch.no_grad():
        # Smaller token vectors than randomize_gpt2_'s: with the tied output a token's own
        # vector would otherwise win every prediction, and every lens row would look alike.
        hf.transformer.wte.weight.mul_(0.1)
    write_hf(hf, folder)
    return folder
