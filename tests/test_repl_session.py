"""The REPL in-process (scripts.repl.Repl over a llama.session.Session): a tiny random
model with SmolLM2's real tokenizer, so every command, the KV-cache bookkeeping and Ctrl-C
handling are checked in seconds. (tests/test_repl.py drives the real command through a
terminal and a pipe; tests/test_session.py drives the Session with no terminal at all.)"""

import io
import re

import pytest
import torch

from llama.config import ModelArgs
from llama.generate import top_candidates
from llama.model import Transformer
from real_models import SMOLLM2_GGUF, needs_smollm2
from llama.session import Settings
from scripts.repl import Repl as Session, bar


GGUF = SMOLLM2_GGUF
pytestmark = [needs_smollm2, pytest.mark.usefixtures("one_thread")]
CONTEXT = 48


@pytest.fixture(scope="module")
def tok():
    from tokenizer import load_tokenizer

    return load_tokenizer(GGUF)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    args = ModelArgs(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
        ffn_hidden_dim=128, max_seq_len=CONTEXT, tie_embeddings=True,
    )
    m = Transformer(args).eval()
    with torch.no_grad():
        m.tok_embeddings.weight.normal_(0, 1.0)  # wide logits, so the tables have clear winners
        # Random final-norm weights (some negative) stop the tied model from simply
        # predicting its input token again, so continuations vary.
        m.norm.weight.normal_(0, 1.0)
    return m


@pytest.fixture
def session(model, tok):
    out = io.StringIO()
    s = Session(model, tok, Settings(), out=out)
    def take():
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text

    s.take = take
    return s


def full_logits(model, ids):
    """Next-token logits after ids from a fresh full forward (the cache is then reset)."""
    model.reset_cache()
    with torch.no_grad():
        out = model(torch.tensor([ids]))[0, -1]
    model.reset_cache()
    return out


def table_rows(text):
    """[(rank, piece_repr, prob, id)] from the printed next-token table."""
    rows = re.findall(r"^\s+(\d+)\. ('.*?'|\".*?\")\s+(\d\.\d{4}) [█▏▎▍▌▋▊▉ ]*#(\d+)$", text, re.M)
    return [(int(r), p, float(pr), int(i)) for r, p, pr, i in rows]


class Calls:
    """Records (tokens fed, start_pos) of every forward pass; can raise Ctrl-C at call n."""

    def __init__(self, model, interrupt_at=None):
        self.calls = []
        self.interrupt_at = interrupt_at
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.calls.append((args[0].shape[1], kwargs.get("start_pos", 0)))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def check_consistent(session, model):
    """The state invariant: logits belong to ids, and the cache agrees with a full run."""
    expected = full_logits(model, session.ids)
    assert (session.logits - expected).abs().max().item() <= 1e-4
    session.ctx.forget()  # full_logits reset the model's cache behind the context's back


# ----------------------------------------------------------------------------------


def test_text_shows_tokens_and_the_real_top_k(session, model, tok):
    ids = tok.encode("The capital of France is")
    expected = top_candidates(full_logits(model, ids), 10)
    session.handle("The capital of France is")
    out = session.take()
    first = out.splitlines()[0]
    assert first.startswith("tokens (5): 'The' 504 | ' capital' 3575")
    rows = table_rows(out)
    assert [r[3] for r in rows] == [c.id for c in expected]
    assert [r[2] for r in rows] == [round(c.prob, 4) for c in expected]
    assert [r[1] for r in rows] == [repr(tok.id_to_piece(c.id)) for c in expected]
    assert session.ids == ids


def test_bar():
    assert bar(0.7725, 0.7725) == "█" * 10
    assert bar(0.5, 1.0) == "█" * 5
    assert bar(0.05, 1.0) == "▌"  # half a block
    assert bar(0.0625, 1.0) == "▋"  # five eighths
    assert bar(0.0, 1.0) == ""


def test_cache_is_reused_across_lines_and_commands(session, model, tok):
    with Calls(model) as rec:
        session.handle("The capital of France")
        session.handle("The capital of France is")  # extends: one new token
        session.handle(":pick 2")  # one decode step
        session.handle(":back 2")  # rewinds: reruns only the last kept token
        session.handle("The capital of Spain is")  # edit: rewinds to the common prefix
    n = len(tok.encode("The capital of France"))
    assert rec.calls == [(n, 0), (1, n), (1, n + 1), (1, n - 1), (2, n - 1)]
    check_consistent(session, model)


