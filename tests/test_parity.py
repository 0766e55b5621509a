"""llama-parity on tiny random checkpoints: every format and family passes; planted faults
are found where they were planted; tokenizer problems are blamed on the tokenizer; bad
input gets exit status 2 and a message.

Faults are planted in our model only, through llama.hooks.intervene (check(intervene=)),
so transformers' side stays the untouched oracle.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from parity_checkpoints import CASES, GPT2_CASES, write_tiny
from scripts.parity import check, main

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["The capital of France is", "def fib(n):\n    return n", "Grüße aus Köln! 你好 🙂 2024"]

# What every tiny checkpoint's report must compare, per family: hook names that must be
# among the compared points, names that must not (the family has no such thing), and how
# many points there are (top-level + per layer x layers; every hook point but scores).
EXPECTED_POINTS = {
    "llama": ({"tok_embeddings", "attention_norm", "attention.q", "attention.k_rot", "attention.probs",
               "attention.heads", "feed_forward.gate", "feed_forward.act", "resid_post", "norm", "logits"},
              {"pos_embeddings", "embeddings"}, 3, 16),
    "gpt2": ({"tok_embeddings", "pos_embeddings", "embeddings", "attention_norm", "attention.q", "attention.k",
              "attention.v", "attention.probs", "attention.heads", "attention.out", "resid_mid", "ffn_norm",
              "feed_forward.up", "feed_forward.act", "feed_forward.out", "resid_post", "norm", "logits"},
             {"attention.q_rot", "attention.k_rot", "feed_forward.gate"}, 5, 13),
}


# ---------------------------------------------------------------------------------------
# Every format and family
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,fmt", CASES + GPT2_CASES, ids=[f"{k}-{f}" for k, f in CASES + GPT2_CASES])
def test_tiny_checkpoint_passes(tmp_path, kind, fmt):
    from weights import open_checkpoint

    path = write_tiny(kind, fmt, tmp_path / f"{kind}-{fmt}")
    report = check(path, PROMPTS)
    assert report.ok, report.table()
    assert report.exit_code == 0
    assert report.format == ("hf" if fmt.startswith("hf") else fmt)
    assert report.mode == "together"
    family = "gpt2" if kind == "gpt2" else "llama"
    assert report.family == family
    must, must_not, n_top, n_per_layer = EXPECTED_POINTS[family]
    n_layers = open_checkpoint(path).args.n_layers
    for p in report.prompts:
        assert p.logits_max_diff <= 1e-4 and p.cached_max_diff <= 1e-4 and p.cached_self_diff <= 1e-4
        assert p.top1_agree == p.cached_top1_agree == p.n_tokens
        # Every hook point transformers has was compared, and none is past its tolerance.
        hooks = {d.hook for d in p.points}
        assert must <= hooks and not (must_not & hooks)
        assert len(p.points) == n_top + n_per_layer * n_layers
        assert all(d.within for d in p.points)
        assert all(d.scale > 0 for d in p.points)  # real values on both sides, not empty tensors
    assert report.first_divergence is None
    assert report.tokenizer.available and not report.tokenizer.mismatches
    assert len(report.tokenizer.cases) > 30  # prompts + built-in corpus
    assert not report.config_diffs
    if fmt == "meta":
        assert "converted by llama.parity" in report.reference
    if kind == "gpt2":
        assert "GPT2LMHeadModel" in report.reference
        assert ("pytorch_model.bin" in report.reference) == (fmt == "hf-bin")
        # Where transformers' values came from: wte alone is the token embeddings, its
        # hidden_states[0] is token + position, its last hidden state is after ln_f.
        source = {d.name: d.source for d in report.prompts[0].points}
        last = n_layers - 1
        assert source["tok_embeddings"] == "transformer.wte output"
        assert source["pos_embeddings"] == "transformer.wpe output"
        assert source["embeddings"] == "hidden_states[0]"
        assert source["layers.0.attention.k"] == "attn.c_attn output [D:2D]"
        assert source["layers.0.resid_post"] == "hidden_states[1]"
        assert source[f"layers.{last}.resid_post"] == "decoder layer output"
        assert source["norm"] == f"hidden_states[{n_layers}]"


@pytest.mark.parametrize("kind,fmt", [("qwen2", "hf"), ("gpt2", "hf-bin")])
def test_one_after_the_other_gives_the_same_numbers(tmp_path, kind, fmt):
    path = write_tiny(kind, fmt, tmp_path / "q")
    together = check(path, PROMPTS[:1])
    apart = check(path, PROMPTS[:1], mode="one after the other")
    assert apart.mode == "one after the other" and apart.ok
    a, b = together.prompts[0], apart.prompts[0]
    assert a.logits_max_diff == b.logits_max_diff and a.cached_max_diff == b.cached_max_diff
    assert [d.max_abs_diff for d in a.points] == [d.max_abs_diff for d in b.points]


def test_memory_estimate_picks_the_mode(tmp_path, monkeypatch):
    from weights.checkpoint import MEMORY_ENV

    path = write_tiny("llama2", "hf", tmp_path / "m")
    report = check(path, PROMPTS[:1])
    need_one = report.memory["ours_bytes"]
    need_both = need_one + report.memory["reference_bytes"]
    assert report.memory["mode"] == "together"
    monkeypatch.setenv(MEMORY_ENV, str(need_both - 1))
    report = check(path, PROMPTS[:1])
    assert report.mode == "one after the other" and report.ok
    assert "freed before transformers loads" in report.memory["summary"]
    monkeypatch.setenv(MEMORY_ENV, str(need_one // 2))
    with pytest.raises(Exception) as e:
        check(path, PROMPTS[:1])
    assert "not enough memory" in str(e.value) and "GiB" in str(e.value)


@pytest.mark.parametrize("kind,fmt", [("llama2", "meta"), ("llama32", "hf"), ("qwen2", "hf-sharded"), ("qwen2", "gguf")])
def test_layer_by_layer_gives_the_same_verdict(tmp_path, kind, fmt):
    """One decoder layer of each side at a time (for models too big to hold): same points
    compared, same end-to-end logits as with both models in memory."""
    path = write_tiny(kind, fmt, tmp_path / "m")
    together = check(path, PROMPTS[:2])
    layers = check(path, PROMPTS[:2], mode="layer by layer")
    assert layers.mode == "layer by layer" and layers.ok, layers.table()
    for a, b in zip(together.prompts, layers.prompts):
        assert [d.name for d in a.points] == [d.name for d in b.points]
        assert b.logits_max_diff <= 1e-4 and abs(a.logits_max_diff - b.logits_max_diff) <= 1e-5
        assert b.cached_max_diff is None  # not compared in this mode, and the table says so
    assert any("not compared in this mode" in n for n in layers.notes)
    # transformers reads safetensors one tensor at a time itself; other formats get ours.
    assert any("not the file reading" in n for n in layers.notes) == (not fmt.startswith("hf"))


def test_layer_by_layer_reads_a_single_safetensors_file_of_another_name(tmp_path):
    """The loader takes a folder's one .safetensors file whatever its name; so must the
    layer-by-layer reader of transformers' side (it looked for model.safetensors only)."""
    path = write_tiny("llama32", "hf", tmp_path / "m")
    (path / "model.safetensors").rename(path / "weights.safetensors")
    layers = check(path, PROMPTS[:1], mode="layer by layer")
    assert layers.mode == "layer by layer" and layers.ok, layers.table()
    assert layers.prompts[0].logits_max_diff <= 1e-4


