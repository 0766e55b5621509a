"""The speed settings pick other kernels for the same products, never other results."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama.config import ModelArgs
from llama.model import Transformer
from llama.speed import FastLinear, use_fast_kernels, use_standard_kernels
from tiny_models import ours_from_hf, tiny_hf_model

TOL = 1e-4  # float32 logits, as in the parity tests


def _prefill_then_decode(model, tokens, split):
    model.reset_cache()
    steps = [model(tokens[:, :split])]
    steps += [model(tokens[:, i : i + 1], start_pos=i) for i in range(split, tokens.shape[1])]
    return torch.cat(steps, 1)


@pytest.mark.parametrize("kind", ["llama2", "llama32", "qwen2"])
def test_fast_kernels_equal_transformers(kind, monkeypatch):
    hf = tiny_hf_model(kind)
    model = ours_from_hf(hf)
    names = dict(model.named_parameters())
    use_fast_kernels(model)

    # Same parameters under the same names (a tie stays one matrix), other class.
    assert dict(model.named_parameters()).keys() == names.keys()
    assert all(p is names[n] for n, p in model.named_parameters())
    assert type(model.layers[0].attention.wq) is FastLinear
    if kind == "llama32":
        assert model.output.weight is model.tok_embeddings.weight

    calls = {"bmm": 0}
    real_bmm = torch.bmm

    def counting_bmm(*args, **kwargs):
        calls["bmm"] += 1
        return real_bmm(*args, **kwargs)

    monkeypatch.setattr(torch, "bmm", counting_bmm)
    tokens = torch.randint(0, model.args.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(tokens).logits
        full = model(tokens)
        stepped = _prefill_then_decode(model, tokens, 24)
    assert calls["bmm"] > 0  # the one-row kernel did run in the decode steps
    assert (full - expected).abs().max() <= TOL
    assert (stepped - expected).abs().max() <= TOL

    use_standard_kernels(model)
    assert type(model.layers[0].attention.wq) is nn.Linear


def test_one_row_kernel_with_bias_and_odd_sizes():
    torch.manual_seed(0)
    for out_features, bias in [(96, True), (97, False), (48, False)]:
        layer = use_fast_kernels(nn.Linear(64, out_features, bias=bias))
        assert type(layer) is FastLinear
        inputs = (torch.randn(1, 1, 64), torch.randn(64), torch.randn(3, 5, 64))  # one row, a vector, many
        with torch.no_grad():
            fast = [layer(x) for x in inputs]
        expected = [F.linear(x, layer.weight, layer.bias) for x in inputs]
        for f, e in zip(fast, expected):
            assert f.shape == e.shape
            assert (f - e).abs().max() <= 1e-5


def test_gradients_take_the_plain_path():
    """Saliency differentiates through the model: the fast kernels must not get in the way."""
    model = ours_from_hf(tiny_hf_model("llama2"))
    tokens = torch.randint(0, model.args.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))

    def grad_of_last_logit(m):
        emb = m.tok_embeddings.weight
        emb.grad = None
        m(tokens)[0, -1, 5].backward()
        return emb.grad.clone()

    plain = grad_of_last_logit(model)
    use_fast_kernels(model)
    fast = grad_of_last_logit(model)
    assert (fast - plain).abs().max() <= 1e-6


def test_a_model_converted_afterwards_still_computes_the_same():
    """use_fast_kernels, then .to(bfloat16): the swapped class must not break or change it."""
    model = ours_from_hf(tiny_hf_model("llama2"))
    tokens = torch.randint(0, model.args.vocab_size, (1, 16), generator=torch.Generator().manual_seed(3))
    use_fast_kernels(model).to(torch.bfloat16)
    with torch.no_grad():
        fast = _prefill_then_decode(model, tokens, 8)
        use_standard_kernels(model)
        plain = _prefill_then_decode(model, tokens, 8)
    assert torch.equal(fast.argmax(-1), plain.argmax(-1))
    assert (fast - plain).abs().max() <= 0.05 * plain.abs().max()  # bfloat16 rounding


def test_fast_kernels_leave_bfloat16_alone():
    model = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=40)).to(torch.bfloat16)
    use_fast_kernels(model)
    assert type(model.layers[0].attention.wq) is nn.Linear


def test_last_only_logits():
    model = ours_from_hf(tiny_hf_model("qwen2"))
    tokens = torch.randint(0, model.args.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        last = model(tokens, last_only=True)
    assert last.shape == (2, 1, model.args.vocab_size)
    assert (last[:, 0] - full[:, -1]).abs().max() <= 1e-4
