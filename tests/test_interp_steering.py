"""Steering (llama.interp.steering) against steering written by hand.

The reference adds the vector with a plain torch forward hook on the block module
(model.layers[L] returns the residual after block L), so it depends neither on llama.hooks
nor on llama/interp; generation is checked against a greedy loop that reruns the whole
sequence from scratch at every step (no KV cache), so the cached steered generation must
equal the uncached one.
"""

from __future__ import annotations

import pytest
import torch

from llama.generate import generate_ids, top_candidates
from llama.hooks import run_with_cache
from llama.interp import (
    steer,
    steered_generation,
    steering_topk,
    steering_vector,
)
from tiny_models import ours_from_hf, tiny_hf_model


@pytest.fixture(scope="module")
def model():
    return ours_from_hf(tiny_hf_model("llama32"))


def _ids(model, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.args.vocab_size, (n,), generator=gen).tolist()


class _AddToBlock:
    """A plain torch forward hook: block `layer`'s output + scale * vector."""

    def __init__(self, model, layer, vector, scale):
        self.handle = model.layers[layer].register_forward_hook(
            lambda mod, args, out: out + scale * vector
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("how", ["mean", "last"])
def test_the_vector_is_the_difference_of_the_two_residuals(model, how):
    a, b = _ids(model, 6, 1), _ids(model, 4, 2)  # lengths may differ
    v = steering_vector(model, a, b, layer=1, how=how)
    _, ca = run_with_cache(model, torch.tensor([a]), "layers.1.resid_post")
    _, cb = run_with_cache(model, torch.tensor([b]), "layers.1.resid_post")
    ra, rb = ca["layers.1.resid_post"][0], cb["layers.1.resid_post"][0]  # (T, D)
    want = ra.mean(0) - rb.mean(0) if how == "mean" else ra[-1] - rb[-1]
    assert torch.allclose(v.vector, want, atol=1e-6)
    assert v.layer == 1 and v.hook == "layers.1.resid_post" and v.how == how
    assert v.norm == pytest.approx(float(want.norm()), rel=1e-6)


def test_steer_adds_the_scaled_vector_after_the_layer(model):
    v = steering_vector(model, _ids(model, 5, 3), _ids(model, 5, 4), layer=0)
    tokens = torch.tensor([_ids(model, 7, 5)])
    with steer(model, v, scale=3.0), torch.no_grad():
        got = model(tokens)
    with _AddToBlock(model, 0, v.vector, 3.0), torch.no_grad():
        want = model(tokens)
    with torch.no_grad():
        plain = model(tokens)
    assert (got - want).abs().max() <= 1e-5
    assert (got - plain).abs().max() > 0.1  # it does steer
    # A bare tensor needs its layer; then it is the same edit.
    with steer(model, v.vector, scale=3.0, layer=0), torch.no_grad():
        assert torch.equal(model(tokens), got)


def test_topk_before_and_after(model):
    v = steering_vector(model, _ids(model, 5, 6), _ids(model, 5, 7), layer=1)
    prompt = _ids(model, 6, 8)
    cmp = steering_topk(model, prompt, v, scale=8.0, k=5)
    with torch.no_grad():
        plain = model(torch.tensor([prompt]))[0, -1]
    with _AddToBlock(model, 1, v.vector, 8.0), torch.no_grad():
        steered = model(torch.tensor([prompt]))[0, -1]
    assert cmp.before == top_candidates(plain, 5)
    want = top_candidates(steered, 5)
    assert [c.id for c in cmp.after] == [c.id for c in want]
    assert [c.prob for c in cmp.after] == pytest.approx([c.prob for c in want], abs=1e-5)
    assert cmp.before != cmp.after  # scale 8 moves the table
    assert len(cmp.rows()) == 5 and cmp.layer == 1 and cmp.scale == 8.0


def test_steered_generation_equals_a_greedy_loop_without_cache(model):
    v = steering_vector(model, _ids(model, 5, 9), _ids(model, 5, 10), layer=0, how="last")
    prompt = _ids(model, 4, 11)
    got = steered_generation(model, prompt, v, scale=4.0, max_new_tokens=8)
    ids = list(prompt)
    with _AddToBlock(model, 0, v.vector, 4.0), torch.no_grad():
        for _ in range(8):
            model.reset_cache()
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))  # the whole sequence again
    assert got.ids == ids[len(prompt):]
    assert got.text is None and got.layer == 0
    # Scale 0 is the plain continuation; the steered one differs from it.
    plain = generate_ids(model, prompt, 8)
    assert steered_generation(model, prompt, v, scale=0.0, max_new_tokens=8).ids == plain
    assert got.ids != plain
    assert model.cache_length == 0  # steered keys/values are never left for the next user
