"""GPT-2 checkpoints in every published format -> llama.gpt2.GPT2, against transformers.

Formats: save_pretrained's folder (model.safetensors), the hub's pytorch_model.bin layout
(names without "transformer.", causal-mask buffers saved with the weights), and GGUF as
llama.cpp writes architecture gpt2 (F32, F16, Q8_0; with and without the old output copy).
Oracles: the transformers model the files were written from, and transformers reading
the same GGUF file (gguf_file=...). Then the rule that picks the model, and the errors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from gpt2_models import (
    ATOL_F32,
    TINY_GPT2,
    hf_from_gguf,
    tiny_gpt2,
    tokens_for,
    write_bin,
    write_gguf_gpt2,
    write_hf,
)
from llama.gpt2 import GPT2, GPT2Config
from llama.model import Transformer
from weights import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InsufficientMemoryError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    detect_format,
    load_model,
    open_checkpoint,
    read_config,
)
from weights.families import checkpoint_family
from weights.gpt2 import conv1d_to_linear, hf_gpt2_name


@pytest.fixture(scope="module")
def models():
    return {kind: tiny_gpt2(kind) for kind in TINY_GPT2}


@pytest.fixture(scope="module")
def small():
    return tiny_gpt2("small")


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens) if not hasattr(model, "transformer") else model(tokens).logits


def assert_parity(ours, reference, vocab: int) -> None:
    """72 tokens at once, then 64 + 8 single tokens through the KV cache."""
    tokens = tokens_for(vocab, length=72)
    expected = _logits(reference, tokens)
    diff = (_logits(ours, tokens) - expected).abs().max().item()
    assert diff <= ATOL_F32, f"prefill: max abs logit diff {diff:.3g}"
    ours.reset_cache()
    with torch.no_grad():
        steps = [ours(tokens[:, :64])] + [ours(tokens[:, p : p + 1], start_pos=p) for p in range(64, 72)]
    diff = (torch.cat(steps, dim=1) - expected).abs().max().item()
    assert diff <= ATOL_F32, f"decode: max abs logit diff {diff:.3g}"


# --- formats --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TINY_GPT2))
@pytest.mark.parametrize("layout", ["safetensors", "bin-hub", "bin-prefixed"])
def test_hf_folders(models, tmp_path, kind, layout):
    hf = models[kind]
    if layout == "safetensors":
        folder = write_hf(hf, tmp_path / "st")
        assert (folder / "model.safetensors").is_file()
    elif layout == "bin-hub":  # the hub's original GPT-2 files
        folder = write_bin(hf, tmp_path / "bin")
    else:  # transformers 4.x save_pretrained(safe_serialization=False)
        folder = write_bin(hf, tmp_path / "binp", prefix="transformer.", mask_buffers=False)
    ours = load_model(folder)
    assert isinstance(ours, GPT2) and ours.output.weight is ours.tok_embeddings.weight
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())
    assert_parity(ours, hf, hf.config.vocab_size)
    # The weights file itself is accepted too, and names the same folder.
    weights_file = next(folder.glob("*.safetensors"), folder / "pytorch_model.bin")
    assert detect_format(weights_file) == ("hf", folder)


def test_hf_sharded_safetensors(small, tmp_path):
    small.save_pretrained(tmp_path, max_shard_size="100KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert_parity(load_model(tmp_path), small, small.config.vocab_size)


def test_hf_untied_output(tmp_path):
    hf = tiny_gpt2("small", tie_word_embeddings=False, seed=3)
    with torch.no_grad():
        hf.lm_head.weight.copy_(0.5 * hf.transformer.wte.weight + 0.1 * torch.randn_like(hf.lm_head.weight))
    ours = load_model(write_hf(hf, tmp_path))
    assert not ours.args.tie_word_embeddings and ours.output.weight is not ours.tok_embeddings.weight
    assert_parity(ours, hf, hf.config.vocab_size)


@pytest.mark.parametrize("kind", list(TINY_GPT2))
def test_gguf_f32_against_the_original_and_transformers_reading_it(models, tmp_path, kind):
    hf = models[kind]
    path = write_gguf_gpt2(hf, tmp_path / "tiny-gpt2.gguf")
    ours = load_model(path)
    assert isinstance(ours, GPT2) and ours.args.tie_word_embeddings
    assert ours.args.layer_norm_epsilon == pytest.approx(1e-5)  # stored as float32 in GGUF
    expected = GPT2Config(**{k: getattr(hf.config, k) for k in TINY_GPT2[kind]})
    assert dataclasses.replace(ours.args, layer_norm_epsilon=1e-5) == expected
    assert_parity(ours, hf, hf.config.vocab_size)
    assert_parity(ours, hf_from_gguf(path), hf.config.vocab_size)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
def test_gguf_quantised_against_transformers_reading_it(small, tmp_path, qtype):
    path = write_gguf_gpt2(small, tmp_path / f"tiny-{qtype}.gguf", qtype=qtype)
    ours = load_model(path)
    assert ours.tok_embeddings.weight.dtype == (torch.float16 if qtype == "F16" else torch.float32)
    ours = load_model(path, dtype="float32")
    assert_parity(ours, hf_from_gguf(path), small.config.vocab_size)


def test_gguf_with_output_copy_and_as_a_blob(small, tmp_path):
    """Older llama.cpp converters wrote token_embd a second time as output: the file's own
    output matrix is used (as llama.cpp does); the logits are the same."""
    path = write_gguf_gpt2(small, tmp_path / "old.gguf", output_copy=True)
    ours = load_model(path)
    assert not ours.args.tie_word_embeddings
    assert ours.num_params() == sum(p.numel() for p in small.parameters()) + ours.output.weight.numel()
    assert_parity(ours, small, small.config.vocab_size)
    blob = tmp_path / "blobs" / "sha256-0123abcd"  # an Ollama blob: no extension
    blob.parent.mkdir()
    shutil.copy(path, blob)
    assert detect_format(blob) == ("gguf", blob) and isinstance(load_model(blob), GPT2)


def test_bfloat16_load(small, tmp_path):
    folder = write_hf(small, tmp_path)
    ours = load_model(folder, dtype="bfloat16")
    assert ours.layers[0].attention.wqkv.weight.dtype == torch.bfloat16
    assert ours.norm.bias.dtype == torch.bfloat16
    tokens = tokens_for(small.config.vocab_size, length=24)
    got, expected = _logits(ours, tokens), _logits(small, tokens)
    assert got.dtype == torch.float32
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


# --- memory-lean reading ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_tensors_are_mapped_and_only_conv1d_weights_copied(small, tmp_path, layout):
    folder = write_hf(small, tmp_path) if layout == "safetensors" else write_bin(small, tmp_path)
    ckpt = open_checkpoint(folder)
    assert ckpt.family == "gpt2" and isinstance(ckpt.args, GPT2Config)
    f32 = torch.float32
    # A tensor used as stored is a view of the memory-mapped file: the same memory each time.
    # (For pytorch_model.bin torch.load(mmap=True) keeps one tensor per name, so the same
    # pointer there proves nothing; the safetensors reader builds a new view per read.)
    a, b = ckpt.read("tok_embeddings.weight", f32), ckpt.read("tok_embeddings.weight", f32)
    if layout == "safetensors":
        assert a is not b and a.data_ptr() == b.data_ptr()
    # A Conv1D weight is transposed into fresh contiguous memory, (in, out) -> (out, in).
    w = ckpt.read("layers.0.attention.wqkv.weight", f32)
    D = small.config.n_embd
    assert w.shape == (3 * D, D) and w.is_contiguous()
    assert torch.equal(w, small.transformer.h[0].attn.c_attn.weight.t())
    assert ckpt.shapes["layers.0.feed_forward.w2.weight"] == (D, 4 * D)


def test_memory_is_checked_before_reading(small, tmp_path, monkeypatch):
    folder = write_hf(small, tmp_path)
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", "1MiB")
    with pytest.raises(InsufficientMemoryError, match="needs about"):
        load_model(folder)
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", "2GiB")
    assert isinstance(load_model(folder), GPT2)


# --- the rule: which model a checkpoint gets ----------------------------------------------


def test_which_model_a_checkpoint_gets(small, tmp_path):
    from checkpoint_writers import write_gguf
    from tiny_models import tiny_hf_model

    gpt2_hf = write_hf(small, tmp_path / "gpt2-hf")
    gpt2_bin = write_bin(small, tmp_path / "gpt2-bin")
    gpt2_gguf = write_gguf_gpt2(small, tmp_path / "gpt2.gguf")
    llama = tiny_hf_model("llama2")
    llama_hf = tmp_path / "llama-hf"
    llama.save_pretrained(llama_hf)
    llama_gguf = write_gguf(llama, tmp_path / "llama.gguf")
    for path, family, cls in [
        (gpt2_hf, "gpt2", GPT2),
        (gpt2_bin, "gpt2", GPT2),
        (gpt2_gguf, "gpt2", GPT2),
        (llama_hf, "llama", Transformer),
        (llama_gguf, "llama", Transformer),
    ]:
        kind, where = detect_format(path)
        assert checkpoint_family(kind, where) == family, path
        assert open_checkpoint(path).family == family
        assert type(load_model(path)) is cls
    assert isinstance(read_config(gpt2_gguf), GPT2Config)
    # The rule reads the config, not the name: a Llama config.json makes a Llama model.
    assert checkpoint_family("hf", llama_hf) == "llama"
    config = json.loads((gpt2_hf / "config.json").read_text())
    config["model_type"] = "llama"
    (gpt2_hf / "config.json").write_text(json.dumps(config))
    assert checkpoint_family("hf", gpt2_hf) == "llama"


# --- errors ----------------------------------------------------------------------------------


def _rewrite(folder, edit):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(small, tmp_path):
    folder = write_hf(small, tmp_path)
    _rewrite(folder, lambda t: t.pop("transformer.h.1.mlp.c_proj.weight"))
    with pytest.raises(StateDictMismatchError, match=r"missing 1 tensor\(s\): layers\.1\.feed_forward\.w2\.weight"):
        load_model(folder)


def test_unexpected_tensor_is_named(small, tmp_path):
    folder = write_hf(small, tmp_path)
    _rewrite(folder, lambda t: t.update({"transformer.h.0.mlp.c_extra.weight": torch.zeros(2, 2)}))
    with pytest.raises(StateDictMismatchError, match=r"unexpected 1 tensor\(s\): transformer\.h\.0\.mlp\.c_extra"):
        load_model(folder)


def test_wrong_shape_names_the_key_and_both_shapes(small, tmp_path):
    folder = write_hf(small, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["n_inner"] = 300  # the file's MLP is 4 * 96 = 384 wide
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(StateDictMismatchError) as e:
        load_model(folder)
    msg = str(e.value)
    assert "layers.0.feed_forward.w1." in msg and "mlp.c_fc." in msg and "in the file" in msg, msg
    assert "(384" in msg and "(300" in msg and "needs" in msg, msg
    assert "(in, out)" in msg  # says which layout the shapes are given in


def test_gguf_missing_tensor_is_named(small, tmp_path):
    import gguf

    good = write_gguf_gpt2(small, tmp_path / "good.gguf")
    reader = gguf.GGUFReader(str(good))
    w = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "gpt2")
    for field in reader.fields.values():
        if field.name.startswith("gpt2."):
            value = field.parts[field.data[0]][0]
            {"gpt2.block_count": w.add_block_count, "gpt2.context_length": w.add_context_length,
             "gpt2.embedding_length": w.add_embedding_length, "gpt2.feed_forward_length": w.add_feed_forward_length,
             "gpt2.attention.head_count": w.add_head_count,
             "gpt2.attention.layer_norm_epsilon": w.add_layer_norm_eps}[field.name](value.item())
    for t in reader.tensors:
        if t.name != "blk.2.ffn_up.bias":
            w.add_tensor(t.name, t.data.reshape(tuple(reversed([int(d) for d in t.shape]))))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(StateDictMismatchError, match=r"missing 1 tensor\(s\): layers\.2\.feed_forward\.w1\.bias"):
        load_model(tmp_path / "bad.gguf")


class NotATensor:  # a pickled instance of this must never be unpickled by the loader
    def __init__(self):
        self.payload = "would run code on load"


def test_bin_that_is_not_weights_only_is_refused(small, tmp_path):
    folder = write_bin(small, tmp_path)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["optimizer"] = NotATensor()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="weights-only loading refused") as e:
        load_model(folder)
    assert "never unpickle" in str(e.value)


def test_truncated_bin(small, tmp_path):
    folder = write_bin(small, tmp_path)
    path = folder / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError, match="truncated or damaged"):
        load_model(folder)


def test_config_errors_name_the_file(small, tmp_path):
    folder = write_hf(small, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["activation_function"] = "relu"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: activation_function 'relu' is not supported"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="cannot override max_seq_len"):
        load_model(write_hf(small, tmp_path / "again"), max_seq_len=4096)


def test_folder_without_weights_and_sharded_bin(small, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(small.config.to_dict()))
    with pytest.raises(CheckpointNotFoundError):
        load_model(folder)
    (folder / "pytorch_model.bin.index.json").write_text('{"weight_map": {}}')
    with pytest.raises(CheckpointError, match="sharded pytorch_model-\\*.bin checkpoint, which is not supported"):
        load_model(folder)


def test_gguf_without_position_embeddings(small, tmp_path):
    import gguf

    path = tmp_path / "nopos.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_embedding_length(8)
    w.add_tensor("token_embd.weight", torch.zeros(10, 8).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CorruptCheckpointError, match="without a position_embd.weight"):
        load_model(path)


def test_name_map_and_transposition_helpers():
    assert hf_gpt2_name("transformer.h.11.attn.c_attn.weight") == "layers.11.attention.wqkv.weight"
    assert hf_gpt2_name("h.0.mlp.c_proj.bias") == "layers.0.feed_forward.w2.bias"
    assert hf_gpt2_name("wpe.weight") == "pos_embeddings.weight"
    assert hf_gpt2_name("h.3.attn.masked_bias") is None and hf_gpt2_name("h.3.attn.bias") is None
    assert hf_gpt2_name("transformer.h.0.attn.c_attn.bias") == "layers.0.attention.wqkv.bias"
    assert hf_gpt2_name("something.else") == "something.else"  # reported as unexpected
    w = torch.arange(6.0).view(2, 3)
    assert torch.equal(conv1d_to_linear("layers.0.attention.wo.weight", w), w.t())
    assert conv1d_to_linear("layers.0.attention.wo.bias", w) is w
    assert conv1d_to_linear("tok_embeddings.weight", w) is w


def test_convert_refuses_gpt2(small, tmp_path):
    from weights.save import convert

    with pytest.raises(CheckpointError, match="gpt2 checkpoint; llama-convert writes Llama-family layouts only"):
        convert(write_hf(small, tmp_path / "src"), tmp_path / "out", to="meta")


def test_weights_as_stored_say_they_are_for_llama_models(small, tmp_path):
    from weights.stored import load_stored

    path = write_gguf_gpt2(small, tmp_path / "tiny-gpt2.gguf")
    with pytest.raises(CheckpointError, match="gpt2 checkpoint; load_stored keeps Llama-family"):
        load_stored(path)
