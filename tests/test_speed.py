"""optimize() picks other kernels for the same products, never other results.

No test here times anything for its own sake: where calibration's timing matters, the
timer is replaced so the outcome is decided by the test, not by a busy machine.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama import speed
from llama.config import ModelArgs
from llama.hooks import capture, intervene
from llama.model import Transformer
from llama.speed import FastLinear, kernel_report, optimize, use_fast_kernels, use_standard_kernels
from llama.speed import calibrate, kernels
from tiny_models import ours_from_hf, tiny_hf_model

TOL = 1e-4  # float32 logits, as in the parity tests


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    """Each test calibrates afresh (choices are otherwise kept for the process), with fewer
    timing rounds: which kernel wins does not matter here, only which ones may."""
    monkeypatch.setattr(calibrate, "ROUNDS", 2)
    monkeypatch.setattr(calibrate, "BUDGET_S", 0.02)
    calibrate.forget_choices()
    yield
    calibrate.forget_choices()


def _prefill_then_decode(model, tokens, split):
    model.reset_cache()
    steps = [model(tokens[:, :split])]
    steps += [model(tokens[:, i : i + 1], start_pos=i) for i in range(split, tokens.shape[1])]
    return torch.cat(steps, 1)


def _tokens(model, n, seed=0, batch=1):
    return torch.randint(0, model.args.vocab_size, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["llama2", "llama32", "qwen2"])
def test_optimize_equals_transformers_and_the_plain_model(kind):
    hf = tiny_hf_model(kind)
    model = ours_from_hf(hf)
    tokens = _tokens(model, 40)
    with torch.no_grad():
        plain_full, plain_steps = model(tokens), _prefill_then_decode(model, tokens, 24)
    names = dict(model.named_parameters())
    state_keys = list(model.state_dict())
    assert optimize(model) is model

    # Same parameters under the same names (a tie stays one matrix), other class.
    assert all(p is names[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == state_keys
    assert type(model.layers[0].attention.wq) is FastLinear
    if kind == "llama32":
        assert model.output.weight is model.tok_embeddings.weight

    with torch.no_grad():
        expected = hf(tokens).logits
        full = model(tokens)
        stepped = _prefill_then_decode(model, tokens, 24)
    report = kernel_report(model)
    assert {r["rows"] for r in report} >= {"1", "16-127"}  # decode and prefill calibrated
    assert all(r["threads"] == torch.get_num_threads() for r in report)
    for got, plain in ((full, plain_full), (stepped, plain_steps)):
        assert (got - expected).abs().max() <= TOL
        assert (got - plain).abs().max() <= TOL

    use_standard_kernels(model)
    assert type(model.layers[0].attention.wq) is nn.Linear


def test_use_fast_kernels_is_optimize():
    model = ours_from_hf(tiny_hf_model("llama2"))
    assert use_fast_kernels(model) is model
    assert type(model.output) is FastLinear


# ---------------------------------------------------------------------------------------
# Calibration picks only candidates that equal F.linear
# ---------------------------------------------------------------------------------------


def _fake(name, fn):
    return kernels.Kernel(name, fn, lambda x, w: True, "a test candidate")


WRONG = _fake("wrong", lambda x, w, b: F.linear(x, w, b) * (1 + 1e-3))  # off by 0.1%
BFLOAT16 = _fake("bf16", lambda x, w, b: F.linear(x.bfloat16(), w.bfloat16(), None if b is None else b.bfloat16()).float())
ZEROS = _fake("zeros", lambda x, w, b: x.new_zeros(*x.shape[:-1], w.shape[0]))
SHAPE = _fake("shape", lambda x, w, b: F.linear(x, w, b)[..., :-1])
RAISES = _fake("raises", lambda x, w, b: 1 / 0)
# Exact sums, rounded once: as accurate as it gets, and different from F.linear's rounding.
EXACT = _fake("exact", lambda x, w, b: F.linear(x.double(), w.double(), None if b is None else b.double()).float())


def _noisy(x, w, b):
    """Within the float32 rounding bound of F.linear, but with far more error than it."""
    y = F.linear(x, w, b)
    sign = torch.where(torch.arange(y.numel()).view(y.shape) % 2 == 0, 1.0, -1.0)
    return y + sign * y.abs() * 6e-7


NOISY = _fake("noisy", _noisy)


@pytest.fixture
def rigged(monkeypatch):
    """Candidates of the test's choosing, and a timer that makes the fakes the fastest."""

    def use(*fakes):
        monkeypatch.setattr(kernels, "CANDIDATES", [kernels.LINEAR, *fakes])
        monkeypatch.setattr(kernels, "BY_NAME", {k.name: k for k in kernels.CANDIDATES})
        monkeypatch.setattr(calibrate, "_time_pass", lambda k, x, modules: 1.0 if k is kernels.LINEAR else 0.001)

    return use


