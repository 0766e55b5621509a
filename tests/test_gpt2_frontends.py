"""The front ends on a GPT-2 checkpoint, unchanged: every llama-plot kind (from the model
and from a capture file), llama-explain (library and command line), llama.session's lens
and llama-repl's piped mode.

The checkpoint is a tiny random GPT-2 (GPT-2 small's shape, scaled down) saved by
transformers' save_pretrained, with the vocab.json + merges.txt of a byte-level BPE trained
in GPT-2's shape beside it (tests/gpt2_models.py: write_gpt2_with_tokenizer). What each
front end prints is checked against the model itself: the lens's last stage is the model's
own top-1, the summary counts num_params(), the walkthrough's numbers are the captured
intermediates and its source lines are llama/gpt2.py's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2_models import write_gpt2_with_tokenizer
from llama.analysis import VIEW_KINDS
from llama.gpt2 import GPT2, GPT2Config
from llama.hooks import load_capture
from test_explain import CharTokenizer, check_printed_values, check_source_lines, reference_capture

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"
GPT2_SOURCE = (ROOT / "llama" / "gpt2.py").read_text(encoding="utf-8").splitlines()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_gpt2_with_tokenizer(tmp_path_factory.mktemp("gpt2-front"))


@pytest.fixture(scope="module")
def loaded(folder):
    from tokenizer import load_tokenizer
    from weights import load_model

    return load_model(folder), load_tokenizer(folder)


def own_prediction(model, tok, text: str = PROMPT) -> tuple[int, float]:
    """The model's own top-1 next token after `text` and its probability (one full pass)."""
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([tok.encode(text)]))[0, -1], -1)
    model.reset_cache()
    return int(probs.argmax()), float(probs.max())


# ---------------------------------------------------------------------------------------
# llama-plot
# ---------------------------------------------------------------------------------------

GPT2_KINDS = [k for k, v in VIEW_KINDS.items() if v.applies_to("gpt2")]