# ---------------------------------------------------------------------------------------
# Planted faults: the report must name the layer and hook point where they were planted
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    """A Llama-3.2-shaped model with 4 layers (so that layer 2 is in the middle)."""
    return write_tiny("llama32", "hf", tmp_path_factory.mktemp("four"), num_hidden_layers=4)


def test_healthy_four_layer_model_passes(four_layers):
    report = check(four_layers, PROMPTS)
    assert report.ok, report.table()


@pytest.mark.parametrize("hook,weight", [("attention.k", "wk"), ("feed_forward.up", "w3"), ("attention.out", "wo")])
def test_scaled_weight_in_layer_2(four_layers, hook, weight):
    """A weight matrix scaled by 1.05 (no bias here: scaling the product scales the weight)."""
    report = check(four_layers, PROMPTS, intervene={f"layers.2.{hook}": lambda v: v * 1.05})
    d = report.first_divergence
    assert d is not None, report.table()
    assert (d.point, d.layer, d.hook) == (f"layers.2.{hook}", 2, hook)
    assert weight in d.culprit
    assert d.jump > 100  # a fault jumps at one place; rounding does not
    assert report.exit_code == 1 and "model" in report.problem_kinds and "tokenizer" not in report.problem_kinds
    # Everything before it agreed (the report's table shows it, the JSON too).
    for p in report.prompts:
        before = [x for x in p.points if x.layer is not None and x.layer < 2]
        assert before and all(x.within for x in before)


