"""Model hyper-parameters.

`ModelArgs` uses the field names of Meta's params.json, so that

    ModelArgs(**json.load(open("params.json")))

works with the files Meta publishes. It also spells out what Meta leaves implicit
(the FFN hidden size, the Llama 3 RoPE-scaling constants) and what Hugging Face configs
add (tied embeddings, Qwen2's q/k/v bias). `ModelArgs.from_hf_config(config_dict)` reads a
transformers config.json of model_type llama, qwen2 or mistral.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot describe a model we can build."""


# Llama 3's RoPE frequency scaling: the constants every released Llama 3.1+ model uses, and
# the defaults wherever a file gives only the factor (Meta's params.json, llama.cpp's
# rope_freqs tensor). Keys as rope_inv_freq takes them; ModelArgs' fields add "rope_".
LLAMA3_ROPE_DEFAULTS: dict[str, float] = {
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_seq_len": 8192,
}


@dataclass(init=False)
class ModelArgs:
    # --- Meta's params.json fields -------------------------------------------------
    dim: int = 4096  # model (residual stream) width D
    n_layers: int = 32
    n_heads: int = 32  # query heads H
    n_kv_heads: int | None = None  # key/value heads KV (grouped-query attention); None = n_heads
    vocab_size: int = -1  # Llama 2's params.json says -1: the tokenizer/checkpoint decides
    multiple_of: int = 256  # FFN hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    use_scaled_rope: bool = False  # Llama 3.1+ frequency scaling for long context

    # --- what Meta leaves implicit and Hugging Face spells out ---------------------
    # FFN hidden size; None = Meta's formula from dim, multiple_of and ffn_dim_multiplier.
    ffn_hidden_dim: int | None = None
    # Llama 3 RoPE scaling. Meta's params.json only says use_scaled_rope; the factor differs
    # between releases (8 for Llama 3.1, 32 for Llama 3.2 1B/3B). None = the rule in
    # `default_rope_scaling_factor` below; a loader that knows better passes it explicitly.
    rope_scaling_factor: float | None = None
    rope_low_freq_factor: float = LLAMA3_ROPE_DEFAULTS["low_freq_factor"]
    rope_high_freq_factor: float = LLAMA3_ROPE_DEFAULTS["high_freq_factor"]
    rope_original_max_seq_len: int = int(LLAMA3_ROPE_DEFAULTS["original_max_seq_len"])
    max_seq_len: int = 4096  # longest sequence the KV cache and RoPE table serve
    tie_embeddings: bool = False  # output projection shares the token-embedding matrix
    attention_bias: bool = False  # Qwen2-style bias on wq, wk, wv (never on wo)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.use_scaled_rope and self.rope_scaling_factor is None:
            self.rope_scaling_factor = default_rope_scaling_factor(self.dim)
        self.validate()

    # Meta's params.json carries no field we would reject silently: an unknown key is an
    # error that names it (a typo must not quietly build a different model).
    def __init__(self, **kwargs: Any) -> None:  # noqa: D107 - documented on the class
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(
                f"unknown ModelArgs field(s): {', '.join(unknown)}. "
                f"Known fields: {', '.join(sorted(known))}."
            )
        for f in dataclasses.fields(self):
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:  # pragma: no cover - every field has a default
                value = f.default_factory()  # type: ignore[misc]
            setattr(self, f.name, value)
        self.__post_init__()

    # ------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU hidden size: explicit, or Meta's formula."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        return meta_ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "max_seq_len"):
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive integer, got {value!r}",
            )
        need(
            isinstance(self.vocab_size, int) and (self.vocab_size > 0 or self.vocab_size == -1),
            f"vocab_size must be a positive integer (or -1 = take it from the checkpoint), "
            f"got {self.vocab_size!r}",
        )
        need(
            self.dim % self.n_heads == 0,
            f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})",
        )
        need(
            self.n_heads % self.n_kv_heads == 0,
            f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})",
        )
        need(
            self.head_dim % 2 == 0,
            f"head_dim = dim / n_heads = {self.head_dim} must be even for rotary embeddings",
        )
        need(self.norm_eps > 0, f"norm_eps must be positive, got {self.norm_eps!r}")
        need(self.rope_theta > 0, f"rope_theta must be positive, got {self.rope_theta!r}")
        if self.ffn_hidden_dim is not None:
            need(
                isinstance(self.ffn_hidden_dim, int) and self.ffn_hidden_dim > 0,
                f"ffn_hidden_dim must be a positive integer, got {self.ffn_hidden_dim!r}",
            )
        if self.ffn_dim_multiplier is not None:
            need(
                self.ffn_dim_multiplier > 0,
                f"ffn_dim_multiplier must be positive, got {self.ffn_dim_multiplier!r}",
            )
        if self.use_scaled_rope:
            need(
                self.rope_scaling_factor is not None and self.rope_scaling_factor >= 1,
                f"rope_scaling_factor must be >= 1, got {self.rope_scaling_factor!r}",
            )
            need(
                self.rope_high_freq_factor > self.rope_low_freq_factor > 0,
                "rope_high_freq_factor must exceed rope_low_freq_factor > 0, got "
                f"{self.rope_high_freq_factor!r} and {self.rope_low_freq_factor!r}",
            )
            need(
                self.rope_original_max_seq_len > 0,
                "rope_original_max_seq_len must be positive",
            )

    def rope_scaling(self) -> dict[str, float] | None:
        """Llama 3 RoPE scaling as rope_inv_freq takes it (factor, low_freq_factor,
        high_freq_factor, original_max_seq_len), or None without scaling."""
        if not self.use_scaled_rope:
            return None
        return {
            "factor": self.rope_scaling_factor,
            "low_freq_factor": self.rope_low_freq_factor,
            "high_freq_factor": self.rope_high_freq_factor,
            "original_max_seq_len": self.rope_original_max_seq_len,
        }

    def require_vocab_size(self) -> None:
        if self.vocab_size <= 0:
            raise ConfigError(
                "vocab_size is -1 (Meta's Llama 2 params.json leaves it to the tokenizer): "
                "set it, e.g. ModelArgs(..., vocab_size=32000), or load the checkpoint with "
                "weights.load_model(), which reads it from the embedding tensor."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], **overrides: Any) -> "ModelArgs":
        """Build from a transformers config.json dict (llama, qwen2 or mistral)."""
        model_type = config.get("model_type")
        if model_type == "gpt2":
            raise ConfigError(
                "model_type 'gpt2' is not supported by ModelArgs (a Llama config): GPT-2 has "
                "its own, llama.gpt2.GPT2Config.from_hf_config (weights.load_model picks it)."
            )
        if model_type not in ("llama", "qwen2", "mistral"):
            raise ConfigError(
                f"model_type {model_type!r} is not supported: expected 'llama', 'qwen2' or "
                "'mistral' (full attention)."
            )

        def get(key: str, default: Any = None, required: bool = False) -> Any:
            if key not in config or config[key] is None:
                if required:
                    raise ConfigError(f"config.json (model_type {model_type}) lacks {key!r}")
                return default
            return config[key]

        dim = get("hidden_size", required=True)
        n_heads = get("num_attention_heads", required=True)
        head_dim = get("head_dim")
        if head_dim is not None and head_dim * n_heads != dim:
            raise ConfigError(
                f"head_dim {head_dim} x num_attention_heads {n_heads} != hidden_size {dim}: "
                "models whose head size is decoupled from the width are not supported."
            )
        act = get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"hidden_act {act!r} is not supported (SwiGLU needs 'silu').")
        if get("mlp_bias", False):
            raise ConfigError("mlp_bias=true is not supported (Llama and Qwen2 have no MLP bias).")

        if model_type == "qwen2":
            attention_bias = True  # Qwen2 always has q/k/v bias and no o bias
            if get("use_sliding_window", False):
                raise ConfigError("Qwen2 with use_sliding_window=true is not supported.")
        else:
            if get("attention_bias", False):
                raise ConfigError(
                    "attention_bias=true in a llama config adds a bias to o_proj too, "
                    "which this model does not implement (only Qwen2-style q/k/v bias)."
                )
            attention_bias = False
        if model_type == "mistral":
            window = get("sliding_window")
            max_pos = get("max_position_embeddings", 4096)
            if window is not None and window < max_pos:
                raise ConfigError(
                    f"Mistral sliding_window={window} < max_position_embeddings={max_pos}: "
                    "sliding-window attention is not supported (full attention only)."
                )

        rope = hf_rope_parameters(config)
        rope_theta = rope.get("rope_theta", get("rope_theta", 10000.0))
        rope_type = hf_rope_type(rope)
        rope_kwargs: dict[str, Any] = {}
        if rope_type == "llama3":
            rope_kwargs = llama3_rope_fields(rope)
        elif rope_type != "default":
            raise ConfigError(
                f"rope type {rope_type!r} is not supported (only default and 'llama3')."
            )

        args: dict[str, Any] = dict(
            dim=dim,
            n_layers=get("num_hidden_layers", required=True),
            n_heads=n_heads,
            n_kv_heads=get("num_key_value_heads", n_heads),
            vocab_size=get("vocab_size", required=True),
            ffn_hidden_dim=get("intermediate_size", required=True),
            norm_eps=float(get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            max_seq_len=int(get("max_position_embeddings", 4096)),
            tie_embeddings=bool(get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            **rope_kwargs,
        )
        args.update(overrides)
        return cls(**args)

    def to_hf_config(self, model_type: str | None = None) -> dict[str, Any]:
        """The transformers config.json for these hyper-parameters."""
        self.require_vocab_size()
        if model_type is None:
            model_type = "qwen2" if self.attention_bias else "llama"
        if self.attention_bias and model_type != "qwen2":
            raise ConfigError("q/k/v attention bias is only expressible as model_type 'qwen2'")
        cfg: dict[str, Any] = {
            "architectures": ["Qwen2ForCausalLM" if model_type == "qwen2" else "LlamaForCausalLM"],
            "model_type": model_type,
            "hidden_size": self.dim,
            "intermediate_size": self.hidden_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_seq_len,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        }
        if model_type == "llama":
            cfg["attention_bias"] = False
            cfg["mlp_bias"] = False
        if self.use_scaled_rope:
            cfg["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": self.rope_scaling_factor,
                "low_freq_factor": self.rope_low_freq_factor,
                "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_original_max_seq_len,
            }
        return cfg


def hf_rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """The RoPE settings of a transformers config.json, wherever its version put them:
    transformers >= 5 writes rope_parameters (with rope_theta inside); older versions
    write rope_theta and rope_scaling at the top level."""
    rope = dict(config.get("rope_parameters") or {})
    rope.update(config.get("rope_scaling") or {})
    return rope


def hf_rope_type(rope: dict[str, Any]) -> str:
    """"default", "llama3", ...: rope_type, or "type" as older configs spell it."""
    return rope.get("rope_type", rope.get("type", "default"))


def llama3_rope_fields(rope: dict[str, Any], require_factor: bool = True) -> dict[str, Any]:
    """ModelArgs fields for a config's Llama 3 RoPE scaling (rope_type "llama3"): factor,
    low/high_freq_factor and original_max_position_embeddings, with LLAMA3_ROPE_DEFAULTS
    for the ones it leaves out. Without a factor: a ConfigError, or (require_factor=False)
    no factor field, so the caller's rule decides it."""
    if "factor" not in rope and require_factor:
        raise ConfigError("rope_scaling of type 'llama3' needs a 'factor'")
    fields: dict[str, Any] = {"use_scaled_rope": True}
    if "factor" in rope:
        fields["rope_scaling_factor"] = float(rope["factor"])
    fields["rope_low_freq_factor"] = float(
        rope.get("low_freq_factor", LLAMA3_ROPE_DEFAULTS["low_freq_factor"]))
    fields["rope_high_freq_factor"] = float(
        rope.get("high_freq_factor", LLAMA3_ROPE_DEFAULTS["high_freq_factor"]))
    fields["rope_original_max_seq_len"] = int(
        rope.get("original_max_position_embeddings", LLAMA3_ROPE_DEFAULTS["original_max_seq_len"]))
    return fields


def meta_ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """Meta's SwiGLU hidden size: 2/3 of 4*dim (so the three matrices cost what two 4*dim
    matrices would), optionally scaled, rounded up to a multiple of `multiple_of`.

    Llama-2 7B: dim 4096 -> 11008.  Llama-3.2 1B: dim 2048, multiplier 1.5 -> 8192.
    """
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


def default_rope_scaling_factor(dim: int) -> float:
    """The Llama 3 RoPE scale factor when a params.json says only use_scaled_rope=true.

    Rule (documented in docs/CHECKPOINTS.md): the released models with dim <= 3072 are
    Llama-3.2 1B (2048) and 3B (3072), whose config.json gives factor 32; every larger one
    (Llama-3.1 8B/70B/405B, Llama-3.3 70B) uses 8. Pass rope_scaling_factor to override.
    """
    return 32.0 if dim <= 3072 else 8.0


__all__ = [
    "ModelArgs",
    "ConfigError",
    "LLAMA3_ROPE_DEFAULTS",
    "hf_rope_parameters",
    "hf_rope_type",
    "llama3_rope_fields",
    "meta_ffn_hidden_dim",
    "default_rope_scaling_factor",
]