@pytest.mark.parametrize("kind", GPT2_KINDS)
def test_llama_plot_draws_every_gpt2_kind(kind, folder, tmp_path, capsys):
    from scripts.plot import main

    out = tmp_path / f"{kind}.png"
    rc = main([kind, "--model", str(folder), "--prompt", PROMPT, "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 3000


def test_llama_plot_rope_on_gpt2_says_why_and_what_instead(folder, tmp_path, capsys):
    from scripts.plot import main

    assert "rope" not in GPT2_KINDS and "positions" in GPT2_KINDS and "embeddings" in GPT2_KINDS
    rc = main(["rope", "--model", str(folder), "-o", str(tmp_path / "rope.png")])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "rope.png").exists()
    assert "GPT-2 has no rotary position embedding" in err and "llama-plot positions" in err


def test_summary_text_counts_the_model(folder, loaded, capsys):
    from scripts.plot import main

    model, _ = loaded
    assert main(["summary", "--text", "--model", str(folder)]) == 0
    text = capsys.readouterr().out
    total = re.search(r"^  total +([\d,]+)", text, re.M)
    assert total and int(total[1].replace(",", "")) == model.num_params()
    assert "LayerNorm, eps 1e-05" in text and "position embedding" in text and "rope" not in text


def test_llama_plot_from_a_gpt2_capture_file(folder, loaded, tmp_path, capsys):
    """An export of a GPT-2 run is drawn without the model (its config is rebuilt as a
    GPT2Config from the file); lens adds the model for the final norm and output."""
    from llama.session import Session
    from scripts.plot import main

    model, tok = loaded
    s = Session(model, tok, name="tiny-gpt2")
    s.set_text(PROMPT)
    export = s.export(tmp_path / "run.safetensors")
    cap = load_capture(export.path)
    assert cap.context["family"] == "gpt2" and list(cap.tensors) == model.hook_names()
    for kind, v in VIEW_KINDS.items():
        if not (v.from_capture and v.applies_to("gpt2")):
            continue
        out = tmp_path / f"from-{kind}.png"
        extra = ["--model", str(folder)] if v.uses_weights else []
        rc = main([kind, "--from", str(export.path), "-o", str(out), *extra])
        assert rc == 0, (kind, capsys.readouterr().err)
        assert out.read_bytes()[:8] == PNG, kind
    assert main(["summary", "--text", "--from", str(export.path)]) == 0
    assert f"{model.num_params():,}" in capsys.readouterr().out  # counted from the GPT2Config


# ---------------------------------------------------------------------------------------
# llama-explain
# ---------------------------------------------------------------------------------------

# What the line behind each GPT-2-only source label must compute (the shared labels are
# checked against llama/model.py by tests/test_explain.py; here against llama/gpt2.py).
GPT2_LINE_MUST_CONTAIN = {
    "token lookup": "self.tok_embeddings(tokens)",
    "position lookup": "self.pos_embeddings(positions)",
    "token + position": "tok + pos",
    "attention_norm": "self.attention_norm(x)",
    "ffn_norm": "self.ffn_norm(h)",
    "final norm": "self.norm(h)",
    "inside LayerNorm": "torch.rsqrt(var + self.eps)",
    "q, k, v = wqkv(x)": "self.wqkv(x).split(D",
    "query": "q.view(",
    "key": "k.view(",
    "value": "v.view(",
    "scores": "q @ k.transpose",
    "add the mask": "scores + mask",
    "mask for this call": "causal_mask(T, start_pos",
    "softmax": "F.softmax(scores",
    "probs @ v": "probs @ v",
    "fused path": "scaled_dot_product_attention",
    "back to (B, T, H, Hd)": "out.transpose(1, 2)",
    "wo": "self.wo(",
    "x + attention": "x + self.attention(",
    "up = w1(x)": "self.w1(x)",
    "gelu(up)": 'F.gelu(up, approximate="tanh")',
    "down = w2(act)": "self.w2(act)",
    "h + feed_forward": "h + self.feed_forward(",
    "logits": "self.output(h)",
}
SOURCE = re.compile(r"^  (.+?): +(\S+):(\d+) +(.*)$")


def tiny_gpt2_model() -> GPT2:
    torch.manual_seed(0)
    m = GPT2(GPT2Config(vocab_size=97, n_positions=64, n_embd=64, n_layer=3, n_head=8))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_((1 + 0.3 * torch.randn_like(p)) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
            else:
                p.normal_(0, 0.1)
    return m.eval()


def gpt2_source_lines(text: str) -> list[tuple[str, int, str]]:
    out = []
    for line in text.splitlines():
        m = SOURCE.match(line)
        if m and m[2] == "llama/gpt2.py":
            out.append((m[1], int(m[3]), m[4]))
    return out


def test_walkthrough_on_gpt2():
    model = tiny_gpt2_model()
    tok = CharTokenizer()
    ids = tok.encode(PROMPT)
    from llama.explain import render, walkthrough

    w = walkthrough(model, tok, PROMPT, layers=[0, 2], head=5, n_tokens=5)
    text = render(w)
    _, cache = reference_capture(model, ids, text)
    seen = check_printed_values(text, model, cache, len(ids))
    # Every hook point of the chosen layers, and the input's three, is printed with numbers.
    for L in (0, 2):
        for name in model.hook_names():
            if name.startswith(f"layers.{L}."):
                assert name in seen, f"{name} is never printed"
    assert {"tok_embeddings", "pos_embeddings", "embeddings", "norm", "logits",
            "layers.0.attention_norm.bias", "causal_mask", "weighted_sum"} <= seen
    assert not any(n.startswith("layers.1.attention") for n in seen)

    check_source_lines(text)  # each printed file:line is that line of that file
    lines = gpt2_source_lines(text)
    assert len(lines) == 2 * 21 + 6  # 21 lines per block; input 3, final norm 2, logits 1
    for label, lineno, shown in lines:
        assert shown.startswith(GPT2_SOURCE[lineno - 1].strip())
        assert label in GPT2_LINE_MUST_CONTAIN, f"no expectation for source label {label!r}"
        assert GPT2_LINE_MUST_CONTAIN[label] in shown, f"{label}: llama/gpt2.py:{lineno} is {shown!r}"
    # GPT-2's own stages, and none of Llama's.
    titles = [s.title for s in w.stages]
    assert "Embeddings: token + position" in titles and "Final LayerNorm" in titles
    assert "Layer 0: GELU MLP" in titles and "Layer 0: LayerNorm before attention" in titles
    assert not any("RoPE" in t or "SwiGLU" in t or "RMSNorm" in t for t in titles)
    assert "RoPE pair" not in text and "source: " in text and text.count("llama/model.py:") == 2  # causal_mask
    # The top-5 is the model's own softmax.
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids]))[0, -1].double(), -1)
    model.reset_cache()
    top = re.findall(r"^ +1 +(\d+) +([\d.]+) ", text, re.M)
    assert top and int(top[0][0]) == int(probs.argmax())
    assert float(top[0][1]) == pytest.approx(float(probs.max()), abs=1e-4)


