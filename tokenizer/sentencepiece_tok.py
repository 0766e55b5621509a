"""SentencePiece tokenizers: Llama 2's tokenizer.model, and GGUF files whose
``tokenizer.ggml.model`` is "llama".

A SentencePiece model file is a protobuf (``ModelProto``): a list of pieces, each with a
score and a type, plus normaliser and trainer settings. Llama 2's model is a BPE model:
spaces become "▁", a "▁" is put in front of the text (the "dummy prefix", so that a word
at the start is tokenized like the same word after a space), pieces are merged by score,
and a character with no piece falls back to its UTF-8 bytes as pieces "<0x00>".."<0xFF>".

A GGUF file keeps only the pieces, scores and types (and whether to add the dummy
prefix). We rebuild a ModelProto from those with the settings Llama 2 uses and hand it to
the sentencepiece library, so encoding is done by the same code as for the original file.
"""

from __future__ import annotations

import re

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from .base import Tokenizer
from .errors import TokenizerError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class SentencePieceTokenizer(Tokenizer):
    def __init__(
        self,
        model_proto: bytes,
        *,
        source: str,
        kind: str = "sentencepiece",
        add_bos_token: bool = True,
        bos_id: int | None = None,
        eos_id: int | None = None,
        extra_stop_ids=(),
        chat_template: str | None = None,
    ):
        self.kind, self.source = kind, source
        try:
            proto = sp_pb2.ModelProto.FromString(model_proto)
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except Exception as e:  # protobuf DecodeError or sentencepiece's RuntimeError
            raise TokenizerError(f"{source}: not a usable SentencePiece model ({e})") from None
        self.vocab_size = self._sp.get_piece_size()
        norm = proto.normalizer_spec
        # SentencePiece drops the space in front of the first piece when decoding if it
        # added one when encoding (dummy prefix) or collapses spaces anyway.
        self._strips_first_space = norm.add_dummy_prefix or norm.remove_extra_whitespaces
        unk_surface = proto.trainer_spec.unk_surface if proto.trainer_spec.HasField("unk_surface") else " \u2047 "

        self._types = [p.type for p in proto.pieces]
        self._id_bytes: list[bytes] = []
        for p in proto.pieces:
            if p.type == BYTE and (m := _BYTE_PIECE.fullmatch(p.piece)):
                self._id_bytes.append(bytes([int(m.group(1), 16)]))
            elif p.type == CONTROL or p.type == UNUSED:
                self._id_bytes.append(b"")  # invisible, as SentencePiece decodes them
            elif p.type == UNKNOWN:
                self._id_bytes.append(unk_surface.encode("utf-8"))
            else:
                self._id_bytes.append(p.piece.replace("\u2581", " ").encode("utf-8"))
        self._pieces = [p.piece for p in proto.pieces]

        # <s>, </s> and <unk> as text are special tokens (matched only with
        # allow_special); user-defined pieces are matched by SentencePiece itself, always.
        self._setup_special({p.piece: i for i, p in enumerate(proto.pieces) if p.type in (CONTROL, UNKNOWN)})

        def or_none(i):
            return i if i is not None and 0 <= i < self.vocab_size else None

        self.bos_id = or_none(bos_id if bos_id is not None else self._sp.bos_id())
        self.eos_id = or_none(eos_id if eos_id is not None else self._sp.eos_id())
        self.add_bos_token = add_bos_token
        self.stop_ids = {i for i in [self.eos_id, *extra_stop_ids] if i is not None}
        self.chat_template = chat_template
        # Llama 2's [INST] format is the built-in fallback for SentencePiece models; a GGUF
        # chat template, when present, is used instead.
        self.chat_format = "llama2"
        self._model_proto = model_proto

    def _encode_plain(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def _token_bytes(self, i: int) -> bytes:
        return self._id_bytes[i]

    def _is_special(self, i: int) -> bool:
        return self._types[i] in (CONTROL, UNKNOWN, UNUSED)

    def special_name(self, i: int) -> str:
        return self._pieces[i]

    def _strip_leading(self, i: int, raw: bytes) -> bytes:
        if self._strips_first_space and self._types[i] != BYTE and raw.startswith(b" "):
            return raw[1:]
        return raw

    def id_to_piece(self, i: int) -> str:
        (i,) = self._check_ids([i])
        if self._types[i] == BYTE:
            return self._pieces[i]  # "<0x0A>": a lone byte is clearer shown as a byte
        return super().id_to_piece(i)

    def serialized_model_proto(self) -> bytes:
        """The SentencePiece model as bytes (for a GGUF, the model rebuilt from it)."""
        return self._model_proto


def looks_like_sentencepiece(data: bytes) -> bool:
    try:
        proto = sp_pb2.ModelProto.FromString(data)
    except Exception:
        return False
    return len(proto.pieces) > 0


def from_model_file(path) -> SentencePieceTokenizer:
    """Llama 2's tokenizer.model (or any SentencePiece model file)."""
    with open(path, "rb") as f:
        data = f.read()
    return SentencePieceTokenizer(data, source=str(path))


def model_proto_from_gguf(meta: dict, source: str) -> bytes:
    """Rebuild a SentencePiece ModelProto from a GGUF's tokenizer.ggml.* metadata."""
    tokens = meta["tokenizer.ggml.tokens"]
    n = len(tokens)
    scores = meta.get("tokenizer.ggml.scores")
    types = meta.get("tokenizer.ggml.token_type")
    if scores is None or len(scores) != n:
        raise TokenizerError(f"{source}: a SentencePiece GGUF needs tokenizer.ggml.scores for every token")
    types = [int(t) for t in types] if types is not None else [NORMAL] * n

    proto = sp_pb2.ModelProto()
    for token, score, ty in zip(tokens, scores, types):
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = float(score)
        # GGUF token types use SentencePiece's numbering; anything else is a normal piece.
        piece.type = ty if ty in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE) else NORMAL

    trainer = proto.trainer_spec
    # The model type decides the encoding algorithm: llama.cpp encodes "llama" vocabularies
    # by merging by score, which is SentencePiece's BPE.
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = n
    trainer.byte_fallback = BYTE in types
    for name, key, default in (("unk", "unknown", 0), ("bos", "bos", 1), ("eos", "eos", 2), ("pad", "padding", -1)):
        i = meta.get(f"tokenizer.ggml.{key}_token_id", default)
        i = int(i) if i is not None and 0 <= int(i) < n else -1
        setattr(trainer, f"{name}_id", i)
        if i >= 0:
            setattr(trainer, f"{name}_piece", tokens[i])
    if UNKNOWN not in types:
        raise TokenizerError(f"{source}: this SentencePiece GGUF has no token of type UNKNOWN (2)")

    norm = proto.normalizer_spec
    # Llama 2's normaliser: no Unicode normalisation, spaces kept as they are (no
    # collapsing), spaces written as "▁", and the dummy prefix unless the file says not.
    norm.name = "identity"
    norm.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto.SerializeToString()


def from_gguf(meta: dict, source: str) -> SentencePieceTokenizer:
    proto = model_proto_from_gguf(meta, source)
    extra_stops = [meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("eot", "eom")]
    return SentencePieceTokenizer(
        proto,
        source=source,
        kind="gguf-llama",
        # llama.cpp adds BOS to SentencePiece vocabularies unless the file says not to.
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_id=meta.get("tokenizer.ggml.eos_token_id"),
        extra_stop_ids=[i for i in extra_stops if i is not None],
        chat_template=meta.get("tokenizer.chat_template"),
    )
