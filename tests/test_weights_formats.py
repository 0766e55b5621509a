"""Every checkpoint format, written as its publisher writes it, against transformers' logits.

Tiny random transformers models (tests/tiny_models.py) are saved as Hugging Face folders
(single file and sharded), Meta folders (one and two model-parallel shards) and GGUF files
(F32, F16, Q8_0); weights.load_model must give the logits transformers gives (float32,
max abs diff <= 1e-4). For GGUF the oracle is transformers reading the same GGUF file.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llama.model import precompute_freqs_cis
from checkpoint_writers import (
    ATOL_F32,
    LLAMA2_PARAMS,
    LLAMA32_PARAMS,
    hf_from_gguf,
    max_diff,
    tokens_for,
    write_gguf,
    write_meta,
)
from tiny_models import tiny_hf_model
from weights import detect_format, load_model, read_config


@pytest.fixture(scope="module")
def hf_models():
    return {kind: tiny_hf_model(kind) for kind in ("llama2", "llama32", "qwen2")}


# ---------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama2", "llama32", "qwen2"])
def test_hf_single_file(hf_models, tmp_path, kind):
    hf = hf_models[kind]
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert detect_format(tmp_path) == ("hf", tmp_path)
    model = load_model(tmp_path)
    assert not model.training
    assert model.tok_embeddings.weight.dtype == torch.float32  # dtype=None keeps float32
    assert model.args.tie_embeddings == hf.config.tie_word_embeddings
    assert (model.output.weight is model.tok_embeddings.weight) == hf.config.tie_word_embeddings
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


@pytest.mark.parametrize("kind", ["llama2", "qwen2"])
def test_hf_sharded(hf_models, tmp_path, kind):
    hf = hf_models[kind]
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()
    model = load_model(tmp_path, dtype="float32")
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


def test_hf_file_path_and_bfloat16(hf_models, tmp_path):
    """A path to model.safetensors loads its folder; bfloat16 on disk stays bfloat16."""
    hf = tiny_hf_model("llama2").to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path / "model.safetensors")
    assert model.tok_embeddings.weight.dtype == torch.bfloat16
    assert model.layers[0].attention.wq.weight.dtype == torch.bfloat16
    tokens = tokens_for(hf.config.vocab_size)
    with torch.no_grad():
        got = model(tokens)
        expected = hf(tokens).logits.float()
    assert got.dtype == torch.float32
    assert (got.argmax(-1) != expected.argmax(-1)).sum().item() == 0
    # ... and can be loaded in float32 instead: the same numbers, upcast exactly.
    model32 = load_model(tmp_path, dtype="float32")
    assert model32.norm.weight.dtype == torch.float32
    w2 = hf.model.layers[1].mlp.down_proj.weight.float()
    assert torch.equal(model32.layers[1].feed_forward.w2.weight, w2)


def test_hf_without_lm_head_is_tied(hf_models, tmp_path):
    """No lm_head.weight in the file: the output projection is the embedding."""
    from safetensors.torch import load_file, save_file

    hf = hf_models["llama2"]
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_model(tmp_path)
    assert model.args.tie_embeddings
    assert model.output.weight is model.tok_embeddings.weight
    assert torch.equal(model.output.weight, hf.model.embed_tokens.weight)


def test_loaded_model_decodes_through_kv_cache(hf_models, tmp_path):
    hf = hf_models["llama32"]
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    tokens = tokens_for(hf.config.vocab_size, length=12, batch=1)
    with torch.no_grad():
        full = model(tokens)
        model.reset_cache()
        steps = [model(tokens[:, :8])] + [model(tokens[:, i : i + 1], start_pos=i) for i in range(8, 12)]
    assert model.freqs_cis.device.type == "cpu" and model.freqs_cis.dtype == torch.complex64
    assert (torch.cat(steps, 1) - full).abs().max().item() <= ATOL_F32


# ---------------------------------------------------------------------------------------
# Meta
# ---------------------------------------------------------------------------------------


def test_meta_llama2_single(hf_models, tmp_path):
    """Llama 2's layout: vocab_size -1 in params.json, rope.freqs in the file."""
    hf = hf_models["llama2"]
    write_meta(hf, tmp_path, LLAMA2_PARAMS, rope_freqs=True)
    assert detect_format(tmp_path) == ("meta", tmp_path)
    args = read_config(tmp_path)
    assert args.vocab_size == hf.config.vocab_size  # taken from the embedding
    assert args.hidden_dim == hf.config.intermediate_size
    model = load_model(tmp_path, dtype="float32")
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


def test_meta_llama2_two_shards(hf_models, tmp_path):
    """13B-style: two model-parallel files, embedding split along the width."""
    hf = hf_models["llama2"]
    write_meta(hf, tmp_path, LLAMA2_PARAMS, n_shards=2, rope_freqs=True)
    shard = torch.load(tmp_path / "consolidated.01.pth", weights_only=True)
    assert shard["tok_embeddings.weight"].shape == (320, 32)  # really split along dim 1
    assert shard["layers.0.attention.wo.weight"].shape == (64, 32)
    model = load_model(tmp_path)
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