def test_layer_by_layer_finds_a_fault_and_is_chosen_when_one_copy_does_not_fit(four_layers, monkeypatch):
    from weights.checkpoint import MEMORY_ENV

    estimate = check(four_layers, PROMPTS[:1]).memory
    assert estimate["layerwise_bytes"] < min(estimate["ours_bytes"], estimate["reference_bytes"])
    monkeypatch.setenv(MEMORY_ENV, str(estimate["layerwise_bytes"]))
    report = check(four_layers, PROMPTS[:1], intervene={"layers.2.feed_forward.up": lambda v: v * 1.05})
    assert report.mode == "layer by layer"
    d = report.first_divergence
    assert d is not None and d.point == "layers.2.feed_forward.up", report.table()
    # Each layer got transformers' input: the layers after the fault agree again.
    later = [x for x in report.prompts[0].points if x.layer == 3]
    assert later and all(x.within for x in later)


def _rotate_one_more_position(model):
    """Edit q_rot / k_rot (B, T, heads, Hd) as if every position were one too far."""
    step = model.freqs_cis[1]  # (Hd/2,) complex: the rotation by one position

    def shift(value):
        pairs = torch.view_as_complex(value.float().reshape(*value.shape[:-1], -1, 2))  # (B, T, h, Hd/2)
        return torch.view_as_real(pairs * step).flatten(3).type_as(value)

    return shift


def test_rope_position_off_by_one(four_layers):
    from weights import load_model

    shift = _rotate_one_more_position(load_model(four_layers))
    report = check(four_layers, PROMPTS, intervene={"layers.*.attention.q_rot": shift, "layers.*.attention.k_rot": shift})
    d = report.first_divergence
    assert d is not None and (d.point, d.layer) == ("layers.0.attention.q_rot", 0), report.table()
    assert d.last_agreeing == "layers.0.attention.v"  # q and k before RoPE still agree
    assert "RoPE" in d.culprit
    # Shifting queries and keys alike leaves q.k unchanged (RoPE is relative), so the
    # logits barely move: only the point-by-point comparison can see this fault.
    assert report.max_logits_diff <= 1e-4
    assert report.exit_code == 1


def _wrong_eps(model, layer: int, eps: float):
    """Recompute layers.{layer}.ffn_norm from its input with another eps."""
    seen = {}
    weight = model.layers[layer].ffn_norm.weight

    def keep(value):
        seen["x"] = value
        return value

    def norm(value):
        x = seen["x"].float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).type_as(value) * weight

    return {f"layers.{layer}.resid_mid": keep, f"layers.{layer}.ffn_norm": norm}


def test_wrong_norm_eps(four_layers):
    from weights import load_model

    model = load_model(four_layers)
    assert model.args.norm_eps == 1e-5
    report = check(four_layers, PROMPTS, intervene=_wrong_eps(model, 1, 1e-2))
    d = report.first_divergence
    assert d is not None and (d.point, d.layer, d.hook) == ("layers.1.ffn_norm", 1, "ffn_norm"), report.table()
    assert d.last_agreeing == "layers.1.resid_mid"
    assert "eps" in d.culprit
    assert report.exit_code == 1


def test_rope_scaling_transformers_ignores(tmp_path):
    """A Llama 3.2 GGUF with llama.cpp's rope_freqs tensor: we read the llama3 scaling from
    it, transformers 5 ignores it (a real difference, in transformers). The config check
    names it, and the point-by-point check finds it first at layer 0's q_rot, with the
    config difference as evidence."""
    path = write_tiny("llama32", "gguf", tmp_path / "rf", rope_freqs=True)
    report = check(path, PROMPTS[:1])
    labels = {c.label: c for c in report.config_diffs}
    assert "RoPE scaling" in labels, report.table()
    assert labels["RoPE scaling"].ours.startswith("llama3(factor=32") and labels["RoPE scaling"].theirs == "default"
    d = report.first_divergence
    assert d is not None and d.point == "layers.0.attention.q_rot" and "RoPE" in d.culprit
    assert any("RoPE scaling" in e for e in d.evidence)
    assert {"config", "model"} <= set(report.problem_kinds) and report.exit_code == 1


# ---------------------------------------------------------------------------------------
# Tokenizer problems are the tokenizer's, not the model's
# ---------------------------------------------------------------------------------------


