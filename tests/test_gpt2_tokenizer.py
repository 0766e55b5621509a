"""GPT-2's byte-level BPE, from tokenizer.json, vocab.json + merges.txt and GGUF metadata,
against transformers' GPT2Tokenizer built from the same vocab and merges files.

The vocabulary is trained here with `tokenizers` in GPT-2's shape: ByteLevel with GPT-2's
split regex, no prefix space, the 256 byte tokens first, ids in merge order, and
"<|endoftext|>" as the last id (GPT-2's 50256), its only special token. The corpus is the
one tests/test_tokenizer.py uses for every tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_tokenizer import CORPUS, assert_streaming_matches, hf_ids, training_text
from tokenizer import TokenizerError, load_tokenizer

EOT = "<|endoftext|>"
SPECIAL_TEXTS = [f"{EOT}Hello{EOT}", f"a {EOT} b", f"{EOT}{EOT} \n{EOT}x"]


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> Path:
    """vocab.json + merges.txt (nothing else) of a GPT-2-shaped BPE trained here."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=900, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(training_text(), trainer)
    folder = tmp_path_factory.mktemp("gpt2-tok")
    tk.model.save(str(folder))  # writes vocab.json and merges.txt ("#version: 0.2" first)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab[EOT] = len(vocab)  # like GPT-2: the end-of-text token is the last id
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    assert (folder / "merges.txt").read_text(encoding="utf-8").startswith("#version")
    return folder


@pytest.fixture(scope="module")
def hf_gpt2(gpt2_files):
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2Tokenizer.from_pretrained(str(gpt2_files))


@pytest.fixture(scope="module")
def tokenizer_json_folder(gpt2_files, hf_gpt2, tmp_path_factory) -> Path:
    """What save_pretrained writes for that tokenizer: tokenizer.json, tokenizer_config.json."""
    folder = tmp_path_factory.mktemp("gpt2-tokjson")
    hf_gpt2.save_pretrained(str(folder))
    for name in ("vocab.json", "merges.txt"):  # keep only the tokenizer.json route
        (folder / name).unlink(missing_ok=True)
    assert (folder / "tokenizer.json").is_file()
    return folder


def assert_matches_gpt2(tok, hf) -> None:
    assert tok.vocab_size == len(hf)
    assert not tok.add_bos_token and tok.encode("Hello") == hf("Hello")["input_ids"]
    assert tok.eos_id == hf.eos_token_id == tok.token_to_id(EOT) == tok.vocab_size - 1
    assert tok.eos_id in tok.stop_ids
    for text in CORPUS + SPECIAL_TEXTS:
        ours = tok.encode(text)
        assert ours == hf_ids(hf, text), text
        assert tok.encode(text, allow_special=True) == hf_ids(hf, text, allow_special=True), text
        assert tok.decode(tok.encode(text, bos=False)) == text
        assert tok.decode(ours) == hf.decode(ours)
        assert_streaming_matches(tok, ours)
    # End-of-text in the text is plain text unless asked for, as with split_special_tokens.
    assert tok.eos_id not in tok.encode(f"a{EOT}b")
    assert tok.encode(f"a{EOT}b", allow_special=True).count(tok.eos_id) == 1


def test_vocab_and_merges_files(gpt2_files, hf_gpt2):
    tok = load_tokenizer(gpt2_files)  # the folder: finds the pair
    assert tok.kind == "bpe-vocab-merges"
    assert_matches_gpt2(tok, hf_gpt2)
    for one in ("vocab.json", "merges.txt"):  # either file of the pair, found by content
        assert load_tokenizer(gpt2_files / one).encode(CORPUS[13]) == tok.encode(CORPUS[13])


def test_tokenizer_json(tokenizer_json_folder, hf_gpt2):
    tok = load_tokenizer(tokenizer_json_folder)
    assert tok.kind == "bpe-json"
    assert_matches_gpt2(tok, hf_gpt2)


