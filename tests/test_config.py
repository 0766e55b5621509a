"""ModelArgs from Meta's published params.json and transformers' config.json."""

import json

import pytest
import torch

from llama.config import ConfigError, ModelArgs, meta_ffn_hidden_dim
from llama.model import Transformer

# The params.json files Meta publishes, values written out here (no download).
LLAMA2_7B_PARAMS = {
    "dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32,
    "norm_eps": 1e-05, "vocab_size": -1,
}
LLAMA32_1B_PARAMS = {
    "dim": 2048, "ffn_dim_multiplier": 1.5, "multiple_of": 256, "n_heads": 32,
    "n_kv_heads": 8, "n_layers": 16, "norm_eps": 1e-05, "rope_theta": 500000.0,
    "use_scaled_rope": True, "vocab_size": 128256,
}
# Hugging Face's config.json for Llama-3.2-1B (the fields that matter).
LLAMA32_1B_HF = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": True,
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16",
}
QWEN2_1_5B_HF = {  # DeepSeek-R1-Distill-Qwen-1.5B
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
    "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-06,
    "rope_theta": 10000, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "hidden_act": "silu", "use_sliding_window": False, "sliding_window": 4096,
    "max_window_layers": 21,
}


def _meta_model(args: ModelArgs) -> Transformer:
    with torch.device("meta"):  # shapes only, no memory
        return Transformer(args)


def test_params_json_loads_with_meta_names(tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(LLAMA32_1B_PARAMS))
    args = ModelArgs(**json.load(open(path)))
    assert args.n_kv_heads == 8 and args.use_scaled_rope


def test_llama2_7b_shapes_and_count():
    args = ModelArgs(**LLAMA2_7B_PARAMS)
    assert args.vocab_size == -1 and args.n_kv_heads == 32
    assert args.hidden_dim == 11008
    with pytest.raises(ConfigError, match="vocab_size is -1"):
        Transformer(args)
    args.vocab_size = 32000  # what the tokenizer / checkpoint says
    model = _meta_model(args)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["tok_embeddings.weight"] == (32000, 4096)
    assert shapes["layers.0.attention.wq.weight"] == (4096, 4096)
    assert shapes["layers.0.attention.wk.weight"] == (4096, 4096)
    assert shapes["layers.31.feed_forward.w1.weight"] == (11008, 4096)
    assert shapes["layers.31.feed_forward.w2.weight"] == (4096, 11008)
    assert shapes["output.weight"] == (32000, 4096)
    assert len(shapes) == 2 + 32 * 9 + 1
    assert model.num_params() == 6_738_415_616


def test_llama32_1b_shapes_and_count():
    args = ModelArgs(**LLAMA32_1B_PARAMS, tie_embeddings=True)
    assert args.hidden_dim == 8192
    assert args.rope_scaling_factor == 32.0  # the documented rule for dim <= 3072
    model = _meta_model(args)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["layers.0.attention.wq.weight"] == (2048, 2048)
    assert shapes["layers.0.attention.wk.weight"] == (512, 2048)
    assert shapes["layers.0.attention.wv.weight"] == (512, 2048)
    assert shapes["layers.15.feed_forward.w3.weight"] == (8192, 2048)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.num_params() == 1_235_814_400


def test_hf_config_agrees_with_params_json():
    from_hf = ModelArgs.from_hf_config(LLAMA32_1B_HF)
    from_meta = ModelArgs(**LLAMA32_1B_PARAMS, tie_embeddings=True, max_seq_len=131072)
    # HF spells out the FFN size that Meta derives from ffn_dim_multiplier
    assert from_hf.hidden_dim == from_meta.hidden_dim == 8192
    skip = {"ffn_hidden_dim", "ffn_dim_multiplier", "multiple_of"}
    drop = lambda a: {k: v for k, v in a.to_dict().items() if k not in skip}  # noqa: E731
    assert drop(from_hf) == drop(from_meta)
    assert from_hf.rope_scaling_factor == 32.0


def test_qwen2_config():
    args = ModelArgs.from_hf_config(QWEN2_1_5B_HF)
    assert args.attention_bias and not args.tie_embeddings
    assert (args.n_heads, args.n_kv_heads, args.head_dim, args.hidden_dim) == (12, 2, 128, 8960)
    model = _meta_model(args)
    assert model.layers[0].attention.wq.bias.shape == (1536,)
    assert model.layers[0].attention.wk.bias.shape == (256,)
    assert model.layers[0].attention.wo.bias is None
    assert model.num_params() == 1_777_088_000  # the published 1.78B


def test_llama31_rule_and_override():
    params = dict(LLAMA32_1B_PARAMS, dim=4096, n_layers=32, ffn_dim_multiplier=1.3, multiple_of=1024)
    assert ModelArgs(**params).rope_scaling_factor == 8.0  # Llama 3.1 8B
    assert ModelArgs(**params).hidden_dim == 14336
    assert ModelArgs(**params, rope_scaling_factor=16.0).rope_scaling_factor == 16.0


def test_ffn_formula():
    assert meta_ffn_hidden_dim(4096, 256, None) == 11008
    assert meta_ffn_hidden_dim(2048, 256, 1.5) == 8192
    assert meta_ffn_hidden_dim(8192, 4096, 1.3) == 28672  # Llama 3 70B


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=100, n_heads=3), "divisible by n_heads"),
        (dict(dim=96, n_heads=6, n_kv_heads=4), "divisible by n_kv_heads"),
        (dict(dim=96, n_heads=32), "must be even"),
        (dict(dim=0), "positive integer"),
        (dict(n_layers=-1), "positive integer"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(dim=64, n_heads=4, n_layerz=2), "unknown ModelArgs field.*n_layerz"),
        (dict(use_scaled_rope=True, rope_scaling_factor=0.5), "rope_scaling_factor"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelArgs(**kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model_type="gpt2"), "model_type 'gpt2' is not supported"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope type 'yarn'"),
        (dict(attention_bias=True), "o_proj"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(head_dim=128), "head_dim"),
    ],
)
def test_hf_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelArgs.from_hf_config({**LLAMA32_1B_HF, **change})


def test_hf_config_roundtrip():
    args = ModelArgs.from_hf_config(LLAMA32_1B_HF)
    assert ModelArgs.from_hf_config(args.to_hf_config()) == args
    q = ModelArgs.from_hf_config(QWEN2_1_5B_HF)
    assert ModelArgs.from_hf_config(q.to_hf_config()) == q