def _decode_choices(model):
    tokens = _tokens(model, 12, seed=3)
    with torch.no_grad():
        out = _prefill_then_decode(model, tokens, 8)
    return out, {(r["shape"], r["rows"]): r for r in kernel_report(model)}


def test_calibration_refuses_fast_but_wrong_candidates(rigged):
    rigged(WRONG, BFLOAT16, ZEROS, SHAPE, RAISES)
    model = ours_from_hf(tiny_hf_model("llama2"))
    with torch.no_grad():
        plain = _prefill_then_decode(model, _tokens(model, 12, seed=3), 8)
    optimize(model)
    out, report = _decode_choices(model)
    assert report and all(r["kernel"] == "linear" for r in report.values())
    for r in report.values():
        refused = r["refused"]
        assert set(refused) == {"wrong", "bf16", "zeros", "shape", "raises"}, refused
        assert "float32 rounding" in refused["wrong"] and "float32 rounding" in refused["bf16"]
        assert "F.linear" in refused["shape"] and "ZeroDivisionError" in refused["raises"]
    assert torch.equal(out, plain)  # nothing but F.linear ran


def test_calibration_takes_a_faster_candidate_that_agrees(rigged):
    """The other half of the test above: the same rig does choose a fake that is right."""
    rigged(WRONG, EXACT)
    model = ours_from_hf(tiny_hf_model("llama2"))
    optimize(model)
    _, report = _decode_choices(model)
    assert all(r["kernel"] == "exact" for r in report.values())
    assert all(set(r["refused"]) == {"wrong"} for r in report.values())


def test_plain_kernels_is_f_linear_for_a_while_and_keeps_the_choices(rigged, monkeypatch):
    rigged(EXACT)  # a chosen kernel whose results differ from F.linear's in the last bits
    model = ours_from_hf(tiny_hf_model("llama2"))
    with torch.no_grad():
        plain = _prefill_then_decode(model, _tokens(model, 12, seed=3), 8)
    optimize(model)
    fast, report = _decode_choices(model)
    assert all(r["kernel"] == "exact" for r in report.values()) and not torch.equal(fast, plain)

    def no_second_calibration(self, key, x):
        raise AssertionError(f"calibrated again for {key}")

    monkeypatch.setattr(calibrate.Plan, "_choose", no_second_calibration)
    with speed.plain_kernels(model):
        inside, _ = _decode_choices(model)
    assert torch.equal(inside, plain)  # nothing but F.linear ran
    again, report_after = _decode_choices(model)
    assert torch.equal(again, fast) and report_after == report  # the same choices, unchecked


def test_less_accurate_candidates_need_same_accuracy_off(rigged):
    rigged(NOISY)
    model = ours_from_hf(tiny_hf_model("llama2"))
    optimize(model)
    _, report = _decode_choices(model)
    assert all(r["kernel"] == "linear" and "less accurate" in r["refused"]["noisy"] for r in report.values())

    calibrate.forget_choices()
    optimize(model, same_accuracy=False)  # within float32 rounding is then enough
    _, report = _decode_choices(model)
    assert all(r["kernel"] == "noisy" for r in report.values())


def test_a_faster_candidate_must_beat_the_margin(monkeypatch, rigged):
    rigged(EXACT)
    monkeypatch.setattr(calibrate, "_time_pass", lambda k, x, modules: 1.0 if k is kernels.LINEAR else 0.95)
    model = ours_from_hf(tiny_hf_model("llama2"))
    optimize(model)
    _, report = _decode_choices(model)
    assert all(r["kernel"] == "linear" for r in report.values())  # 5% faster: not enough


def test_choices_on_disk_are_checked_again(tmp_path, rigged):
    cache = tmp_path / "kernels.json"
    rigged(EXACT)
    model = ours_from_hf(tiny_hf_model("llama2"))
    optimize(model, cache=cache)
    _decode_choices(model)
    entries = json.loads(cache.read_text())["entries"]
    assert entries and all(calibrate.cpu_model() in key and torch.__version__ in key for key in entries)
    assert all(e["kernel"] == "exact" for e in entries.values())

    # A new process (choices forgotten) reads them back instead of timing.
    calibrate.forget_choices()
    model2 = optimize(ours_from_hf(tiny_hf_model("llama2")), cache=cache)
    _, report = _decode_choices(model2)
    assert all(r["from"] == "cache" and r["kernel"] == "exact" for r in report.values())

    # A file that names a wrong kernel is not believed: checked, refused, calibrated anew.
    for e in entries.values():
        e["kernel"] = "wrong"
    cache.write_text(json.dumps({"version": 1, "entries": entries}))
    calibrate.forget_choices()
    rigged(EXACT, WRONG)
    model3 = optimize(ours_from_hf(tiny_hf_model("llama2")), cache=cache)
    _, report = _decode_choices(model3)
    assert all(r["from"] == "calibration" and r["kernel"] == "exact" for r in report.values())


