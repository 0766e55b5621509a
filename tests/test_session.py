"""llama.session.Session driven with no terminal at all: the REPL's table on the default
model, the KV-cache bookkeeping (extend, back, pick, interrupted and stopped generation,
verify), the sampled view of the table, and several Sessions sharing one model (one after
another, interleaved, and from threads) giving exactly what a Session alone gives.

The cache tests use a tiny random model with SmolLM2's real tokenizer (seconds); the
table test loads the real SmolLM2-135M-Instruct."""

import io
import threading

import pytest
import torch

from llama.generate import model_lock
from llama.model import Transformer
from llama.session import Generation, Session, SessionError, Settings, TextTooLong
from real_models import SMOLLM2_GGUF, needs_smollm2
from test_repl_session import CONTEXT, Calls, full_logits, model, table_rows, tok  # noqa: F401

pytestmark = [needs_smollm2, pytest.mark.usefixtures("one_thread")]
PROMPT = "The capital of France is"


def assert_matches_full(s: Session, model, tol=1e-4):
    """The session's logits are those of a fresh full forward over its ids."""
    expected = full_logits(model, s.ids)
    assert (s.logits - expected).abs().max().item() <= tol


# ----------------------------------------------------------------------------------
# The REPL's table, from the library
# ----------------------------------------------------------------------------------


def test_table_on_the_default_model_is_the_repls(tok):
    from scripts.repl import Repl
    from weights import load_model

    model = load_model(SMOLLM2_GGUF)
    s = Session(model, tok)
    change = s.set_text(PROMPT)
    assert [(t.piece, t.id) for t in change.added] == [
        ("The", 504), (" capital", 3575), (" of", 282), (" France", 4649), (" is", 314)]
    top = change.table.rows[0]
    assert (top.rank, top.piece, top.id, round(top.prob, 4)) == (1, " Paris", 7042, 0.7725)
    assert len(change.table.rows) == 10 and change.table.position == 4
    # The REPL over the same model (its own Session) prints exactly these rows.
    out = io.StringIO()
    Repl(model, tok, out=out).handle(PROMPT)
    printed = table_rows(out.getvalue())
    assert printed == [(r.rank, repr(r.piece), round(r.prob, 4), r.id) for r in change.table.rows]
    # Greedy: the top candidate is drawn with certainty, the others never.
    assert [r.sample_prob for r in change.table.rows] == [1.0] + [0.0] * 9


# ----------------------------------------------------------------------------------
# Cache bookkeeping
# ----------------------------------------------------------------------------------


def test_extend_back_pick_reuse_the_cache(model, tok):
    s = Session(model, tok)
    n = len(tok.encode("The capital of France"))
    with Calls(model) as rec:
        a = s.set_text("The capital of France")
        b = s.extend(" is")  # one new token
        c = s.pick(2)  # one decode step
        d = s.back(2)  # rewind: reruns only the last kept token
        e = s.set_text("The capital of Spain is")  # an edit: back to the common prefix
    assert rec.calls == [(n, 0), (1, n), (1, n + 1), (1, n - 1), (2, n - 1)]
    assert (a.kept, b.kept, c.kept, d.kept, e.kept) == (0, n, n + 1, n, n - 1)
    assert [t.id for t in c.added] == [b.table.rows[1].id]
    assert d.added == () and d.n_tokens == n
    assert_matches_full(s, model)
    v = s.verify()
    assert v.ok and v.same_top1 and v.n_tokens == len(s.ids) and v.max_abs_diff <= 1e-4


def test_generation_streams_then_adds_its_tokens(model, tok):
    s = Session(model, tok)
    s.set_text("Once upon a time")
    n = len(s.ids)
    run = s.generate(5)
    assert isinstance(run, Generation)
    steps = list(run)
    assert s.ids[n:] == [t.id for t in steps] == list(run.result.new_ids)
    assert run.result.reason == "max tokens" and run.result.seed is None
    assert run.result.change.kept == n and len(run.result.change.added) == 5
    ids = s.ids[:n]
    for t in s.ids[n:]:  # greedy: each token is the arg-max of a fresh full forward
        assert int(full_logits(model, ids).argmax()) == t
        ids = ids + [t]
    assert s.verify().ok


