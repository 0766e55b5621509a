"""Direct logit attribution (llama.interp.attribution) on tiny random models.

* The parts sum to the model's own logit (or logit difference) within 1e-4, float32, for
  every tiny model shape, single targets and pairs, with and without the per-head split.
* Each part equals the projection written out by hand from captured activations: the
  final RMSNorm's scale 1/rms(r) of the full residual r, the norm weight, the unembedding
  row (and each head's share through its slice of wo's columns).
* A LayerNorm final norm with a bias, a biased unembedding and a biased wo (what GPT-2
  has) are handled and still add up; a norm of another kind is refused.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llama.hooks import run_with_cache
from llama.interp import InterpError, attribution, logit_attribution
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model

T = 7


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def model(request):
    return ours_from_hf(tiny_hf_model(request.param))


def _tokens(model, seed=4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.args.vocab_size, (1, T), generator=gen)


@pytest.mark.parametrize("position", [-1, 3, 0])
@pytest.mark.parametrize("heads", [False, True])
def test_parts_sum_to_the_logit_and_to_the_logit_difference(model, position, heads):
    tokens = _tokens(model)
    with torch.no_grad():
        logits = model(tokens)[0, position]
    top2 = logits.topk(2).indices.tolist()
    low = int(logits.argmin())
    for target, want in (
        (top2[0], logits[top2[0]]),
        (low, logits[low]),
        ((top2[0], low), logits[top2[0]] - logits[low]),
        ((top2[1], top2[0]), logits[top2[1]] - logits[top2[0]]),
    ):
        parts = logit_attribution(model, tokens, target, position=position, heads=heads)
        assert abs(sum(parts.values()) - float(want)) <= 1e-4, (target, sum(parts.values()), float(want))
        n = model.args.n_layers
        per_block = model.args.n_heads if heads else 1
        assert len(parts) == 1 + n * (per_block + 1)  # embed, then per block attention + mlp
        assert list(parts)[0] == "embed" and list(parts)[-1] == f"L{n - 1}.mlp"


def test_each_part_equals_the_projection_by_hand(model):
    tokens = _tokens(model, seed=9)
    a = model.args
    target = 17
    names = ["tok_embeddings", "layers.*.attention.out", "layers.*.attention.heads",
             "layers.*.feed_forward.out", f"layers.{a.n_layers - 1}.resid_post"]
    _, cache = run_with_cache(model, tokens, names)
    r = cache[f"layers.{a.n_layers - 1}.resid_post"][0, -1]  # (D,)
    scale = 1 / torch.sqrt(r.pow(2).mean() + model.norm.eps)  # frozen at the full residual
    w, u = model.norm.weight.detach(), model.output.weight[target].detach()

    def project(c):
        return float((c * scale * w) @ u)

    result = attribution(model, tokens, target)
    parts = result.parts(heads=True)
    assert result.scale == pytest.approx(float(scale), rel=1e-6)
    assert result.norm_kind == "rms"
    assert parts["embed"] == pytest.approx(project(cache["tok_embeddings"][0, -1]), abs=1e-5)
    Hd = a.head_dim
    for layer in range(a.n_layers):
        attn = cache[f"layers.{layer}.attention.out"][0, -1]
        mlp = cache[f"layers.{layer}.feed_forward.out"][0, -1]
        assert float(result.attn[layer]) == pytest.approx(project(attn), abs=1e-5)
        assert result.parts()[f"L{layer}.mlp"] == pytest.approx(project(mlp), abs=1e-5)
        wo = model.layers[layer].attention.wo.weight.detach()  # (D, H*Hd)
        heads = cache[f"layers.{layer}.attention.heads"][0, -1]  # (H, Hd)
        for h in range(a.n_heads):
            share = wo[:, h * Hd : (h + 1) * Hd] @ heads[h]  # head h through its slice of wo
            assert parts[f"L{layer}.H{h}"] == pytest.approx(project(share), abs=1e-5)
        # The heads add up to the block's attention output (wo has no bias here).
        assert float(result.heads[layer].sum()) == pytest.approx(float(result.attn[layer]), abs=1e-5)
    assert result.attn_bias is None and result.norm_bias is None and result.output_bias is None


def test_gpt2_like_layernorm_and_biases_still_add_up():
    """GPT-2's final norm is a LayerNorm with a bias, and its projections have biases: put
    those into a tiny Llama-shaped model and check the decomposition written for them."""
    model = ours_from_hf(tiny_hf_model("llama2"))
    a = model.args
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm = nn.LayerNorm(a.dim, eps=1e-5)
        norm.weight.copy_(1 + 0.3 * torch.randn(a.dim, generator=gen))
        norm.bias.copy_(0.5 * torch.randn(a.dim, generator=gen))
        model.norm = norm
        out = nn.Linear(a.dim, a.vocab_size, bias=True)
        out.weight.copy_(model.output.weight)
        out.bias.copy_(torch.randn(a.vocab_size, generator=gen))
        model.output = out
        for layer in model.layers:
            wo = nn.Linear(a.n_heads * a.head_dim, a.dim, bias=True)
            wo.weight.copy_(layer.attention.wo.weight)
            wo.bias.copy_(0.5 * torch.randn(a.dim, generator=gen))
            layer.attention.wo = wo
    tokens = _tokens(model, seed=1)
    with torch.no_grad():
        logits = model(tokens)[0, -1]
    i, j = int(logits.argmax()), int(logits.argmin())
    for target, want in ((i, logits[i]), ((i, j), logits[i] - logits[j])):
        for heads in (False, True):
            parts = logit_attribution(model, tokens, target, heads=heads)
            assert abs(sum(parts.values()) - float(want)) <= 1e-4
            assert "norm.bias" in parts and "output.bias" in parts
            assert ("L0.attn_bias" in parts) == heads
    result = attribution(model, tokens, i)
    assert result.norm_kind == "layer"
    # By hand: centre each part, divide by the full residual's std, times the weight.
    _, cache = run_with_cache(model, tokens, ["tok_embeddings", f"layers.{a.n_layers - 1}.resid_post"])
    r = cache[f"layers.{a.n_layers - 1}.resid_post"][0, -1]
    std = torch.sqrt(r.var(unbiased=False) + 1e-5)
    e = cache["tok_embeddings"][0, -1]
    by_hand = float(((e - e.mean()) / std * norm.weight.detach()) @ model.output.weight[i].detach())
    assert result.embed == pytest.approx(by_hand, abs=1e-5)
    assert result.norm_bias == pytest.approx(float(norm.bias.detach() @ model.output.weight[i].detach()), abs=1e-5)
    assert result.output_bias == pytest.approx(float(out.bias.detach()[i]), abs=1e-6)
    # With the bias of wo: attention = sum of heads + bias, per block.
    assert torch.allclose(result.heads.sum(1) + result.attn_bias, result.attn, atol=1e-5)


def test_a_norm_of_another_kind_is_refused():
    model = ours_from_hf(tiny_hf_model("llama2"))
    model.norm = nn.Identity()
    with pytest.raises(InterpError, match="RMSNorm and LayerNorm"):
        logit_attribution(model, _tokens(model), 3)


def test_the_docstring_says_the_scale_is_frozen():
    doc = logit_attribution.__doc__ + attribution.__doc__
    assert "frozen" in doc and "full residual" in doc
