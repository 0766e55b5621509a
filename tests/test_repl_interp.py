"""The experiments in the REPL and the Session: :ablate, :patch, :dla, :steer print the
numbers llama.interp gives for the current text (tables parsed back from the output and
compared with the library called directly), bad input gets a usage message and changes
nothing, and the text, its logits and KV cache stay consistent afterwards. The same tiny
random model with SmolLM2's real tokenizer as tests/test_repl_session.py."""

from __future__ import annotations

import re

import pytest
import torch

from llama.generate import top_candidates
from llama.interp import (
    ablated_logits,
    attribution,
    logit_attribution,
    logit_diff_metric,
    patched_logits,
    patching,
    steered_generation,
    steering_topk,
    steering_vector,
)
from llama.session import Session as Engine
from llama.session import Settings
from real_models import needs_smollm2
from scripts.repl import COMMANDS
from test_repl_session import check_consistent, full_logits, model, session, tok  # noqa: F401 - fixtures

pytestmark = [needs_smollm2, pytest.mark.usefixtures("one_thread")]

CLEAN, CORRUPT = "The capital of France", "The capital of Italy"  # 4 tokens, the last differs
PIECE = r"('.*?'|\".*?\")"
ROW = rf"(\d+)\. {PIECE}\s+(\d\.\d{{4}}) #(\d+)"
PAIR = re.compile(rf"^\s+{ROW}\s+{ROW}$", re.M)


def two_tables(text):
    """The left and the right table printed side by side: [(id, prob)] each."""
    rows = PAIR.findall(text)
    assert rows, text
    return ([(int(r[3]), float(r[2])) for r in rows], [(int(r[7]), float(r[6])) for r in rows])


def table(logits, k=10):
    return [(c.id, round(c.prob, 4)) for c in top_candidates(logits, k)]


def top_of(model, ids):
    return int(full_logits(model, ids).argmax())


def start(session, text=CLEAN):
    session.handle(text)
    session.take()
    return list(session.ids), session.logits.clone()


def unchanged(session, model, ids, logits):
    """The experiment left the text, its logits and (after a prefill) the cache as they were."""
    assert session.ids == ids and torch.equal(session.logits, logits)
    session.handle(":verify")
    assert "KV cache OK" in session.take()
    check_consistent(session, model)


def test_the_commands_are_listed():
    assert {"ablate", "patch", "dla", "steer"} <= set(COMMANDS)


@pytest.mark.parametrize("line, heads, mode", [
    (":ablate 1 2 0 3", [(1, 2), (0, 3)], "zero"),
    (":ablate 1.2 -2.-1", [(1, 2), (0, 3)], "zero"),
    (":ablate 1 2 mean", [(1, 2)], "mean"),
])
def test_ablate_shows_the_library_table_beside_the_clean_one(session, model, tok, line, heads, mode):
    ids, logits = start(session)
    session.handle(line)
    out = session.take()
    names = ", ".join(f"L{L}.H{H}" for L, H in heads)
    assert out.startswith(f"{mode}-ablated {names}: "), out
    left, right = two_tables(out)
    ablated = ablated_logits(model, ids, heads, mode=mode)[0, -1]
    assert left == table(logits) and right == table(ablated)
    assert right != left  # the heads matter in this model
    top = left[0][0]
    after = float(torch.softmax(ablated, -1)[top])
    assert f"{left[0][1]:.4f} -> {after:.4f}" in out.splitlines()[0]
    unchanged(session, model, ids, logits)


def default_metric(model, tok, ids):
    """The REPL's default: the text's top token against the corrupted prompt's."""
    bad = tok.encode(CORRUPT)
    a, w = top_of(model, ids), top_of(model, bad)
    assert a != w
    return bad, logit_diff_metric(model, ids, bad, a, w, tokenizer=tok)


CELL = re.compile(r"^  layers\.(\d+)\s+(?:position (\d+)|head (\d+)|kv head (\d+) \(query heads (\d+)-(\d+)\))"
                  r".*?(-?\d+\.\d{3})$", re.M)