def test_an_interrupted_generation_keeps_what_it_made(model, tok):
    s = Session(model, tok)
    s.set_text("Once upon a time")
    n = len(s.ids)
    with Calls(model, interrupt_at=4):  # the 4th forward pass raises KeyboardInterrupt
        result = _drain(s.generate(10))
    assert result.reason == "interrupted" and len(result.new_ids) == 3
    assert len(s.ids) == n + 3
    assert_matches_full(s, model)
    assert s.verify().ok


def test_closing_or_stopping_a_generation_leaves_a_consistent_text(model, tok):
    s = Session(model, tok)
    s.set_text("Once upon a time")
    n = len(s.ids)
    run = s.generate(20)
    next(run), next(run)
    with pytest.raises(SessionError, match="a generation is running"):
        s.set_text("something else")
    run.close()
    assert run.result.reason == "closed" and len(s.ids) == n + 2
    assert_matches_full(s, model)
    # A stop event (a stop button on another thread) ends it after the current token.
    stop = threading.Event()
    run = s.generate(20, stop=stop)
    next(run)
    stop.set()
    assert list(run) == [] and run.result.reason == "stopped"
    assert len(s.ids) == n + 3 and s.verify().ok
    # A Generation created but never started holds nothing.
    s.generate(3)
    s.back(1)


def test_text_too_long_then_truncate(model, tok):
    s = Session(model, tok)
    text = "one two three four five six seven eight nine ten " * 8
    ids = tok.encode(text)
    with pytest.raises(TextTooLong) as e:
        s.set_text(text)
    assert (e.value.n_tokens, e.value.limit) == (len(ids), CONTEXT) and s.ids == []
    change = s.truncate()
    assert s.ids == ids[-CONTEXT:] and change.n_tokens == CONTEXT
    with pytest.raises(SessionError, match="the context is full"):
        s.generate(1)


def test_the_table_shows_the_sampling_distribution(model, tok):
    s = Session(model, tok, Settings(show=6))
    s.set_text(PROMPT)
    s.set("temperature", "0.7")
    s.set("top_k", 3)
    table = s.table
    assert (table.temperature, table.top_k, table.top_p) == (0.7, 3, None)
    logits = s.logits.float()
    raw = torch.softmax(logits, -1)
    ids = [r.id for r in table.rows]
    assert ids == torch.argsort(raw, descending=True)[:6].tolist()
    assert [r.prob for r in table.rows] == pytest.approx(raw[ids].tolist(), rel=1e-6)
    hot = torch.softmax(logits / 0.7, -1)[ids[:3]]  # kept by top_k, renormalised
    assert [r.sample_prob for r in table.rows] == pytest.approx((hot / hot.sum()).tolist() + [0.0] * 3, abs=1e-6)
    with pytest.raises(SessionError, match="temperature must be"):
        s.set("temperature", -1)
    with pytest.raises(SessionError, match="unknown setting 'volume'"):
        s.set("volume", 11)


def test_lens_and_views_come_from_the_session(model, tok):
    s = Session(model, tok)
    s.set_text(PROMPT)
    report = s.lens(k=3)
    assert [st.label for st in report.stages] == ["embeddings", "layers.0", "layers.1"]
    last = report.stages[-1].candidates
    assert [r.id for r in last] == [r.id for r in s.table.rows[:3]]
    assert [r.prob for r in last] == pytest.approx([r.prob for r in s.table.rows[:3]], abs=1e-5)
    view = s.view("attention", layer=-1, head=2)
    assert view.hooks == ["layers.1.attention.probs"] and view.options["layer"] == 1
    assert view.tokens.ids == s.ids and view.data.probs[1].shape == (4, 5, 5)
    assert_matches_full(s, model)
    s.pick(1)  # the cache is still the session's after the captures
    assert_matches_full(s, model)