def test_meta_llama3_two_shards_tied(hf_models, tmp_path):
    """Llama 3 style: embedding split by vocabulary rows, GQA, no output.weight (tied)."""
    hf = hf_models["llama32"]
    write_meta(hf, tmp_path, LLAMA32_PARAMS, n_shards=2, llama3=True, drop_output=True)
    shard = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    assert shard["tok_embeddings.weight"].shape == (192, 64)  # split along dim 0
    model = load_model(tmp_path)
    assert model.args.tie_embeddings and model.args.rope_scaling_factor == 32.0
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


def test_meta_original_subfolder_takes_rope_factor_from_parent(tmp_path):
    """An HF repo's original/ folder: the RoPE factor comes from ../config.json."""
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    hf = tiny_hf_model("llama32", rope_scaling=rope)  # factor 8, where the dim rule says 32
    repo = tmp_path / "repo"
    hf.save_pretrained(repo)
    write_meta(hf, repo / "original", LLAMA32_PARAMS, llama3=True, drop_output=True)

    def table(factor):
        scaling = dict(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)
        return precompute_freqs_cis(8, 4096, 500000.0, scaling)

    model = load_model(repo / "original", max_seq_len=4096)
    assert model.args.rope_scaling_factor == 8.0
    assert torch.equal(model.freqs_cis, table(8.0))
    assert not torch.allclose(model.freqs_cis[4000], table(32.0)[4000])  # the factor matters
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32
    # The caller's word beats everything; without the parent config the dim rule applies.
    assert read_config(repo / "original", rope_scaling_factor=16.0).rope_scaling_factor == 16.0
    alone = tmp_path / "alone"
    shutil.copytree(repo / "original", alone)
    assert read_config(alone).rope_scaling_factor == 32.0
    # The HF folder itself still loads as HF.
    assert detect_format(repo)[0] == "hf"


def test_hf_folder_with_only_original_weights(hf_models, tmp_path):
    hf = hf_models["llama32"]
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    write_meta(hf, tmp_path / "original", LLAMA32_PARAMS, llama3=True, drop_output=True)
    assert detect_format(tmp_path) == ("meta", tmp_path / "original")


# ---------------------------------------------------------------------------------------
# GGUF: written llama.cpp-style, read by transformers as the oracle
# ---------------------------------------------------------------------------------------

GGUF_CASES = [
    ("llama2", "F32"),
    ("llama2", "F16"),
    ("llama32", "Q8_0"),
    ("qwen2", "F32"),
    ("qwen2", "F16"),
    ("qwen2", "Q8_0"),
]


@pytest.mark.parametrize("kind,qtype", GGUF_CASES, ids=[f"{k}-{q}" for k, q in GGUF_CASES])
def test_gguf_against_transformers(hf_models, tmp_path, kind, qtype):
    path = write_gguf(hf_models[kind], tmp_path / f"{kind}.{qtype}.gguf", qtype)
    oracle = hf_from_gguf(path)
    model = load_model(path, dtype="float32")
    tokens = tokens_for(oracle.config.vocab_size)
    assert max_diff(model, oracle, tokens) <= ATOL_F32
    if qtype != "Q8_0":  # unquantised: also the original model's numbers
        assert max_diff(model, hf_models[kind], tokens) <= (ATOL_F32 if qtype == "F32" else 0.1)


def test_gguf_native_dtypes(hf_models, tmp_path):
    hf = hf_models["qwen2"]
    f16 = load_model(write_gguf(hf, tmp_path / "a.gguf", "F16"))
    assert f16.layers[0].attention.wq.weight.dtype == torch.float16
    assert f16.norm.weight.dtype == torch.float16  # F32 norms follow the matrices
    q8 = load_model(write_gguf(hf, tmp_path / "b.gguf", "Q8_0"))
    assert q8.layers[0].attention.wq.weight.dtype == torch.float32  # dequantised


def test_gguf_blob_without_extension(hf_models, tmp_path):
    """Ollama's blobs are GGUF files named sha256-...: detected by their magic bytes."""
    hf = hf_models["llama2"]
    path = write_gguf(hf, tmp_path / "model.gguf", "F32")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    blob = blobs / "sha256-0123abcd"
    shutil.copy(path, blob)
    assert detect_format(blob) == ("gguf", blob)
    assert detect_format(blobs) == ("gguf", blob)  # a folder with one GGUF in it
    assert max_diff(load_model(blob), hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


def test_gguf_llama3_rope_freqs_tensor(hf_models, tmp_path):
    """llama.cpp stores Llama 3.1 RoPE scaling as a rope_freqs tensor; it becomes
    use_scaled_rope with the factor it encodes (transformers ignores it, so the oracle
    here is the original HF model)."""
    hf = hf_models["llama32"]
    path = write_gguf(hf, tmp_path / "l3.gguf", "F32", rope_freqs=True)
    model = load_model(path, max_seq_len=4096)
    assert model.args.use_scaled_rope and model.args.rope_scaling_factor == 32.0
    scaling = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)
    assert torch.equal(model.freqs_cis, precompute_freqs_cis(8, 4096, 500000.0, scaling))
    assert max_diff(model, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32
