"""llama-convert: Meta <-> Hugging Face (and GGUF -> either), bit for bit, checked by transformers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scripts.convert import main, parse_size
from checkpoint_writers import ATOL_F32, LLAMA2_PARAMS, max_diff, tokens_for, write_gguf, write_meta
from tiny_models import tiny_hf_model
from weights import load_model, read_config


def _hf_tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _meta_tensors(folder):
    out = {}
    for f in sorted(folder.glob("consolidated.*.pth")):
        out[f.name] = torch.load(f, weights_only=True)
    return out


def _bit_identical(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, dict):
            _bit_identical(x, y)
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, name
        # Compare the raw bytes: equal floats with different bits (e.g. -0.0) would fail too.
        assert torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8)), name


def _from_pretrained(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.mark.parametrize("kind", ["llama2", "llama32", "qwen2"])
def test_hf_to_meta_to_hf_round_trip(tmp_path, kind):
    hf = tiny_hf_model(kind)
    hf.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "meta"), "--to", "meta"]) == 0
    assert main([str(tmp_path / "meta"), str(tmp_path / "hf2"), "--to", "hf"]) == 0
    # Same tensors, same bytes, same names (tied models without lm_head stay without it).
    _bit_identical(_hf_tensors(tmp_path / "hf"), _hf_tensors(tmp_path / "hf2"))
    assert read_config(tmp_path / "hf2") == read_config(tmp_path / "hf")
    # What we write, transformers reads, and it computes what our model computes.
    ours = load_model(tmp_path / "meta")
    theirs = _from_pretrained(tmp_path / "hf2")
    assert max_diff(ours, theirs, tokens_for(hf.config.vocab_size)) <= ATOL_F32
    assert max_diff(ours, hf, tokens_for(hf.config.vocab_size)) <= ATOL_F32


def test_meta_to_hf_to_meta_round_trip(tmp_path):
    hf = tiny_hf_model("llama2")
    write_meta(hf, tmp_path / "meta", LLAMA2_PARAMS)  # Meta's own params.json, vocab -1
    assert main([str(tmp_path / "meta"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert main([str(tmp_path / "hf"), str(tmp_path / "meta2"), "--to", "meta"]) == 0
    _bit_identical(_meta_tensors(tmp_path / "meta"), _meta_tensors(tmp_path / "meta2"))
    # The FFN size survives; how params.json spells it may not (Meta's multiple_of rounding
    # becomes an explicit size, since config.json only has intermediate_size).
    a, b = read_config(tmp_path / "meta").to_dict(), read_config(tmp_path / "meta2").to_dict()
    assert read_config(tmp_path / "meta").hidden_dim == read_config(tmp_path / "meta2").hidden_dim == 172
    for spelling in ("multiple_of", "ffn_hidden_dim"):
        a.pop(spelling), b.pop(spelling)
    assert a == b
    theirs = _from_pretrained(tmp_path / "hf")
    assert max_diff(load_model(tmp_path / "meta"), theirs, tokens_for(320)) <= ATOL_F32


def test_bfloat16_round_trip_keeps_dtype_and_bits(tmp_path):
    hf = tiny_hf_model("qwen2").to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "meta"), "--to", "meta"]) == 0
    meta = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    assert meta["layers.0.attention.wq.weight"].dtype == torch.bfloat16
    assert main([str(tmp_path / "meta"), str(tmp_path / "hf2"), "--to", "hf"]) == 0
    _bit_identical(_hf_tensors(tmp_path / "hf"), _hf_tensors(tmp_path / "hf2"))
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_meta_output_in_two_shards_and_sharded_hf(tmp_path):
    hf = tiny_hf_model("llama2")
    hf.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "meta"), "--to", "meta", "--shards", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "meta").glob("*.pth")) == ["consolidated.00.pth", "consolidated.01.pth"]
    assert main([str(tmp_path / "meta"), str(tmp_path / "hf2"), "--to", "hf", "--max-shard-size", "50KB"]) == 0
    assert len(list((tmp_path / "hf2").glob("model-*.safetensors"))) > 2
    _bit_identical(_hf_tensors(tmp_path / "hf"), _hf_tensors(tmp_path / "hf2"))
    theirs = _from_pretrained(tmp_path / "hf2")  # transformers reads our sharded output
    assert max_diff(load_model(tmp_path / "meta"), theirs, tokens_for(320)) <= ATOL_F32


@pytest.mark.parametrize("kind,qtype", [("llama32", "Q8_0"), ("qwen2", "F16")])
def test_gguf_to_meta_and_hf(tmp_path, kind, qtype):
    hf = tiny_hf_model(kind)
    gguf_path = write_gguf(hf, tmp_path / "m.gguf", qtype)
    assert main([str(gguf_path), str(tmp_path / "meta"), "--to", "meta"]) == 0
    assert main([str(gguf_path), str(tmp_path / "hf"), "--to", "hf", "--dtype", "float32"]) == 0
    tokens = tokens_for(hf.config.vocab_size)
    source = load_model(gguf_path)  # float16 for F16 files, float32 when dequantised
    with torch.no_grad():
        expected = source(tokens)
        got_meta = load_model(tmp_path / "meta")(tokens)
    assert torch.equal(got_meta, expected)  # the same weights in the same dtype, exactly
    source = load_model(gguf_path, dtype="float32")
    assert max_diff(source, _from_pretrained(tmp_path / "hf"), tokens) <= ATOL_F32


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out"), "--to", "hf"]) == 1
    assert "does not exist" in capsys.readouterr().err
    hf = tiny_hf_model("llama2")
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main([str(tmp_path / "hf"), str(tmp_path / "busy"), "--to", "meta"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([str(tmp_path / "hf"), str(tmp_path / "busy"), "--to", "meta", "--force"]) == 0
    assert main([str(tmp_path / "hf"), str(tmp_path / "o"), "--to", "hf", "--shards", "2"]) == 2
    assert "--shards is for --to meta" in capsys.readouterr().err
    assert main([str(tmp_path / "hf"), str(tmp_path / "o"), "--to", "meta", "--shards", "3"]) == 1
    assert "cannot split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "hf"), str(tmp_path / "o"), "--to", "gguf"])
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2MiB") == 2 * 2**20 and parse_size("100") == 100
