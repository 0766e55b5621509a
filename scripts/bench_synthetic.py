"""A random model with a real model's shapes, written as a GGUF file for llama-bench.

    python -m scripts.bench --synthetic llama2-7b            # 6.7B parameters
    python -m scripts.bench --synthetic small --no-transformers   # a quick check of the same code

The weights are random (only their shapes and their bytes matter for speed), written one
tensor at a time so the writer never holds more than one tensor, in one of two forms:

    q4_0   every matrix as GGUF Q4_0 blocks: random 4-bit values, float16 scales around
           0.02 / 8 (3.8 GB for Llama-2-7B). Our bfloat16 model dequantizes it to 13.5 GB;
           weights as stored and llama.cpp run the blocks themselves.
    bf16   every matrix as bfloat16 (13.5 GB for Llama-2-7B, memory-mapped by our loader);
           weights as stored quantize it to int8 when loading.

Norms are ones. The vocabulary is a placeholder SentencePiece-style list (so llama.cpp
finds one); the benchmark feeds token ids, never text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = {
    # Llama-2-7B: dim 4096, 32 layers, 32 heads (no GQA), FFN 11008, vocabulary 32000, untied.
    "llama2-7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn=11008, vocab=32000),
    # The same code on a model small enough for a test.
    "small": dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn=512, vocab=512),
}
FORMATS = ("q4_0", "bf16")


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, int] | tuple[int]]:
    """GGUF names -> (rows, cols) for matrices, (n,) for norms."""
    D, F, V = cfg["dim"], cfg["ffn"], cfg["vocab"]
    kv = cfg["n_kv_heads"] * (D // cfg["n_heads"])
    shapes: dict = {"token_embd.weight": (V, D)}
    for i in range(cfg["n_layers"]):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (D,), p + "attn_q.weight": (D, D), p + "attn_k.weight": (kv, D),
            p + "attn_v.weight": (kv, D), p + "attn_output.weight": (D, D), p + "ffn_norm.weight": (D,),
            p + "ffn_gate.weight": (F, D), p + "ffn_up.weight": (F, D), p + "ffn_down.weight": (D, F),
        })
    shapes["output_norm.weight"] = (D,)
    shapes["output.weight"] = (V, D)
    return shapes


def _q4_0(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random Q4_0 blocks, (rows, cols / 32 * 18) bytes: float16 d, then 16 bytes of nibbles."""
    blocks = rows * cols // 32
    out = np.empty((blocks, 18), dtype=np.uint8)
    d = (0.02 / 8 * (0.5 + rng.random(blocks, dtype=np.float32))).astype(np.float16)
    out[:, :2] = d.view(np.uint8).reshape(blocks, 2)
    out[:, 2:] = rng.integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    return out.reshape(rows, cols // 32 * 18)


def _bf16(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(shape, dtype=np.float32) * 0.02
    return (values.view(np.uint32) >> 16).astype(np.uint16)  # the top half of float32: bfloat16


def write_gguf(path: Path, preset: str = "llama2-7b", fmt: str = "q4_0", n_layers: int | None = None) -> int:
    """Write the random model; returns the file's size in bytes."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    if preset not in SHAPES or fmt not in FORMATS:
        raise ValueError(f"preset must be one of {list(SHAPES)} and format one of {list(FORMATS)}")
    cfg = dict(SHAPES[preset])
    if n_layers is not None:
        cfg["n_layers"] = n_layers
    shapes = tensor_shapes(cfg)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"random {preset}")
    w.add_block_count(cfg["n_layers"])
    w.add_context_length(4096)
    w.add_embedding_length(cfg["dim"])
    w.add_feed_forward_length(cfg["ffn"])
    w.add_head_count(cfg["n_heads"])
    w.add_head_count_kv(cfg["n_kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg["dim"] // cfg["n_heads"])
    w.add_vocab_size(cfg["vocab"])
    w.add_file_type({"q4_0": 2, "bf16": 32}[fmt])
    # A SentencePiece-style vocabulary: unknown, BOS, EOS, the 256 byte tokens, then fillers.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(cfg["vocab"] - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def stored_form(shape):
        if len(shape) == 1:
            return np.float32, (shape[0] * 4), None
        if fmt == "q4_0":
            return np.uint8, shape[0] * shape[1] // 32 * 18, Q.Q4_0
        return np.uint16, shape[0] * shape[1] * 2, Q.BF16

    for name, shape in shapes.items():  # the table first, then the data tensor by tensor
        dtype, nbytes, raw = stored_form(shape)
        byte_shape = shape if raw is not Q.Q4_0 else (shape[0], shape[1] // 32 * 18)
        w.add_tensor_info(name, byte_shape if raw is Q.Q4_0 else shape, np.dtype(dtype), nbytes, raw_dtype=raw)
    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        if len(shape) == 1:
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
        elif fmt == "q4_0":
            w.write_tensor_data(_q4_0(*shape, rng))
        else:
            w.write_tensor_data(_bf16(shape, rng))
    w.close()
    return path.stat().st_size


__all__ = ["write_gguf", "SHAPES", "FORMATS", "tensor_shapes"]