def test_tokenizer_config_beside_vocab_and_merges(gpt2_files, tokenizer_json_folder, hf_gpt2, tmp_path):
    """With the tokenizer_config.json transformers saved beside them, the same ids."""
    folder = tmp_path / "both"
    shutil.copytree(gpt2_files, folder)
    shutil.copy(tokenizer_json_folder / "tokenizer_config.json", folder)
    assert_matches_gpt2(load_tokenizer(folder / "vocab.json"), hf_gpt2)


def write_gpt2_vocab_gguf(path: Path, gpt2_files: Path, pre: str = "gpt-2") -> Path:
    """A vocab-only GGUF as llama.cpp's converter writes GPT-2's tokenizer: model "gpt2",
    pre "gpt-2", end-of-text a control token, bos = eos = its id, no add_bos_token key."""
    import gguf

    vocab = json.loads((gpt2_files / "vocab.json").read_text(encoding="utf-8"))
    tokens = sorted(vocab, key=vocab.get)
    merges = [ln for ln in (gpt2_files / "merges.txt").read_text(encoding="utf-8").split("\n")[1:] if ln]
    w = gguf.GGUFWriter(str(path), arch="gpt2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t == EOT else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab[EOT])
    w.add_eos_token_id(vocab[EOT])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_metadata(gpt2_files, hf_gpt2, tmp_path):
    path = write_gpt2_vocab_gguf(tmp_path / "gpt2-vocab.gguf", gpt2_files)
    tok = load_tokenizer(path)
    assert tok.kind == "gguf-gpt2"
    assert_matches_gpt2(tok, hf_gpt2)  # includes: no BOS, as llama.cpp does for GPT-2
    # llama.cpp's default without an add_bos_token key: BOS only for Llama 3's pre-tokenizer.
    llama3 = load_tokenizer(write_gpt2_vocab_gguf(tmp_path / "l3.gguf", gpt2_files, pre="llama-bpe"))
    assert llama3.add_bos_token and llama3.encode("Hi")[0] == llama3.bos_id


def test_gguf_model_file_gives_model_and_tokenizer(gpt2_files, hf_gpt2, tmp_path):
    """One GPT-2 GGUF file: load_model and load_tokenizer both read it."""
    import torch

    from gpt2_models import tiny_gpt2, write_gguf_gpt2
    from weights import load_model

    vocab = json.loads((gpt2_files / "vocab.json").read_text(encoding="utf-8"))
    tokens = sorted(vocab, key=vocab.get)
    merges = [ln for ln in (gpt2_files / "merges.txt").read_text(encoding="utf-8").split("\n")[1:] if ln]
    hf = tiny_gpt2("small", vocab_size=len(tokens), bos_token_id=vocab[EOT], eos_token_id=vocab[EOT])
    path = write_gguf_gpt2(
        hf, tmp_path / "gpt2.gguf", tokens=tokens, merges=merges,
        token_types=[3 if t == EOT else 1 for t in tokens],
    )
    tok, model = load_tokenizer(path), load_model(path)
    ids = tok.encode("The capital of France is")
    assert ids == hf_gpt2("The capital of France is")["input_ids"]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))
        expected = hf(torch.tensor([ids])).logits
    assert (ours - expected).abs().max().item() <= 1e-4


def test_bad_pairs_are_clear_errors(gpt2_files, tmp_path):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(gpt2_files / "vocab.json", lonely)
    with pytest.raises(TokenizerError, match="needs both vocab.json and merges.txt"):
        load_tokenizer(lonely / "vocab.json")
    with pytest.raises(TokenizerError, match="no usable tokenizer"):
        load_tokenizer(lonely)
    broken = tmp_path / "broken"
    shutil.copytree(gpt2_files, broken)
    (broken / "merges.txt").write_text("#version: 0.2\nĠ t\nnot-a-merge\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="line 3 is not a merge"):
        load_tokenizer(broken / "merges.txt")
    (broken / "merges.txt").write_text("#version: 0.2\nq z\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        load_tokenizer(broken)
