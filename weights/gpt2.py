"""GPT-2 checkpoints: Hugging Face folders and GGUF files -> llama.gpt2.GPT2.

Which checkpoints come here is decided in weights.families (config.json model_type
"gpt2", GGUF general.architecture "gpt2"). The steps after opening (meta-device build,
strict names and shapes, memory check, memory-mapped assign) are weights.checkpoint's,
the same as for Llama.

Hugging Face folder (what save_pretrained writes, and what the hub's gpt2 repos hold):

    config.json                    GPT2Config.from_hf_config
    model.safetensors              one file, or shards with model.safetensors.index.json;
    pytorch_model.bin              otherwise this (torch.load(weights_only=True, mmap=True))

    Hugging Face name (optionally "transformer."-prefixed)   ours
    wte / wpe                                          tok_embeddings / pos_embeddings
    h.N.ln_1 / h.N.ln_2                                layers.N.attention_norm / ffn_norm
    h.N.attn.c_attn / h.N.attn.c_proj                  layers.N.attention.wqkv / wo
    h.N.mlp.c_fc / h.N.mlp.c_proj                      layers.N.feed_forward.w1 / w2
    ln_f                                               norm
    lm_head (usually absent: tied)                     output
    h.N.attn.bias, h.N.attn.masked_bias                ignored: causal-mask buffers that
                                                       older transformers versions saved

The transposition. GPT-2's four projection matrices are Hugging Face `Conv1D` modules,
which compute x @ W + b with W stored as (in_features, out_features): the transpose of
nn.Linear's (out, in). `conv1d_to_linear` below is the one place that turns them around,
at load time; the model never sees the other layout. (A transposed tensor is copied into
fresh memory once, so the model's weights are ordinary contiguous matrices.)

GGUF (llama.cpp's converter): the metadata keys gpt2.embedding_length, block_count,
attention.head_count, feed_forward_length, attention.layer_norm_epsilon; the tensors

    token_embd, position_embd, output_norm, output (absent in files that tie)
    blk.N.attn_norm, blk.N.attn_qkv, blk.N.attn_output, blk.N.ffn_norm, blk.N.ffn_up, blk.N.ffn_down

llama.cpp's converter already transposes the Conv1D weights when it writes the file, so a
GGUF matrix is in nn.Linear's (out, in) layout and loads as it is (transformers, reading
such a file, transposes them back into Conv1D's). Older converters also wrote `output` as
a copy of token_embd: such a file gets its own output matrix, as llama.cpp runs it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

from llama.config import ConfigError
from llama.dtypes import SUPPORTED_DTYPES
from llama.gpt2 import GPT2Config

from .checkpoint import Checkpoint
from .errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError
from .gguf_file import GGUF_LAYER, TensorData
from .hf import INDEX, SINGLE, read_hf_config, tensor_files
from .hf_layout import rename_tensor
from .meta import load_pth

PYTORCH_BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

# ---------------------------------------------------------------------------------------
# Names, and the Conv1D transposition
# ---------------------------------------------------------------------------------------

_HF_LAYER = re.compile(r"^h\.(\d+)\.(.+)\.(weight|bias)$")
_HF_LAYER_NAMES = {
    "ln_1": "attention_norm",
    "attn.c_attn": "attention.wqkv",
    "attn.c_proj": "attention.wo",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "feed_forward.w1",
    "mlp.c_proj": "feed_forward.w2",
}
_HF_TOP = {"wte": "tok_embeddings", "wpe": "pos_embeddings", "ln_f": "norm", "lm_head": "output"}
# Buffers (the causal mask and its fill value) that transformers < 4.32 saved with the weights.
_HF_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")

# Our parameters that Hugging Face stores as Conv1D weights, (in, out).
CONV1D_WEIGHTS = ("attention.wqkv.weight", "attention.wo.weight", "feed_forward.w1.weight", "feed_forward.w2.weight")

_GGUF_LAYER_NAMES = {
    "attn_norm": "attention_norm",
    "attn_qkv": "attention.wqkv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_up": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
}
_GGUF_TOP = {"token_embd": "tok_embeddings", "position_embd": "pos_embeddings", "output_norm": "norm", "output": "output"}


def hf_gpt2_name(name: str) -> str | None:
    """Our name for a Hugging Face GPT-2 tensor; None for a buffer we do not load; the
    name itself when it has no counterpart (the strict check then reports it)."""
    bare = name.removeprefix("transformer.")
    if _HF_IGNORED.match(bare):
        return None
    # The two tables above, through the one renaming function every format uses.
    return rename_tensor(bare, _HF_LAYER, _HF_LAYER_NAMES, _HF_TOP) or name


def is_conv1d_weight(our_name: str) -> bool:
    return our_name.startswith("layers.") and our_name.split(".", 2)[2] in CONV1D_WEIGHTS


def conv1d_to_linear(our_name: str, tensor: torch.Tensor) -> torch.Tensor:
    """THE transposition: a Hugging Face GPT-2 Conv1D weight (in, out) -> nn.Linear's
    (out, in), in fresh contiguous memory. Every other tensor is returned as it is."""
    if is_conv1d_weight(our_name):
        return tensor.t().contiguous()
    return tensor


def linear_shape(our_name: str, file_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a tensor has in our model, from its shape in a Hugging Face file."""
    return tuple(reversed(file_shape)) if is_conv1d_weight(our_name) else tuple(file_shape)


