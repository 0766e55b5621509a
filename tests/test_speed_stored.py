"""Weights as stored: integer linear layers, within their documented tolerance of the
dequantized float32 model, with hooks still working.

The tolerance. A weights-as-stored layer rounds its input and output to bfloat16 (the
integer kernels' activation dtype) and uses scales rounded to bfloat16, so its logits are
not the dequantized float32 model's. Measured on SmolLM2-135M (Q4_1 GGUF, 30 layers) over
tests/test_weights_smollm2.py's prompts: max |logit difference| 0.85 with logits up to 36
(2-3% of the largest logit), the same top token at every position, KL divergence of the
next-token distributions at most 0.006 nats, and " Paris" p = 0.7745 against 0.7725. The
tests hold it to about twice that: STORED_MAX_DIFF, STORED_MAX_KL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checkpoint_writers import quantize_q4_k, write_gguf
from llama.hooks import capture, gradients, intervene
from llama.speed import Int4Linear, Int8Linear, StoredLinear, optimize, stored_layers
from llama.speed import stored
from real_models import needs_smollm2
from tiny_models import ours_from_hf, tiny_hf_model

STORED_MAX_DIFF = 1.5  # max |logit difference| from the dequantized float32 model (SmolLM2)
STORED_MAX_KL = 0.02  # nats, next-token distributions, every position
TINY_REL = 0.05  # tiny random models: max |logit difference| / max |logit| (measured <= 0.025)


def _tokens(vocab, n, seed=0):
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def _kl(p_logits, q_logits):
    """KL(q || p) per position, from logits (q the reference)."""
    return F.kl_div(p_logits.log_softmax(-1), q_logits.log_softmax(-1), log_target=True, reduction="none").sum(-1)


def _close(got, ref, rel=TINY_REL):
    diff = (got - ref).abs().max().item()
    assert diff <= rel * ref.abs().max().item(), f"max |diff| {diff:.3g} against max |logit| {ref.abs().max():.3g}"
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


# ---------------------------------------------------------------------------------------
# GGUF's 4-bit blocks, against the gguf package's own dequantize
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q4_K"])
def test_four_bit_blocks_equal_gguf_dequantize(fmt):
    import gguf

    from weights.gguf_blocks import dequantize_groups, four_bit_groups

    data = np.random.default_rng(0).standard_normal((48, 512)).astype(np.float32) * 0.1
    qtype = gguf.GGMLQuantizationType[fmt]
    raw = quantize_q4_k(data) if fmt == "Q4_K" else gguf.quants.quantize(data, qtype)
    expected = torch.from_numpy(gguf.quants.dequantize(raw, qtype))
    q, scale, zero = four_bit_groups(raw.reshape(-1), fmt, (48, 512))
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and scale.shape == zero.shape == (48, 16)
    assert (dequantize_groups(q, scale, zero) - expected).abs().max() <= 1e-6
    assert (expected - torch.from_numpy(data)).abs().max() < 0.05  # it is the data, 4-bit


# ---------------------------------------------------------------------------------------
# One layer
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_layer_computes_with_its_own_weight(kind):
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 128) * 0.05, torch.randn(96)
    layer = stored.stored_from_float(weight, bias, kind)
    assert type(layer) is {"int8": Int8Linear, "int4": Int4Linear}[kind]
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (96, 128)
    # Its weight is the float one, quantized: int8 to 1/254 of a row's largest value, int4
    # to 1/30 of a group's range (plus bfloat16 scales).
    step = weight.abs().amax(1, keepdim=True) / 254 if kind == "int8" else weight.abs().max() * 2 / 30
    assert ((layer.weight - weight).abs() <= step * 1.05 + 1e-6).all()
    with torch.no_grad():
        for x in (torch.randn(1, 1, 128), torch.randn(2, 7, 128)):
            got = layer(x)
            # What the kernel should compute: bfloat16 input times the dequantized weight.
            expected = F.linear(x.bfloat16().float(), layer.weight, bias)
            assert got.shape == expected.shape and got.dtype == x.dtype
            assert (got - expected).abs().max() <= 2**-7 * expected.abs().max()


def test_four_bit_values_come_back():
    """weight needs the 4-bit values back from torch's CPU-specific packing: learned from
    torch's packer, checked through the kernel, with a slow exact fallback."""
    for rows, cols in [(96, 64), (256, 512), (48, 256)]:  # 96: a tail block on AVX-512
        q = torch.randint(0, 16, (rows, cols), dtype=torch.uint8, generator=torch.Generator().manual_seed(rows))
        ones = torch.ones(rows, cols // 32)
        layer = Int4Linear(q, ones, 8 * ones)  # weight = q
        assert torch.equal(layer.values(), q)
        assert torch.equal(layer.weight, q.float())


def test_four_bit_values_without_a_known_layout(monkeypatch):
    q = torch.randint(0, 16, (64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    layer = Int4Linear(q, torch.ones(64, 3), 8 * torch.ones(64, 3))
    monkeypatch.setattr(stored, "unpack_int4", lambda packed, cols: None)
    assert torch.equal(layer.values(), q)  # read through the kernel instead


def test_shapes_the_kernels_cannot_take_stay_float():
    assert stored.stored_from_float(torch.randn(32, 172), None, "int8") is None  # in % 16
    assert type(stored.stored_from_float(torch.randn(40, 64), None, "int4")) is Int8Linear  # out % 16
    with pytest.raises(ValueError, match="in_features % 16"):
        Int8Linear(torch.zeros(4, 20, dtype=torch.int8), torch.ones(4))
    with pytest.raises(ValueError, match="out % 16"):
        Int4Linear(torch.zeros(8, 64, dtype=torch.uint8), torch.ones(8, 2), torch.ones(8, 2))


# ---------------------------------------------------------------------------------------
# Whole models: optimize(quantize=...) and weights.stored.load_stored
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_optimize_quantize_stays_close_to_the_float_model(kind):
    hf = tiny_hf_model("llama32", hidden_size=128, intermediate_size=256)  # tied embeddings
    model = ours_from_hf(hf)
    tokens = _tokens(model.args.vocab_size, 24)
    with torch.no_grad():
        ref = model(tokens)
    optimize(model, quantize=kind)
    layers = stored_layers(model)
    assert len(layers) == 2 * 7 + 1 and all(layer.kind == kind for layer in layers)
    assert isinstance(model.tok_embeddings.weight, nn.Parameter)  # the embedding stays float
    with torch.no_grad():
        full = model(tokens)
        model.reset_cache()
        steps = torch.cat([model(tokens[:, :8])] + [model(tokens[:, i : i + 1], start_pos=i) for i in range(8, 24)], 1)
    _close(full, ref)
    _close(steps, ref)
    assert (steps - full).abs().max() <= 0.02 * full.abs().max()


@pytest.mark.parametrize(
    "kind, qtype, overrides",
    [
        ("llama2", "Q4_0", {}),  # FFN 172 wide: w2 cannot be blocked, stays float16 -> float
        ("qwen2", "Q4_1", {}),  # rotate-half q/k rows, q/k/v biases
        ("llama32", "Q4_K", dict(hidden_size=256, intermediate_size=512, num_attention_heads=4)),
    ],
)
def test_load_stored_gguf_equals_the_dequantized_model(tmp_path, kind, qtype, overrides):
    from weights import load_model
    from weights.stored import load_stored

    hf = tiny_hf_model(kind, **overrides)
    path = write_gguf(hf, tmp_path / f"tiny-{qtype}.gguf", qtype)
    dequantized = load_model(path, dtype="float32")
    model = load_stored(path)
    four_bit = [m for m in model.modules() if isinstance(m, Int4Linear)]
    assert len(four_bit) >= 2 * 4  # at least the attention matrices of both layers
    for name, module in model.named_modules():
        if isinstance(module, StoredLinear):  # the file's values, scales rounded to bfloat16
            w = dequantized.get_submodule(name).weight
            assert (module.weight - w).abs().max() <= 2**-7 * w.abs().max() + 1e-6, name
    if kind == "llama2":  # w2 (172 wide) was float16 in the file: a float layer here
        assert type(model.layers[0].feed_forward.w2) is nn.Linear
    tokens = _tokens(model.args.vocab_size, 20, seed=5)
    with torch.no_grad():
        ref = dequantized(tokens)
        got = model(tokens)
    _close(got, ref, rel=0.02)  # bfloat16 rounding only: the weights are the file's


def test_load_stored_a_float_checkpoint_is_int8(tmp_path):
    from weights.stored import load_stored

    hf = tiny_hf_model("llama32")
    hf.save_pretrained(tmp_path / "hf")
    model = load_stored(tmp_path / "hf")
    assert all(isinstance(m, Int8Linear) for m in (model.layers[0].attention.wq, model.output))
    assert model.tok_embeddings.weight.dtype == torch.float32
    tokens = _tokens(model.args.vocab_size, 16)
    with torch.no_grad():
        _close(model(tokens), hf(tokens).logits)


def test_load_stored_bad_arguments(tmp_path):
    from weights import CheckpointError
    from weights.stored import load_stored

    path = write_gguf(tiny_hf_model("llama2"), tmp_path / "t.gguf", "Q8_0")
    with pytest.raises(CheckpointError, match="requantize must be"):
        load_stored(path, requantize="int3")
    with pytest.raises(CheckpointError, match="device must be 'cpu'"):
        load_stored(path, device="cuda")


# ---------------------------------------------------------------------------------------
# Hooks on a weights-as-stored model
# ---------------------------------------------------------------------------------------


def test_hooks_work_on_a_stored_model():
    hf = tiny_hf_model("llama32", hidden_size=128, intermediate_size=256)
    model = optimize(ours_from_hf(hf), quantize="int4")
    tokens = _tokens(model.args.vocab_size, 10, seed=4)
    names = ["layers.1.resid_post", "layers.0.attention.probs", "layers.0.feed_forward.act"]
    with torch.no_grad(), capture(model, names) as cache:
        logits = model(tokens)
    assert set(cache) == set(names) and all(cache[n].dtype == torch.float32 for n in names)
    assert torch.allclose(cache["layers.0.attention.probs"].sum(-1), torch.ones(1), atol=1e-5)
    with torch.no_grad(), intervene(model, {"layers.0.attention.out": lambda v: v * 0}):
        model.reset_cache()
        ablated = model(tokens)
    assert (ablated - logits).abs().max() > 0.01

    # Gradients run through the dequantized weights (F.linear), so saliency works too.
    grads = gradients(model, tokens, lambda out: out[0, -1].max(), ["layers.0.resid_post"])
    g = grads["layers.0.resid_post"]
    assert g.shape == (1, 10, 128) and torch.isfinite(g).all() and g.abs().max() > 0


# ---------------------------------------------------------------------------------------
# The default model
# ---------------------------------------------------------------------------------------


@needs_smollm2
def test_default_model_as_stored_is_within_its_tolerance():
    from real_models import SMOLLM2_GGUF
    from test_weights_smollm2 import PROMPTS
    from tokenizer import load_tokenizer
    from weights import load_model
    from weights.stored import load_stored

    dequantized = load_model(SMOLLM2_GGUF, dtype="float32")
    model = load_stored(SMOLLM2_GGUF)
    assert sum(isinstance(m, Int4Linear) for m in model.modules()) == 30 * 7  # Q4_1, bit for bit
    assert type(model.output) is Int8Linear  # the tied Q8_0 embedding, as int8 rows
    tok = load_tokenizer(SMOLLM2_GGUF)
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt, bos=False, allow_special=True)])
        with torch.no_grad():
            ref, got = dequantized(ids), model(ids)
        diff = (got - ref).abs().max().item()
        assert diff <= STORED_MAX_DIFF, f"{prompt!r}: max |logit diff| {diff:.3g}"
        assert _kl(got, ref).max() <= STORED_MAX_KL
        assert torch.equal(got[0, -1].argmax(), ref[0, -1].argmax())
    ids = tok.encode("The capital of France is", bos=False)
    with torch.no_grad():
        probs = model(torch.tensor([ids]))[0, -1].softmax(-1)
    assert tok.decode([int(probs.argmax())]) == " Paris" and abs(probs.max().item() - 0.7725) < 0.02