def test_choices_are_per_thread_count():
    model = optimize(ours_from_hf(tiny_hf_model("llama2")))
    tokens = _tokens(model, 3)
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            model(tokens)
            torch.set_num_threads(2)
            model(tokens)
    finally:
        torch.set_num_threads(before)
    assert {r["threads"] for r in kernel_report(model)} == {1, 2}


# ---------------------------------------------------------------------------------------
# Every candidate kernel, directly
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", kernels.CANDIDATES, ids=lambda k: k.name)
def test_each_candidate_agrees_with_f_linear(kernel):
    torch.manual_seed(0)
    for out_features, bias in [(96, True), (97, False), (48, False), (256, True)]:
        weight = torch.randn(out_features, 64) * 0.1
        b = torch.randn(out_features) if bias else None
        for x in (torch.randn(1, 1, 64), torch.randn(64), torch.randn(3, 5, 64)):  # one row, a vector, many
            if not kernel.applies(x, weight):
                continue
            got, expected = kernel(x, weight, b), F.linear(x, weight, b)
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= 1e-5
            assert calibrate.check(kernel, x, weight, b, same_accuracy=False) is None


def test_check_names_what_is_wrong():
    weight, x = torch.randn(32, 64), torch.randn(2, 64)
    assert calibrate.check(kernels.LINEAR, x, weight, None) is None
    assert "float32 rounding" in calibrate.check(WRONG, x, weight, None)
    assert "raised" in calibrate.check(RAISES, x, weight, None)


# ---------------------------------------------------------------------------------------
# What the fast path must not break
# ---------------------------------------------------------------------------------------


def test_gradients_take_the_plain_path():
    """Saliency differentiates through the model: the kernels must not get in the way."""
    model = ours_from_hf(tiny_hf_model("llama2"))
    tokens = _tokens(model, 12, seed=2)

    def grad_of_last_logit(m):
        emb = m.tok_embeddings.weight
        emb.grad = None
        m(tokens)[0, -1, 5].backward()
        return emb.grad.clone()

    plain = grad_of_last_logit(model)
    optimize(model)
    fast = grad_of_last_logit(model)
    assert (fast - plain).abs().max() <= 1e-6


def test_hooks_work_on_an_optimized_model():
    model = ours_from_hf(tiny_hf_model("llama32"))
    tokens = _tokens(model, 10, seed=4)
    names = ["layers.1.resid_post", "layers.0.attention.probs", "layers.0.feed_forward.act"]

    def run(m):
        m.reset_cache()
        with torch.no_grad(), capture(m, names) as cache:
            logits = m(tokens)
        with torch.no_grad(), intervene(m, {"layers.0.attention.out": lambda v: v * 0}):
            m.reset_cache()
            ablated = m(tokens)
        return logits, dict(cache), ablated

    plain = run(model)
    fast = run(optimize(model))
    assert (fast[0] - plain[0]).abs().max() <= TOL
    assert set(fast[1]) == set(names)
    for name in names:
        assert (fast[1][name] - plain[1][name]).abs().max() <= TOL
    assert (fast[2] - plain[2]).abs().max() <= TOL
    assert (fast[2] - fast[0]).abs().max() > 0.01  # the intervention did something


def test_a_model_converted_afterwards_still_computes_the_same():
    """optimize, then .to(bfloat16): the choices are per dtype, the results bfloat16's."""
    model = ours_from_hf(tiny_hf_model("llama2"))
    tokens = _tokens(model, 16, seed=3)
    optimize(model).to(torch.bfloat16)
    with torch.no_grad():
        fast = _prefill_then_decode(model, tokens, 8)
        use_standard_kernels(model)
        plain = _prefill_then_decode(model, tokens, 8)
    assert torch.equal(fast.argmax(-1), plain.argmax(-1))
    assert (fast - plain).abs().max() <= 0.05 * plain.abs().max()  # bfloat16 rounding


def test_bfloat16_models_are_calibrated_too():
    model = Transformer(ModelArgs(dim=64, n_layers=1, n_heads=4, vocab_size=40)).to(torch.bfloat16)
    optimize(model)
    assert type(model.layers[0].attention.wq) is FastLinear
    with torch.no_grad():
        model(_tokens(model, 4))
    assert {r["dtype"] for r in kernel_report(model)} == {"bfloat16"}


def test_last_only_logits():
    model = optimize(ours_from_hf(tiny_hf_model("qwen2")))
    tokens = _tokens(model, 12, seed=1, batch=2)
    with torch.no_grad():
        full = model(tokens)
        last = model(tokens, last_only=True)
    assert last.shape == (2, 1, model.args.vocab_size)
    assert (last[:, 0] - full[:, -1]).abs().max() <= 1e-4


def test_optimize_bad_arguments():
    model = ours_from_hf(tiny_hf_model("llama2"))
    with pytest.raises(TypeError, match="takes a model"):
        optimize("model.gguf")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        optimize(model, threads=0)
    with pytest.raises(ValueError, match="quantize must be one of 'int8', 'int4'"):
        optimize(model, quantize="int3")
    assert speed.cpu_model()  # some name, never an empty string