def test_generation_streams_and_appends_with_one_step_per_token(session, model, tok):
    session.handle("Once upon a time")
    n = len(session.ids)
    session.take()
    with Calls(model) as rec:
        session.handle(":gen 6")
    out = session.take()
    assert "[6 tokens, greedy, stopped: max tokens" in out
    assert len(session.ids) == n + 6
    # The generate loop recomputes the last prompt token's logits once, then one step per
    # token; the table after it costs the last generated token's step.
    assert rec.calls == [(1, n - 1)] + [(1, n + i) for i in range(6)]
    generated = session.ids[n:]
    expected_text = tok.decode(generated)
    assert expected_text in out
    # greedy equals the arg-max of fresh full forwards
    ids = session.ids[:n]
    for t in generated:
        assert int(full_logits(model, ids).argmax()) == t
        ids = ids + [t]
    session.ctx.forget()


def test_seeded_sampling_reproduces(session):
    session.handle("Once upon a time")
    for cmd in (":set temperature 3", ":set seed 7", ":set top_p 0.95"):
        session.handle(cmd)
    session.handle(":gen 8")
    first = list(session.ids)
    session.handle(":back 8")
    session.handle(":gen 8")
    assert session.ids == first
    session.handle(":back 8")
    session.handle(":set seed 8")
    session.handle(":gen 8")
    assert session.ids != first


def test_ctrl_c_during_generation_keeps_a_consistent_state(session, model):
    session.handle("Once upon a time")
    n = len(session.ids)
    session.take()
    # forward calls in :gen: 1 = the last prompt token again, 2.. = generated tokens; the
    # 4th call is interrupted: three tokens were chosen (the third not yet fed).
    with Calls(model, interrupt_at=4):
        session.handle(":gen 10")
    out = session.take()
    assert "stopped: interrupted" in out
    assert len(session.ids) == n + 3
    assert f"+3 tokens ({n + 3})" in out
    check_consistent(session, model)
    session.handle(":verify")
    assert "KV cache OK" in session.take()


def test_ctrl_c_during_a_prefill_leaves_the_text_unchanged(session, model):
    session.handle("Once upon a time")
    before, logits = list(session.ids), session.logits.clone()
    with Calls(model, interrupt_at=1):
        session.handle("A completely different and longer text about the sea")
    assert "[interrupted]" in session.take()
    assert session.ids == before and torch.equal(session.logits, logits)
    session.handle(":pick 1")  # carries on from the old text, through a rewound cache
    assert session.ids[:-1] == before
    check_consistent(session, model)