def gguf_gpt2_name(name: str) -> str | None:
    """Our name for a GGUF gpt2 tensor (None: no counterpart)."""
    return rename_tensor(name, GGUF_LAYER, _GGUF_LAYER_NAMES, _GGUF_TOP)


# ---------------------------------------------------------------------------------------
# Hugging Face folders
# ---------------------------------------------------------------------------------------


def _model_type(folder: Path) -> Any:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def is_gpt2_hf_folder(folder: Path) -> bool:
    """A config.json of model_type gpt2 next to safetensors or a pytorch_model.bin."""
    has_weights = (
        (folder / SINGLE).is_file()
        or (folder / INDEX).is_file()
        or (folder / PYTORCH_BIN).is_file()
        or (folder / BIN_INDEX).is_file()
        or any(folder.glob("*.safetensors"))
    )
    return (folder / "config.json").is_file() and has_weights and _model_type(folder) == "gpt2"


class _PickledWeights:
    """pytorch_model.bin, memory-mapped by torch.load, behind SafetensorsFile's interface."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = load_pth(path)  # weights_only=True, mmap=True; clear errors otherwise
        self.shapes = {k: tuple(v.shape) for k, v in self.state.items()}
        self.dtypes = {k: v.dtype for k, v in self.state.items()}

    def view(self, name: str) -> torch.Tensor:
        return self.state[name]  # already a view of the mapped file

    read = view


def _weight_files(folder: Path) -> dict[str, Any]:
    """Hugging Face tensor name -> the file object (SafetensorsFile or _PickledWeights)
    that holds it. Safetensors are preferred when a folder has both, as transformers does."""
    has_safetensors = (folder / SINGLE).is_file() or (folder / INDEX).is_file() or any(folder.glob("*.safetensors"))
    if has_safetensors:
        return tensor_files(folder)
    if (folder / PYTORCH_BIN).is_file():
        file = _PickledWeights(folder / PYTORCH_BIN)
        return {name: file for name in file.shapes}
    if (folder / BIN_INDEX).is_file():
        raise CheckpointError(
            f"{folder} holds a sharded pytorch_model-*.bin checkpoint, which is not supported: "
            "save it as safetensors (model.save_pretrained(folder, safe_serialization=True))."
        )
    raise CheckpointNotFoundError(
        f"{folder} has a GPT-2 config.json but no weights: expected {SINGLE} (or shards with "
        f"{INDEX}) or {PYTORCH_BIN}."
    )


def read_gpt2_hf_config(folder: Path, **overrides: Any) -> GPT2Config:
    return read_hf_config(folder, GPT2Config, **overrides)


def open_hf_gpt2(folder: Path, **overrides: Any) -> Checkpoint:
    args = read_gpt2_hf_config(folder, **overrides)
    files = _weight_files(folder)

    ours: dict[str, str] = {}  # our name -> Hugging Face name
    for hf_name in files:
        name = hf_gpt2_name(hf_name)
        if name is not None:
            ours[name] = hf_name
    if "output.weight" not in ours and not args.tie_word_embeddings:
        # No lm_head: the output projection is the embedding matrix (transformers agrees).
        args = dataclasses.replace(args, tie_word_embeddings=True)

    shapes = {name: linear_shape(name, files[hf].shapes[hf]) for name, hf in ours.items()}
    elements: Counter[torch.dtype] = Counter()
    for name, hf in ours.items():
        elements[files[hf].dtypes[hf]] += int(torch.Size(shapes[name]).numel())
    native = elements.most_common(1)[0][0] if elements else torch.float32
    if native not in SUPPORTED_DTYPES:
        native = torch.float32

    def read(name: str, dtype: torch.dtype) -> torch.Tensor:
        hf = ours[name]
        file = files[hf]
        # A Conv1D weight turns (in, out) -> (out, in); anything else is the mapped bytes
        # themselves when the dtype fits.
        return conv1d_to_linear(name, file.view(hf)).to(dtype)

    return Checkpoint(
        format="hf",
        path=folder,
        args=args,  # type: ignore[arg-type]  # a GPT2Config answers to ModelArgs' names
        shapes=shapes,
        native_dtype=native,
        read=read,
        file_names=ours,
        shape_hint="(Hugging Face stores GPT-2's c_attn, c_proj and c_fc weights as (in, out); "
        "the shapes above are after turning them into (out, in).) ",
        family="gpt2",
    )


# ---------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------


def open_gguf_gpt2(path: Path, **overrides: Any) -> Checkpoint:
    from gguf import GGMLQuantizationType as Q

    data = TensorData(path)
    metadata = data.file.metadata
    tensors = data.infos  # GGUF name -> GGUFTensorInfo

    def meta(key: str, default: Any = None, required: bool = False) -> Any:
        value = metadata.get(f"gpt2.{key}", default)
        if value is None and required:
            raise CorruptCheckpointError(f"{path} lacks the GGUF metadata key gpt2.{key}")
        return value

    for needed in ("token_embd.weight", "position_embd.weight"):
        if needed not in tensors:
            raise CorruptCheckpointError(f"{path} is a gpt2 GGUF file without a {needed} tensor: damaged?")
    dim = int(meta("embedding_length", required=True))
    ffn = meta("feed_forward_length")
    fields: dict[str, Any] = dict(
        # The embedding matrices, not the metadata, say how many tokens and positions there are.
        vocab_size=tensors["token_embd.weight"].shape[0],
        n_positions=tensors["position_embd.weight"].shape[0],
        n_embd=dim,
        n_layer=int(meta("block_count", required=True)),
        n_head=int(meta("attention.head_count", required=True)),
        n_inner=None if ffn is None or int(ffn) == 4 * dim else int(ffn),
        layer_norm_epsilon=float(meta("attention.layer_norm_epsilon", 1e-5)),
        tie_word_embeddings="output.weight" not in tensors,
    )
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(GPT2Config)})
    if unknown:
        raise CheckpointError(f"{path}: cannot override {', '.join(unknown)} on a GPT-2 model")
    fields.update(overrides)
    try:
        args = GPT2Config(**fields)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None

    names = {gguf_gpt2_name(g) or g: g for g in tensors}  # our name -> GGUF name
    shapes = {n: tensors[g].shape for n, g in names.items()}
    matrix_types = {data.types[g] for g in names.values() if len(tensors[g].dims) > 1}
    native = {frozenset({Q.F16}): torch.float16, frozenset({Q.BF16}): torch.bfloat16}.get(
        frozenset(matrix_types), torch.float32
    )

    def read(name: str, dtype: torch.dtype) -> torch.Tensor:
        g = names[name]
        tensor = torch.from_numpy(data.numpy(g))  # the mapped bytes, or the dequantised copy
        if data.types[g] == Q.BF16:
            tensor = tensor.view(torch.bfloat16)  # raw uint16 bits, reinterpreted
        return tensor.to(dtype)  # already (out, in): llama.cpp transposed Conv1D when writing

    return Checkpoint(
        format="gguf",
        path=path,
        args=args,  # type: ignore[arg-type]
        shapes=shapes,
        native_dtype=native,
        read=read,
        file_names=names,
        family="gpt2",
    )


OPENERS: dict[str, Callable[..., Checkpoint]] = {"hf": open_hf_gpt2, "gguf": open_gguf_gpt2}


def open_gpt2(kind: str, where: Path, **overrides: Any) -> Checkpoint:
    """Open a GPT-2 checkpoint that weights.detect_format found as `kind` ('hf' or 'gguf')."""
    if kind not in OPENERS:
        raise CheckpointError(f"{where}: a GPT-2 checkpoint must be a Hugging Face folder or a GGUF file")
    return OPENERS[kind](where, **overrides)


__all__ = [
    "open_gpt2",
    "open_hf_gpt2",
    "open_gguf_gpt2",
    "is_gpt2_hf_folder",
    "hf_gpt2_name",
    "gguf_gpt2_name",
    "conv1d_to_linear",
    "CONV1D_WEIGHTS",
]