@pytest.mark.parametrize("site", ["resid_post", "resid_pre", "heads", "kv_heads"])
def test_patch_sweep_lists_the_library_top_cells(session, model, tok, site):
    ids, logits = start(session)
    bad, metric = default_metric(model, tok, ids)
    session.handle(f':patch "{CORRUPT}"' + ("" if site == "resid_post" else f" {site}"))
    out = session.take()
    assert f"patching {site} (" in out and metric.describe() in out
    want = patching(model, ids, bad, metric, site=site).top(5)
    cells = CELL.findall(out)
    assert len(cells) == len(want) == min(5, 2 * (4 if site in ("resid_post", "resid_pre", "heads") else 2)), out
    for (layer, pos, head, kv, q0, q1, score), (wl, wc, ws) in zip(cells, want):
        assert int(layer) == wl and int(pos or head or kv) == wc and float(score) == round(ws, 3)
        if kv:
            assert (int(q0), int(q1)) == (2 * wc, 2 * wc + 1)  # the query heads that share it
    lines = [line for line in out.splitlines() if line.startswith("  layers.")]
    for line, (_, col, _) in zip(lines, want):
        if site in ("resid_post", "resid_pre"):  # the two prompts' tokens at that position
            c, x = repr(tok.decode([ids[col]])), repr(tok.decode([bad[col]]))
            assert f"position {col:<3} {c}" + (f" / {x}" if c != x else "") in line, line
    unchanged(session, model, ids, logits)


@pytest.mark.parametrize("args, site, layer, where", [
    ("resid_post 1 3", "resid_post", 1, {"position": 3}),
    ("mlp_out 0", "mlp_out", 0, {}),  # every position of the layer
    ("heads -1 2", "heads", 1, {"head": 2}),
    ("kv_heads 0 1", "kv_heads", 0, {"head": 1}),
])
def test_patch_at_one_place_shows_the_patched_table(session, model, tok, args, site, layer, where):
    ids, logits = start(session)
    bad, metric = default_metric(model, tok, ids)
    session.handle(f':patch "{CORRUPT}" {args}')
    out = session.take()
    patched = patched_logits(model, ids, bad, site, layer, **where)
    left, right = two_tables(out)
    assert left == table(full_logits(model, bad)) and right == table(patched[0, -1])
    assert f"metric {metric(patched):.3f}" in out.splitlines()[0]
    unchanged(session, model, ids, logits)


def test_patch_with_given_answers(session, model, tok):
    ids, logits = start(session)
    bad = tok.encode(CORRUPT)
    session.handle(f':patch "{CORRUPT}" attn_out answer=" Paris" wrong=#7268')
    out = session.take()
    metric = logit_diff_metric(model, ids, bad, 7042, 7268, tokenizer=tok)
    assert metric.describe() in out
    top = patching(model, ids, bad, metric, site="attn_out").top(1)[0]
    assert re.search(rf"layers\.{top[0]}\s+position {top[1]} .* {top[2]:.3f}$", out, re.M), out


PART = re.compile(r"^  (\S+(?: others)?)\s+([+-]\d+\.\d{3})$", re.M)


@pytest.mark.parametrize("line, heads, target", [
    (":dla", False, None),  # all 5 parts of this 2-layer model: no "others"
    (":dla 2", False, None),
    (":dla 4 heads", True, None),
    (':dla 5 answer=" Paris" wrong=#7268', False, (7042, 7268)),
])
def test_dla_lists_the_largest_parts(session, model, tok, line, heads, target):
    ids, logits = start(session)
    session.handle(line)
    out = session.take()
    target = target or top_of(model, ids)
    parts = sorted(logit_attribution(model, ids, target, heads=heads).items(), key=lambda kv: -abs(kv[1]))
    n = int(line.split()[1]) if len(line.split()) > 1 and line.split()[1].isdigit() else 8
    shown = PART.findall(out)
    assert [name for name, _ in shown[:n]] == [name for name, _ in parts[:n]]
    assert [float(v) for _, v in shown[:n]] == [round(v, 3) for _, v in parts[:n]]
    if len(parts) > n:
        assert shown[n] == (f"{len(parts) - n} others", f"{sum(v for _, v in parts[n:]):+.3f}")
    assert len(shown) == min(n, len(parts)) + (len(parts) > n)
    logit = attribution(model, ids, target).logit
    assert f"logit {logit:.3f} = the sum of {len(parts)} parts" in out
    unchanged(session, model, ids, logits)


def test_steer_shows_the_steered_table_and_text(session, model, tok):
    ids, logits = start(session)
    session.handle(':steer " happy" " sad" 1 3 6')
    out = session.take()
    v = steering_vector(model, tok.encode(" happy"), tok.encode(" sad"), layer=1)
    cmp = steering_topk(model, ids, v, scale=3.0, k=10)
    left, right = two_tables(out)
    assert left == [(c.id, round(c.prob, 4)) for c in cmp.before]
    assert right == [(c.id, round(c.prob, 4)) for c in cmp.after]
    assert f"norm {v.norm:.3f}) added to layers.1.resid_post" in out
    run = steered_generation(model, ids, v, 3.0, 6, tokenizer=tok)
    assert "[steered continuation: 6 tokens, greedy]" in out
    assert out.endswith("]\n" + run.text + "\n")
    unchanged(session, model, ids, logits)