def test_swapped_ids_in_our_tokenizer_copy(tmp_path):
    from tokenizer import load_tokenizer
    from transformers import AutoTokenizer

    path = write_tiny("llama2", "hf", tmp_path / "m")
    # Our copy of tokenizer.json with the ids of the first two tokens of a prompt swapped.
    copy = tmp_path / "our-tokenizer"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(path / name, copy / name)
    a, b = AutoTokenizer.from_pretrained(path)("The capital")["input_ids"][:2]
    data = json.loads((copy / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    ta, tb = (t for t, i in vocab.items() if i == a), (t for t, i in vocab.items() if i == b)
    ta, tb = next(ta), next(tb)
    vocab[ta], vocab[tb] = b, a
    (copy / "tokenizer.json").write_text(json.dumps(data))

    report = check(path, PROMPTS, tokenizer=load_tokenizer(copy))
    assert report.problem_kinds == ["tokenizer"], report.table()
    bad = report.tokenizer.mismatches
    assert bad and bad[0].text == PROMPTS[0]
    assert "same length, different ids" in bad[0].note
    # The models were fed the same (our) ids and agree: no model problem is reported.
    assert report.first_divergence is None
    assert all(p.logits_max_diff <= 1e-4 for p in report.prompts)
    assert report.exit_code == 1
    assert "tokenize differently" in report.table()


# ---------------------------------------------------------------------------------------
# Bad input, and what transformers cannot do
# ---------------------------------------------------------------------------------------


def test_missing_path(tmp_path, capsys):
    from llama.parity import ParityInputError

    with pytest.raises(ParityInputError, match="does not exist"):
        check(tmp_path / "nope")
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_folder_that_is_no_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main([str(tmp_path)]) == 2
    assert "no recognisable checkpoint" in capsys.readouterr().err


def test_prompt_that_tokenizes_to_nothing(tmp_path, capsys):
    path = write_tiny("llama2", "hf", tmp_path / "m")  # this tokenizer adds no BOS
    assert main([str(path), "--prompt", ""]) == 2
    assert "tokenizes to no tokens" in capsys.readouterr().err


def test_bad_tolerance(tmp_path, capsys):
    path = write_tiny("llama2", "hf", tmp_path / "m")
    assert main([str(path), "--tol", "0"]) == 2
    assert "--tol must be a positive number" in capsys.readouterr().err


def test_transformers_cannot_load_the_model(tmp_path, monkeypatch):
    """As an older transformers says of a GGUF architecture it does not know: the report
    says so, and still checks our model on its own and the tokenizer."""
    from transformers import AutoModelForCausalLM

    path = write_tiny("qwen2", "gguf", tmp_path / "g")

    def refuse(*args, **kwargs):
        raise ValueError("GGUF model with architecture qwen2 is not supported yet.")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    report = check(path, PROMPTS)
    assert report.mode == "ours only"
    assert "not supported yet" in report.reference_error
    assert report.problem_kinds == ["reference"] and report.exit_code == 1
    # What could be checked was: the tokenizer, and our KV cache against our full forward.
    assert report.tokenizer.available and not report.tokenizer.mismatches
    assert all(p.cached_self_diff <= 1e-4 and p.logits_max_diff is None for p in report.prompts)
    assert any("checked without transformers" in n for n in report.notes)
    assert "transformers could not be compared" in report.table()


def test_transformers_not_installed(tmp_path, monkeypatch, capsys):
    path = write_tiny("llama2", "hf", tmp_path / "m")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "pip install" in err and "transformers" in err


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


def test_cli_pass_table_and_json(tmp_path, capsys):
    path = write_tiny("qwen2", "gguf", tmp_path / "g")
    out = tmp_path / "report.json"
    assert main([str(path), "--prompt", "The capital of France is", "--prompt", "1 + 1 =", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "PASS: everything within tolerance (exit 0)" in table and "first divergence: none" in table
    assert "layer by layer" in table and "give the same ids as transformers' tokenizer" in table
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["exit_code"] == 0 and data["format"] == "gguf"
    assert [p["text"] for p in data["prompts"]] == ["The capital of France is", "1 + 1 ="]
    assert data["max_logits_diff"] <= 1e-4
    assert data["prompts"][0]["points"][0]["name"] == "tok_embeddings"
    assert all(pt["within"] for p in data["prompts"] for pt in p["points"])


def test_cli_fail_exit_1(tmp_path, capsys):
    path = write_tiny("llama32", "gguf", tmp_path / "rf", rope_freqs=True)  # see the RoPE scaling test
    out = tmp_path / "r.json"
    assert main([str(path), "--prompt", "Hello", "--json", str(out)]) == 1
    assert "FAIL (exit 1)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["problems"][0]["kind"] == "config"
