"""llama.interp on GPT-2 (llama/gpt2.py), through the same hook names: skipped where the
GPT-2 model is not in the tree yet.

GPT-2 is what the generic code must not break on: a LayerNorm final norm with a bias,
learned position embeddings added to the token embeddings, biases on wo and the MLP, and
no grouped-query attention (each kv head is one query head).

* resid_pre at layer 0 patches the token embedding; patching the embeddings' sum
  (tok + pos, the `embeddings` hook) by hand gives the same scores, because both prompts
  have the same positions.
* Every cell of every site equals patching it by hand with llama.hooks.
* resid_post sweeps equal transformers' GPT2LMHeadModel patched with a forward hook on its
  blocks, within 1e-4 (raw logit difference).
* DLA parts (embed, pos_embed, per-head shares, wo biases, MLPs, norm.bias) sum to the
  logit within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("llama.gpt2", reason="the GPT-2 model (llama/gpt2.py) is not in this tree")
gpt2_models = pytest.importorskip("gpt2_models", reason="tests/gpt2_models.py is not in this tree")

from llama.hooks import intervene, patch_from, run_with_cache  # noqa: E402
from llama.interp import SITES, logit_attribution, logit_diff, logit_diff_metric, patching  # noqa: E402

ATOL = 1e-4
T = 8


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from weights import load_model

    hf = gpt2_models.tiny_gpt2("small")
    folder = gpt2_models.write_hf(hf, tmp_path_factory.mktemp("gpt2"))
    model = load_model(folder, dtype="float32")
    V = model.args.vocab_size
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, V, (1, T), generator=gen)
    corrupt = clean.clone()
    corrupt[0, 3] = (clean[0, 3] + 5) % V
    with torch.no_grad():
        moved = model(clean)[0, -1] - model(corrupt)[0, -1]
    return hf, model, clean, corrupt, int(moved.argmax()), int(moved.argmin())


def _hand(model, site, layer, col, cache):
    if site in ("heads", "kv_heads"):
        names = [f"layers.{layer}.attention.heads"] if site == "heads" else [
            f"layers.{layer}.attention.k", f"layers.{layer}.attention.v"]

        def edit(value, name):
            out = value.clone()
            out[:, :, col] = cache[name][:, :, col]
            return out

        return {n: edit for n in names}
    hook = {
        "resid_pre": "embeddings" if layer == 0 else f"layers.{layer - 1}.resid_post",  # the sum
        "resid_mid": f"layers.{layer}.resid_mid",
        "resid_post": f"layers.{layer}.resid_post",
        "attn_out": f"layers.{layer}.attention.out",
        "mlp_out": f"layers.{layer}.feed_forward.out",
    }[site]
    return {hook: patch_from(cache, positions=[col])}


@pytest.mark.parametrize("site", list(SITES))
def test_every_cell_equals_patching_by_hand(gpt2, site):
    _, model, clean, corrupt, a, w = gpt2
    metric = logit_diff_metric(model, clean, corrupt, a, w)
    result = patching(model, clean, corrupt, metric, site=site)
    _, cache = run_with_cache(model, clean)
    n_layers, n_cols = result.scores.shape
    for layer in range(n_layers):
        for col in range(n_cols):
            with intervene(model, _hand(model, site, layer, col, cache)), torch.no_grad():
                want = metric(model(corrupt))
            assert result.scores[layer, col] == pytest.approx(want, abs=1e-5), (site, layer, col)
    if site == "kv_heads":  # no grouped-query attention: each kv head is its own query head
        assert result.query_heads == [[h] for h in range(model.args.n_heads)]


def test_resid_post_equals_transformers_with_a_forward_hook(gpt2):
    hf, model, clean, corrupt, a, w = gpt2

    def score(logits):
        return logit_diff(logits, a, w)

    ours = patching(model, clean, corrupt, score, site="resid_post").scores
    theirs = torch.zeros_like(ours)
    for layer, block in enumerate(hf.transformer.h):
        stored = {}

        def record(mod, args, out):
            stored["h"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        handle = block.register_forward_hook(record)
        with torch.no_grad():
            hf(clean)
        handle.remove()
        for pos in range(T):
            def patch(mod, args, out, pos=pos):
                h = (out[0] if isinstance(out, tuple) else out).clone()
                h[:, pos] = stored["h"][:, pos]
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handle = block.register_forward_hook(patch)
            with torch.no_grad():
                theirs[layer, pos] = score(hf(corrupt).logits)
            handle.remove()
    assert (ours - theirs).abs().max() <= ATOL
    assert (theirs - theirs[0, 0]).abs().max() > 0.05


@pytest.mark.parametrize("heads", [False, True])
def test_dla_parts_sum_to_the_logit(gpt2, heads):
    _, model, clean, _, a, w = gpt2
    with torch.no_grad():
        logits = model(clean)[0, -1]
    for target, want in ((a, logits[a]), ((a, w), logits[a] - logits[w])):
        parts = logit_attribution(model, clean, target, heads=heads)
        assert abs(sum(parts.values()) - float(want)) <= ATOL
        assert "pos_embed" in parts and "norm.bias" in parts
        assert ("L0.attn_bias" in parts) == heads