def test_session_steering_samples_with_the_session_settings(model, tok):
    s = Engine(model, tok, Settings(temperature=0.9, seed=11))
    s.set_text(CLEAN)
    report = s.steer(" happy", " sad", layer=0, scale=2.0, how="last", generate=8)
    v = steering_vector(model, tok.encode(" happy"), tok.encode(" sad"), layer=0, how="last")
    assert torch.equal(report.vector.vector, v.vector) and report.seed == 11
    want = steered_generation(model, s.ids, v, 2.0, 8, tokenizer=tok, temperature=0.9, seed=11)
    assert report.generation.ids == want.ids
    assert report.after.temperature == 0.9 and report.after.rows[0].sample_prob is not None


def test_session_reports_are_the_library_results(model, tok):
    s = Engine(model, tok)
    ids = s.set_text(CLEAN).table and s.ids
    bad, metric = default_metric(model, tok, ids)
    r = s.patch(CORRUPT, "kv_heads", top=3)
    assert torch.equal(r.result.scores, patching(model, ids, bad, metric, site="kv_heads").scores)
    assert [(c.layer, c.column) for c in r.top] == [(L, g) for L, g, _ in r.result.top(3)]
    assert r.top[0].query_heads == tuple(r.result.query_heads[r.top[0].column])
    d = s.dla(top=3)
    assert d.n_parts == len(d.attribution.parts()) and len(d.parts) == 3
    assert abs(sum(v for _, v in d.parts) + d.rest - d.attribution.logit) <= 1e-4
    a = s.ablate([(0, 0)], "mean")
    assert [r.id for r in a.ablated.rows] == [c[0] for c in table(ablated_logits(model, ids, [(0, 0)], "mean")[0, -1])]


@pytest.mark.parametrize(
    "line, message",
    [
        (":ablate", "usage: :ablate LAYER HEAD"),
        (":ablate 1", "usage: :ablate LAYER HEAD"),
        (":ablate 2 0", "layer must be in 0..1"),
        (":ablate 0 4", "head must be in 0..3"),
        (":ablate x y", "'x' is not a layer or a head"),
        (":patch", 'usage: :patch "CORRUPTED TEXT"'),
        (':patch "The capital"', "the clean prompt has 4 tokens but the corrupted prompt has 2"),
        (":patch The capital of Italy", "there is no patching site 'capital'"),
        (f':patch "{CORRUPT}" heads 1', "give the head"),
        (f':patch "{CORRUPT}" kv_heads 1 2', "kv head must be in 0..1"),
        (f':patch "{CORRUPT}" resid_post 1 9', "position must be in 0..3"),
        (f':patch "{CORRUPT}" resid_post 1 2 3', 'usage: :patch "CORRUPTED TEXT"'),
        (f':patch "{CORRUPT}" answer=" Parisians"', "is not a single token: it tokenizes to 2"),
        (f':patch "{CORRUPT}" colour=red', "unknown option colour=..."),
        (f':patch "{CLEAN}"', "give the wrong answer"),
        (":dla 0", "usage: :dla [N] [heads]"),
        (":dla all", "usage: :dla [N] [heads]"),
        (":dla answer=#99999", "token id 99999 is out of range"),
        (":steer a b", 'usage: :steer "PLUS" "MINUS" LAYER'),
        (':steer " happy" " sad" 5', "layer must be in 0..1"),
        (":steer a b 1 big", ":steer needs a number for SCALE, got 'big'"),
        (":steer a b 1 2 -3", ":steer needs a whole number >= 0 for N"),
        (":steer a b 1 2 3 how=max", "how must be 'mean'"),
        (':steer "" b 1', "the first steering prompt is empty"),
    ],
)
def test_bad_experiments_get_clear_messages(session, model, line, message):
    ids, logits = start(session)
    assert session.handle(line) is True  # the REPL goes on
    out = session.take()
    assert out.startswith("error: ") and message in out, out
    assert session.ids == ids and torch.equal(session.logits, logits)


def test_experiments_before_any_text(session):
    for cmd in (":ablate 0 0", f':patch "{CORRUPT}"', ":dla", ":steer a b 0"):
        session.handle(cmd)
        assert "there is no text yet" in session.take(), cmd


def test_steering_on_a_full_context_says_so(model, tok):
    s = Engine(model, tok)
    s.set_ids([tok.encode(" the")[0]] * model.args.max_seq_len)
    with pytest.raises(ValueError, match=r"the context is full \(\d+ tokens\)"):
        s.steer(" happy", " sad", layer=0, scale=2.0, generate=4)
    report = s.steer(" happy", " sad", layer=0, scale=2.0)  # the table alone still works
    assert report.generation is None and report.after.rows