def test_walkthrough_refuses_a_rope_pair_on_gpt2():
    from llama.explain import ExplainError, walkthrough

    with pytest.raises(ExplainError, match="GPT-2 has no rotary position embedding.*--pair"):
        walkthrough(tiny_gpt2_model(), CharTokenizer(), "abc", pair=1)


def test_llama_explain_command_on_a_gpt2_folder(folder, loaded, capsys):
    from scripts.explain import main

    model, tok = loaded
    assert main([PROMPT, "--model", str(folder), "--layer", "-1"]) == 0
    text = capsys.readouterr().out
    assert f"source: {ROOT / 'llama' / 'gpt2.py'}" in text
    assert "Layer 2: GELU MLP" in text and "Embeddings: token + position" in text
    assert len(gpt2_source_lines(text)) == 21 + 6
    best, p = own_prediction(model, tok)
    row = re.search(r"^ +1 +(\d+) +([\d.]+) ", text, re.M)
    assert int(row[1]) == best and float(row[2]) == pytest.approx(p, abs=1e-4)


# ---------------------------------------------------------------------------------------
# The session and llama-repl
# ---------------------------------------------------------------------------------------


def test_session_lens_reads_the_embeddings_hook(loaded):
    from llama.session import Session

    model, tok = loaded
    s = Session(model, tok)
    s.set_text(PROMPT)
    report = s.lens(k=2)
    hooks = [stage.hook for stage in report.stages]
    assert hooks == ["embeddings"] + [f"layers.{i}.resid_post" for i in range(model.args.n_layers)]
    best, p = own_prediction(model, tok)
    last = report.stages[-1].candidates[0]
    assert last.id == best and last.prob == pytest.approx(p, abs=1e-5)
    for kind in ("attention", "pca", "embeddings", "positions", "activations"):
        assert s.view(kind).kind == kind  # the REPL's and the studio's views, through the session


def test_repl_piped_on_gpt2(folder, loaded, tmp_path):
    model, tok = loaded
    lines = [PROMPT, ":lens", ":attn 1 2 " + str(tmp_path / "attn.png"), ":pca " + str(tmp_path / "pca.png"),
             ":export " + str(tmp_path / "run.safetensors"), ":gen 3", ":verify", ""]
    r = subprocess.run([sys.executable, "-m", "scripts.repl", "--model", str(folder), "--threads", "1"],
                       cwd=ROOT, input="\n".join(lines), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(rf"{folder.name}: 3 layers, 96 wide, vocab {model.args.vocab_size}, context 1024",
                     r.stderr + out)  # the banner
    best, p = own_prediction(model, tok)
    piece = tok.id_to_piece(best)
    # The table's first row and the lens's last stage are both the model's own top-1.
    first_row = re.search(r"^ +1\. (.+?) +([\d.]+) .*#(\d+)$", out, re.M)
    assert int(first_row[3]) == best and float(first_row[2]) == pytest.approx(p, abs=1e-4)
    lens = re.findall(r"^  (embeddings|layers\.\d+) +(.+)$", out, re.M)
    assert [name for name, _ in lens] == ["embeddings", "layers.0", "layers.1", "layers.2"]
    assert lens[-1][1].startswith(repr(piece)) and f"{p:.3f}" in lens[-1][1].split("  ")[0]
    assert (tmp_path / "attn.png").read_bytes()[:8] == PNG and (tmp_path / "pca.png").read_bytes()[:8] == PNG
    cap = load_capture(tmp_path / "run.safetensors")
    assert cap.context["family"] == "gpt2" and list(cap.tensors) == model.hook_names()
    assert cap.context["token_ids"] == tok.encode(PROMPT)
    assert torch.allclose(cap["embeddings"], cap["tok_embeddings"] + cap["pos_embeddings"])
    assert re.search(r"^KV cache OK: \d+ tokens", out, re.M) and "[3 tokens, greedy" in out