def test_lens_reads_the_last_position_when_the_cache_was_lost(model, tok):
    """After another Session ran the model (or an experiment reset the cache), the lens
    reruns the whole text: it must still decode the last position, not the first."""
    s = Session(model, tok)
    s.set_text(PROMPT)
    other = Session(model, tok)
    other.set_text("a different text entirely")  # the model's cache is now the other's
    report = s.lens(k=3)
    last = report.stages[-1].candidates
    assert [r.id for r in last] == [r.id for r in s.table.rows[:3]]
    assert [r.prob for r in last] == pytest.approx([r.prob for r in s.table.rows[:3]], abs=1e-5)
    assert report.lens.ranked_ids.shape == (model.args.n_layers + 1, 1, 3)
    assert [st.hook for st in report.stages] == ["tok_embeddings", "layers.0.resid_post", "layers.1.resid_post"]


# ----------------------------------------------------------------------------------
# Several Sessions on one model
# ----------------------------------------------------------------------------------


def _drain(run: Generation):
    for _ in run:
        pass
    return run.result


TEXTS = {"a": ("Once upon a time", "Once upon a midnight dreary"),
         "b": ("In a hole in the ground", "In a galaxy far away")}


def _script(s: Session, step: int, who: str):
    """Step `step` of a fixed sequence of edits; (a copy of the logits, the ids) after it."""
    first, last = TEXTS[who]
    if step == 0:
        s.set_text(first)
    elif step == 1:
        s.extend(" there was")
    elif step == 2:
        s.pick(3)
    elif step == 3:
        _drain(s.generate(4))
    elif step == 4:
        s.back(2)
    elif step == 5:
        s.set_text(last)
    return s.logits.clone(), s.ids


def test_interleaved_sessions_match_a_session_alone(model, tok):
    expected = {}
    for who in TEXTS:
        alone = Session(model, tok)
        expected[who] = [_script(alone, i, who) for i in range(6)] + [_script(alone, 2, who)]
    a, b = Session(model, tok), Session(model, tok)
    got = {"a": [], "b": []}
    for i in range(6):  # a and b take turns: each overwrites the other's KV cache
        got["a"].append(_script(a, i, "a"))
        got["b"].append(_script(b, i, "b"))
    # and a generation of b that a cuts into between b's tokens
    run = b.generate(4)
    next(run)
    got["a"].append(_script(a, 2, "a"))
    assert len(_drain(run).new_ids) == 4
    for who in TEXTS:
        for (logits, ids), (want, want_ids) in zip(got[who], expected[who]):
            assert ids == want_ids
            # Prefilled again after the other's turn, or step by step alone: float32 rounding.
            assert (logits - want).abs().max().item() <= 1e-4
            assert logits.topk(10).indices.tolist() == want.topk(10).indices.tolist()
    assert_matches_full(a, model)
    a.ctx.forget()
    assert_matches_full(b, model)


def test_sessions_on_threads_share_one_model(model, tok):
    prompts = ["Once upon a time", "The capital of France is", "1, 2, 3, 4,"]
    alone = {}
    for p in prompts:
        s = Session(model, tok)
        s.set_text(p)
        _drain(s.generate(6))
        alone[p] = s.ids
    results, errors = {}, []

    def work(p):
        try:
            s = Session(model, tok)
            for _ in range(2):  # twice, so the threads' steps interleave
                s.set_text(p)
                _drain(s.generate(6))
            results[p] = s.ids
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and results == alone


def test_model_lock_is_one_per_model(model, tok):
    assert model_lock(model) is Session(model, tok).ctx.lock is model_lock(model)
    other = Transformer(model.args)
    assert model_lock(other) is not model_lock(model)
