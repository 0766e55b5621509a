"""Tiny random checkpoints with a real tokenizer, in every format, for the parity tests.

tests/checkpoint_writers.py writes the Llama-family weights, tests/gpt2_models.py GPT-2's
(its writers are reused here, with this file's vocabulary); a parity run also compares tokenizers,
so each checkpoint here gets a small byte-level BPE vocabulary trained (by the
`tokenizers` library, deterministically) to exactly the model's vocabulary size:
tokenizer.json + tokenizer_config.json in folders, the tokenizer.ggml.* keys in GGUF
files. Both our tokenizer and transformers' read those. (No tests in this file.)
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from checkpoint_writers import LLAMA2_PARAMS, LLAMA32_PARAMS, write_gguf, write_meta
from gpt2_models import tiny_gpt2, write_bin, write_gguf_gpt2, write_hf
from tiny_models import tiny_hf_model

SPECIALS = ["<|endoftext|>", "<|im_end|>", "<|im_start|>"]  # ids 0, 1, 2
TRAINING_TEXT = [
    "The capital of France is Paris. The capital of Germany is Berlin. ",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Once upon a time, a little robot walked into the forest and met a fox. ",
    "In 2024 there were 366 days; 1234567890 is a number. ",
    "Grüße aus Köln! 你好，世界 🙂 naïve café ",
    "the of and to in is was for on that with as by at from ",
]


@dataclass
class Vocab:
    tokens: list[str]  # byte-level spellings, in id order
    merges: list[str]  # "a b", best first
    types: list[int]  # GGUF token types: 3 control (the specials), 1 normal
    tokenizer_json: str


# Qwen2's split regex, as transformers' Qwen2 tokenizer states it: transformers 5 puts it in
# front of any Qwen2 folder's tokenizer.json (with an NFC normaliser), so a Qwen2 vocabulary
# must be trained with it, as the real one was.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@functools.lru_cache(maxsize=None)
def vocab(size: int, style: str = "gpt2") -> Vocab:
    """A byte-level BPE of exactly `size` tokens; style "gpt2" (GPT-2's regex, as Llama
    GGUFs of SmolLM2-like models) or "qwen2" (Qwen2's regex and NFC)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT * 20, trainer)
    data = json.loads(tok.to_str())
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    if len(by_id) != size:
        raise AssertionError(f"trained {len(by_id)} tokens, wanted exactly {size}: give TRAINING_TEXT more variety")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    tokens = [by_id[i] for i in range(size)]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return Vocab(tokens, merges, types, tok.to_str())


def write_tokenizer_files(folder: Path, v: Vocab) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(v.tokenizer_json, encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "bos_token": None,
              "add_bos_token": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


@contextlib.contextmanager
def _gguf_vocab(v: Vocab, pre: str):
    """Make write_gguf (which writes placeholder tokens) write this vocabulary instead."""
    import gguf

    base = gguf.GGUFWriter

    class Writer(base):
        def add_token_list(self, tokens):
            super().add_token_list(v.tokens)

        def add_token_types(self, types):
            super().add_token_types(v.types)

        def add_token_merges(self, merges):
            super().add_token_merges(v.merges)
            self.add_tokenizer_pre(pre)  # llama.cpp's name for the split regex it trained with
            self.add_add_bos_token(False)

    gguf.GGUFWriter = Writer
    try:
        yield
    finally:
        gguf.GGUFWriter = base


FORMATS = ("meta", "hf", "hf-sharded", "gguf")
# (family, format) pairs that exist in the wild: Meta publishes no Qwen2 .pth files.
CASES = [
    ("llama2", "meta"), ("llama2", "hf"), ("llama2", "hf-sharded"), ("llama2", "gguf"),
    ("llama32", "meta"), ("llama32", "hf"), ("llama32", "gguf"),
    ("qwen2", "hf"), ("qwen2", "hf-sharded"), ("qwen2", "gguf"),
]
# GPT-2 as published: save_pretrained's safetensors, the hub's pytorch_model.bin, GGUF.
GPT2_CASES = [("gpt2", "hf"), ("gpt2", "hf-sharded"), ("gpt2", "hf-bin"), ("gpt2", "gguf")]
# Odd-sized like GPT-2's 50,257; the vocabulary below trains to exactly this many tokens.
GPT2_VOCAB = 383


def write_tiny(kind: str, fmt: str, folder: Path, rope_freqs: bool = False, **overrides) -> Path:
    """A tiny random `kind` model ("llama2", "llama32", "qwen2", "gpt2") written as `fmt`,
    with its tokenizer; returns the path to hand to llama-parity. `overrides` are config
    fields (num_hidden_layers=4; for GPT-2 its own names, n_layer=4)."""
    if kind == "gpt2":
        return _write_tiny_gpt2(fmt, folder, **overrides)
    hf = tiny_hf_model(kind, **overrides)
    style = "qwen2" if kind == "qwen2" else "gpt2"
    v = vocab(hf.config.vocab_size, style)
    if fmt == "hf":
        hf.save_pretrained(folder)
        write_tokenizer_files(folder, v)
        return folder
    if fmt == "hf-sharded":
        hf.save_pretrained(folder, max_shard_size="40KB")
        write_tokenizer_files(folder, v)
        return folder
    if fmt == "meta":
        if kind == "llama2":
            write_meta(hf, folder, LLAMA2_PARAMS, rope_freqs=True)
        elif kind == "llama32":
            write_meta(hf, folder, LLAMA32_PARAMS, llama3=True, drop_output=True)
        else:
            raise ValueError(f"Meta publishes no {kind} checkpoints")
        write_tokenizer_files(folder, v)
        return folder
    if fmt == "gguf":
        folder.mkdir(parents=True, exist_ok=True)
        with _gguf_vocab(v, "qwen2" if style == "qwen2" else "gpt-2"):
            return write_gguf(hf, folder / f"{kind}.gguf", "F32", rope_freqs=rope_freqs)
    raise ValueError(f"unknown format {fmt!r}")


def _write_tiny_gpt2(fmt: str, folder: Path, **overrides) -> Path:
    """GPT-2 small's shape scaled down (tests/gpt2_models.TINY_GPT2["small"]: 3 layers,
    12 heads of 8, tied embeddings, gelu_new), a vocabulary of GPT2_VOCAB byte-level BPE
    tokens with "<|endoftext|>" as id 0 (its bos/eos), in the format `fmt`."""
    hf = tiny_gpt2("small", **{"vocab_size": GPT2_VOCAB, **overrides})
    v = vocab(hf.config.vocab_size, "gpt2")
    if fmt == "hf":
        write_hf(hf, folder)
    elif fmt == "hf-sharded":
        hf.save_pretrained(folder, max_shard_size="100KB")
    elif fmt == "hf-bin":  # the hub's original files: bare names, causal-mask buffers saved
        write_bin(hf, folder)
    elif fmt == "gguf":
        folder.mkdir(parents=True, exist_ok=True)
        return write_gguf_gpt2(hf, folder / "gpt2.gguf", tokens=v.tokens, merges=v.merges, token_types=v.types)
    else:
        raise ValueError(f"unknown GPT-2 format {fmt!r} (hf, hf-sharded, hf-bin, gguf)")
    write_tokenizer_files(folder, v)
    return folder