@pytest.mark.parametrize(
    "line, message",
    [
        (":frobnicate", "unknown command ':frobnicate'"),
        (":gne 3", "Did you mean :gen?"),
        (":pick", ":pick needs one number"),
        (":pick 0", ">= 1"),
        (":pick 11", "the table has 10 candidates"),
        (":pick two", "whole number"),
        (":gen -3", ">= 1"),
        (":gen 3 4", "takes one number"),
        (":set temperature -1", "temperature must be"),
        (":set temperature hot", "temperature needs a number"),
        (":set top_p 1.5", "top_p must be"),
        (":set top_k 2.5", "top_k needs a number"),
        (":set seed -2", "seed must be"),
        (":set volume 11", "unknown setting 'volume'"),
        (":set temperature", ":set needs a name and a value"),
        (":chat maybe", "'on' or 'off'"),
        (":back 99", ":back can remove at most"),
        (":attn 99", "layer must be in 0..1"),
        (":attn 0 99", "head must be in 0..3"),
        (":attn 0 plot.jpg", "must end in .png"),
        (":export out.txt", "must end in .safetensors"),
        (":export x.safetensors layers.9.nothing", "nothing"),
        (":truncate", "nothing to truncate"),
        (':text "unbalanced', None),  # :text takes the raw rest of the line: not an error
        (":add", ":add needs the text"),
    ],
)
def test_bad_commands_get_clear_messages(session, line, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session.handle("Once upon a time")
    before = list(session.ids)
    session.take()
    assert session.handle(line) is True  # the REPL goes on
    out = session.take()
    if message is None:
        assert "error" not in out
        return
    assert out.startswith("error: "), out
    assert message in out
    assert session.ids == before  # a failed command changes nothing


def test_commands_before_any_text(session):
    for cmd in (":gen", ":pick 1", ":lens", ":tokens", ":back", ":verify", ":export"):
        session.handle(cmd)
        assert "there is no text yet" in session.take()


def test_text_longer_than_the_context_offers_truncation(session, model, tok):
    text = "one two three four five six seven eight nine ten " * 6
    ids = tok.encode(text)
    assert len(ids) > CONTEXT
    session.handle(text)
    out = session.take()
    assert f"The text is {len(ids)} tokens, but the model's context holds {CONTEXT}" in out
    assert ":truncate" in out and session.ids == []
    session.handle(":truncate")
    assert session.ids == ids[-CONTEXT:]
    check_consistent(session, model)
    session.handle(":gen 3")
    assert "the context is full" in session.take()


def test_interactive_truncation_question(model, tok):
    out = io.StringIO()
    asked = []
    s = Session(model, tok, out=out, interactive=True, confirm=lambda q: asked.append(q) or True)
    s.handle("word " * 60)
    assert asked == [f"Keep the last {CONTEXT} tokens? [y/N] "]
    assert len(s.ids) == CONTEXT


def test_lens_last_layer_equals_the_table(session, model, tok):
    session.handle("The capital of France is")
    top = session.candidates[0]
    session.take()
    session.handle(":lens")
    out = session.take().splitlines()
    assert out[0].startswith("logit lens after ' is'")
    assert [line.split()[0] for line in out[1:]] == ["embeddings", "layers.0", "layers.1"]
    last = out[-1].split()
    assert last[1] == repr(tok.id_to_piece(top.id)) and abs(float(last[2]) - top.prob) < 1e-3
    check_consistent(session, model)


def test_add_and_text_and_chat(session, tok):
    session.handle("The capital of France is")
    session.handle(":add  Paris, and")
    assert session.ids == tok.encode("The capital of France is Paris, and")
    session.handle(":text :) is a smiley")
    assert session.ids == tok.encode(":) is a smiley")
    session.handle(":chat on")
    session.handle("Hi")
    assert session.ids == tok.encode_chat([{"role": "user", "content": "Hi"}])
    assert tok.id_to_piece(session.ids[-1]) == "\n"


def test_export_and_plots(session, model, tmp_path):
    from llama.hooks import load_capture

    session.handle("The capital of France is")
    session.take()
    path = tmp_path / "act.safetensors"
    session.handle(f":export {path} layers.*.resid_post logits")
    assert "saved 3 tensors" in session.take()
    cap = load_capture(path)
    assert cap.context["token_ids"] == session.ids
    assert cap.tensors["layers.1.resid_post"].shape == (1, 5, 64)
    expected = full_logits(model, session.ids)
    assert (cap.tensors["logits"][0, -1] - expected).abs().max().item() <= 1e-4
    session.ctx.forget()
    pytest.importorskip("matplotlib")
    session.handle(f":attn 1 2 {tmp_path / 'head.png'}")
    session.handle(f":pca {tmp_path / 'pca.png'}")
    out = session.take()
    assert out.count("saved ") == 2, out
    assert (tmp_path / "head.png").stat().st_size > 1000
    assert (tmp_path / "pca.png").stat().st_size > 1000
    check_consistent(session, model)


def test_reset_and_quit(session, model):
    session.handle("The capital of France is")
    session.handle(":reset")
    assert session.ids == [] and model.cache_length == 0
    assert session.handle(":quit") is False
    assert session.handle(":q") is False


def test_fast_kernels_by_default_plain_on_request():
    from torch import nn

    from llama.speed import FastLinear
    from scripts.repl import build_parser, load

    for argv, expected in (([], FastLinear), (["--plain-kernels"], nn.Linear)):
        model, _, _ = load(build_parser().parse_args(argv))
        assert type(model.layers[0].feed_forward.w1) is expected, argv
