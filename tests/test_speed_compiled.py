"""The compiled decode step computes what the eager model computes, shares its KV cache,
and steps aside whenever the eager model must run (prefill, hooks, autograd).

torch.compile's tracing runs with the "aot_eager" backend here: it traces the step into a
graph with fixed shapes exactly as inductor would, but runs it without generating C++ (that
takes minutes on the shared 2-core box). test_inductor_compiles_the_step runs inductor
itself when LLAMA_FS_SLOW_TESTS=1.
"""

import os
import warnings

import pytest
import torch

from llama.hooks import capture
from llama.speed import optimize, use_standard_kernels
from llama.speed.compiled import compile_decode, compiled_step
from tiny_models import ours_from_hf, tiny_hf_model

TOL = 1e-4


def _decode(model, tokens, split):
    model.reset_cache()
    with torch.no_grad():
        steps = [model(tokens[:, :split])]
        steps += [model(tokens[:, i : i + 1], start_pos=i) for i in range(split, tokens.shape[1])]
    return torch.cat(steps, 1)


def _tokens(model, n, seed=0):
    return torch.randint(0, model.args.vocab_size, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["llama32", "qwen2"])  # GQA + tied + scaled RoPE; q/k/v bias
def test_compiled_steps_equal_the_eager_model(kind):
    hf = tiny_hf_model(kind)
    model = optimize(ours_from_hf(hf))
    tokens = _tokens(model, 264)  # past the cache's first capacity (256): it doubles once
    eager = _decode(model, tokens, 248)
    step = compile_decode(model, backend="aot_eager")
    compiled = _decode(model, tokens, 248)
    assert step.steps == 16 and step.failed is None  # every one-token step went through it
    assert (compiled - eager).abs().max() <= TOL
    with torch.no_grad():
        expected = hf(tokens).logits
    assert (compiled - expected).abs().max() <= TOL
    assert model.cache_length == 264 and model.layers[0].attention.cache.k.shape[2] == 512
    # The eager model continues from the cache the compiled steps wrote.
    with torch.no_grad():
        more = model(tokens[:, -1:], start_pos=263)  # rewind one token, through the step
        again = type(model).forward(model, tokens[:, -1:], start_pos=263)  # and eagerly
    assert (more - again).abs().max() <= TOL
    use_standard_kernels(model)
    assert compiled_step(model) is None


def test_hooks_and_gradients_take_the_eager_path():
    model = ours_from_hf(tiny_hf_model("llama2"))
    step = compile_decode(model, backend="aot_eager")
    tokens = _tokens(model, 12)
    _decode(model, tokens, 8)
    compiled_steps = step.steps
    assert compiled_steps == 4
    with capture(model, ["layers.0.resid_post"]) as cache:  # a hook: every tap must run
        _decode(model, tokens, 8)
    assert step.steps == compiled_steps and cache["layers.0.resid_post"].shape[1] == 1
    model.reset_cache()
    model(tokens[:, :8])
    logits = model(tokens[:, 8:9], start_pos=8)  # autograd on: the eager forward
    assert logits.requires_grad and step.steps == compiled_steps


def test_a_failing_compiler_falls_back_to_the_eager_model():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    model = ours_from_hf(tiny_hf_model("llama2"))
    tokens = _tokens(model, 12)
    eager = _decode(model, tokens, 8)
    step = compile_decode(model, backend=broken_backend)
    with pytest.warns(UserWarning, match="running eagerly"):
        got = _decode(model, tokens, 8)
    assert "no C++ compiler here" in step.failed and step.steps == 0
    assert (got - eager).abs().max() <= TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not every token
        _decode(model, tokens, 8)


def test_optimize_compile_leaves_other_models_alone():
    class NotOurs(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.warns(UserWarning, match="running uncompiled"):
        optimize(NotOurs(), compile=True)


@pytest.mark.skipif(os.environ.get("LLAMA_FS_SLOW_TESTS") != "1", reason="inductor compiles C++ for minutes (LLAMA_FS_SLOW_TESTS=1)")
def test_inductor_compiles_the_step():
    model = optimize(ours_from_hf(tiny_hf_model("llama32")))
    tokens = _tokens(model, 24)
    eager = _decode(model, tokens, 8)
    optimize(model, compile=True)
    compiled = _decode(model, tokens, 8)
    assert compiled_step(model).failed is None and compiled_step(model).steps == 16
    assert (compiled - eager).abs().max() <= TOL
