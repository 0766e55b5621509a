"""The studio's engine adapter on tiny random models: every payload against a
computation written out here with llama.hooks (or the model itself)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from llama.hooks import intervene, run_with_cache
from llama.studio.engine import VIEWS, Engine, EngineError
from llama.studio.engine._json import unpack_unit_u16
from studio_helpers import ByteTokenizer, tiny_model

TEXT = "Hello, tiny world"


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return Engine(tiny_model("llama32"), ByteTokenizer(), name="tiny-llama32")


def ids_of(text):
    return ByteTokenizer().encode(text)


def full_logits(model, ids):
    model.reset_cache()
    with torch.no_grad():
        out = model(torch.tensor([ids]))[0].float()
    model.reset_cache()
    return out  # (T, V)


def test_state_matches_a_fresh_forward_pass(engine):
    st = engine.set_text("a", TEXT)
    assert [t["id"] for t in st["tokens"]] == ids_of(TEXT)
    logits = full_logits(engine.model, ids_of(TEXT))[-1]
    probs = torch.softmax(logits, -1)
    top = torch.topk(probs, 10)
    assert [c["id"] for c in st["candidates"]] == top.indices.tolist()
    assert np.allclose([c["prob"] for c in st["candidates"]], top.values.numpy(), atol=2e-6)
    json.dumps(st, allow_nan=False)  # a payload is plain JSON


def test_sampling_column_is_the_filtered_distribution(engine):
    from llama.generate import next_token_probs, top_k_top_p_filter

    st = engine.set_text("a", TEXT, sampling={"temperature": 0.7, "top_k": 3, "show": 6})
    logits = full_logits(engine.model, ids_of(TEXT))[-1]
    want = top_k_top_p_filter(next_token_probs(logits, 0.7), 3, None)
    got = [c["sample_prob"] for c in st["candidates"]]
    assert np.allclose(got, want[[c["id"] for c in st["candidates"]]].numpy(), atol=2e-6)
    assert st["kept"] == 3 and got[3:] == [0.0] * 3
    greedy = engine.state("a", {"temperature": 0})
    assert greedy["candidates"][0]["sample_prob"] == 1.0 and greedy["kept"] == 1


def test_pick_back_step_keep_the_cache_honest(engine):
    engine.set_text("a", TEXT)
    st = engine.pick("a", 100)
    ids = ids_of(TEXT) + [100]
    assert [t["id"] for t in st["tokens"]] == ids
    want = torch.softmax(full_logits(engine.model, ids)[-1], -1)
    assert abs(st["candidates"][0]["prob"] - float(want.max())) < 2e-5
    st = engine.back("a", 2)
    assert [t["id"] for t in st["tokens"]] == ids_of(TEXT)[:-1]
    st = engine.step("a")  # greedy: the arg-max after the shortened text
    assert st["chosen"]["id"] == int(full_logits(engine.model, ids_of(TEXT)[:-1])[-1].argmax())


def test_generate_streams_what_greedy_generation_gives(engine):
    from llama.generate import generate_ids

    engine.set_text("a", TEXT)
    events = list(engine.generate("a", 6))
    toks = [e["id"] for e in events if e["type"] == "token"]
    engine.model.reset_cache()
    want = generate_ids(engine.model, ids_of(TEXT), 6, stop_ids=[0])
    assert toks == want
    done = events[-1]
    assert done["type"] == "done" and done["count"] == len(toks) and not done["state"]["generating"]
    assert [t["id"] for t in done["state"]["tokens"]] == ids_of(TEXT) + toks


def test_two_clients_interleaved_on_threads_equal_lone_clients(engine):
    texts = {"c1": "The cat sat on", "c2": "Every dog has its"}
    errors = []

    def work(client):
        try:
            for i in range(4):
                engine.set_text(client, texts[client][: 6 + 2 * i])
                engine.pick(client, 50 + i)
                list(engine.generate(client, 3))
                engine.back(client, 1)
        except Exception as e:  # pragma: no cover - shown by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for client in texts:
        st = engine.state(client)
        ids = [t["id"] for t in st["tokens"]]
        # The same operations by a lone client, and a from-scratch pass, agree.
        lone = "lone-" + client
        for i in range(4):
            engine.set_text(lone, texts[client][: 6 + 2 * i])
            engine.pick(lone, 50 + i)
            list(engine.generate(lone, 3))
            engine.back(lone, 1)
        assert [t["id"] for t in engine.state(lone)["tokens"]] == ids
        want = torch.softmax(full_logits(engine.model, ids)[-1], -1)
        got = engine.state(client)["candidates"]
        assert abs(got[0]["prob"] - float(want.max())) < 2e-5 and got[0]["id"] == int(want.argmax())


def test_attention_payload_is_the_captured_probabilities(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "attention")
    ids = ids_of(TEXT)
    engine.model.reset_cache()
    _, cache = run_with_cache(engine.model, torch.tensor([ids]), names="layers.*.attention.probs")
    maps = unpack_unit_u16(p["probs"])
    a = engine.model.args
    assert maps.shape == (a.n_layers, a.n_heads, len(ids), len(ids))
    for L in range(a.n_layers):
        want = cache[f"layers.{L}.attention.probs"][0].numpy()
        assert np.abs(maps[L] - want).max() < 1e-4
        share = want[:, 1:, 0].mean(-1)
        assert np.allclose(p["first_token_share"][L], share, atol=1e-4)
    assert p["sources"][0]["hook"] == "layers.*.attention.probs"
    assert "softmax" in p["sources"][0]["text"] and p["sources"][0]["path"] == "llama/model.py"
    with pytest.raises(EngineError, match="layer 7 is out of range"):
        engine.view("a", "attention", {"layer": 7})


def test_lens_last_stage_is_the_model_prediction(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "lens", {"k": 5})
    logits = full_logits(engine.model, ids_of(TEXT))
    assert p["top_ids"][-1] == logits.argmax(-1).tolist() == p["final_ids"]
    probs = torch.softmax(logits, -1)
    assert np.allclose(p["final_probs"][-1], probs.max(-1).values.numpy(), atol=1e-4)
    assert len(p["cand_ids"][0][0]) == 5 and len(p["stages"]) == engine.model.args.n_layers + 1


def test_dla_parts_sum_to_the_logit(engine):
    engine.set_text("a", TEXT)
    for opts in ({}, {"target": 65, "contrast": 66, "position": 3}):
        p = engine.view("a", "dla", opts)
        logits = full_logits(engine.model, ids_of(TEXT))[p["position"]]
        want = float(logits[p["target"]] - (logits[p["contrast"]] if p["contrast"] is not None else 0))
        assert abs(p["logit"] - want) < 1e-4
        assert abs(sum(q["value"] for q in p["parts"]) - want) < 1e-3
        a = engine.model.args
        assert len([q for q in p["parts"] if q["group"] == "head"]) == a.n_layers * a.n_heads
        # Each block's heads add up to its attention output (no wo bias in Llama).
        assert np.allclose(np.sum(p["heads"], axis=1), p["attn"], atol=1e-4)


def test_ablating_a_head_matches_the_hand_edit(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "intervene", {"edit": "ablate_head", "layer": 1, "head": 5})
    ids = torch.tensor([ids_of(TEXT)])

    def zero_head(v):
        v = v.clone()
        v[:, :, 5] = 0
        return v

    engine.model.reset_cache()
    with torch.no_grad(), intervene(engine.model, {"layers.1.attention.heads": zero_head}):
        want = engine.model(ids)[0, -1]
    engine.model.reset_cache()
    clean = full_logits(engine.model, ids_of(TEXT))[-1]
    order = torch.sort(torch.softmax(want, -1), descending=True, stable=True).indices[:10]
    assert [c["id"] for c in p["edited"]] == order.tolist()
    assert np.allclose([c["logit"] for c in p["edited"]], want[order].numpy(), atol=1e-3)
    assert abs(p["max_abs_logit_change"] - float((want - clean).abs().max())) < 1e-3
    assert p["max_abs_logit_change"] > 0.01 and p["hooks"][0] == "layers.1.attention.heads"
    # The engine's own state is untouched by the edit.
    st = engine.state("a")
    clean = torch.softmax(full_logits(engine.model, ids_of(TEXT))[-1], -1)
    assert abs(st["candidates"][0]["prob"] - float(clean.max())) < 2e-5


def test_edits_that_change_nothing_change_nothing(engine):
    engine.set_text("a", TEXT)
    for opts in ({"edit": "steer", "prompt_a": "yes", "prompt_b": "no", "scale": 0.0, "layer": 0},
                 {"edit": "patch", "source": TEXT, "layer": 1, "site": "resid_mid"}):
        p = engine.view("a", "intervene", opts)
        assert p["kl"] < 1e-8 and not p["top_changed"] and p["max_abs_logit_change"] < 1e-4, opts


def test_patching_the_last_residual_copies_the_source_prediction(engine):
    # After the last block, the last position's residual decides the next token alone.
    source = "Hello, tiny WORLD"
    engine.set_text("a", TEXT)
    p = engine.view("a", "intervene", {"edit": "patch", "source": source, "layer": -1,
                                       "site": "resid_post", "patch_position": -1})
    want = torch.softmax(full_logits(engine.model, ids_of(source))[-1], -1)
    assert p["edited"][0]["id"] == int(want.argmax())
    assert abs(p["edited"][0]["prob"] - float(want.max())) < 1e-4


def test_bad_requests_say_what_is_wrong(engine):
    engine.set_text("a", TEXT)
    cases = [
        (lambda: engine.view("a", "lens", {"k": 0}), "k"),
        (lambda: engine.view("a", "lens", {"colour": 1}), "unknown option 'colour'"),
        (lambda: engine.view("a", "nope"), "unknown view 'nope'"),
        (lambda: engine.view("a", "saliency", {"position": 99}), "position 99 is out of range"),
        (lambda: engine.view("a", "intervene", {"edit": "patch", "source": "x"}), "same number of tokens"),
        (lambda: engine.view("a", "intervene", {"edit": "steer"}), "two prompts"),
        (lambda: engine.view("a", "intervene", {"edit": "explode"}), "one of ablate_head"),
        (lambda: engine.view("empty", "lens"), "no text yet"),
        (lambda: engine.view("a", "residual", {"stages": [0, 9]}), "stage 9 is out of range: stages are 0"),
        (lambda: engine.set_text("a", TEXT, sampling={"temperature": -1}), "temperature"),
        (lambda: engine.set_text("a", TEXT, sampling={"top_p": 1.5}), "top_p"),
        (lambda: engine.pick("a", 10**6), "token id must be an integer in 0..383"),
        (lambda: engine.back("a", 0), "n must be an integer >= 1"),
        (lambda: engine.set_text("bad id!", TEXT), "client must be"),
        (lambda: next(engine.generate("a", 0)), "n must be an integer between 1 and 4096"),
        (lambda: engine.step("a", seed=-3), "seed must be"),
    ]
    for fn, message in cases:
        with pytest.raises(EngineError) as e:
            fn()
        assert message in str(e.value), (message, str(e.value))


def test_too_long_text_is_reported_not_run():
    model = tiny_model("llama2")  # max_position_embeddings 512
    eng = Engine(model, ByteTokenizer())
    st = eng.set_text("a", "x" * 600)
    assert st["too_long"]["n_tokens"] == 600 and "context holds 512" in st["too_long"]["message"]
    assert st["candidates"] == []
    st = eng.set_text("a", "x" * 600, truncate=True)
    assert st["too_long"] is None and st["n_tokens"] == 512 and st["candidates"]


def test_non_finite_logits_are_reported_not_drawn():
    model = tiny_model("llama2")
    with torch.no_grad():
        model.layers[0].feed_forward.w2.weight[0, 0] = float("nan")  # a damaged checkpoint
    eng = Engine(model, ByteTokenizer())
    st = eng.set_text("a", TEXT)
    assert st["candidates"] == [] and "not finite" in st["non_finite"]["message"]
    json.dumps(st, allow_nan=False)
    with pytest.raises(EngineError, match="NaN"):
        eng.step("a")
    lens = eng.view("a", "lens")
    assert lens["warnings"] and "non-finite" in lens["warnings"][0]
    json.dumps(lens, allow_nan=False)
    assert eng.view("a", "intervene", {"edit": "ablate_head"})["non_finite"]


@pytest.mark.parametrize("kind", [k for k in VIEWS])
def test_every_view_is_plain_json_with_its_sources(engine, kind):
    engine.set_text("a", TEXT)
    p = engine.view("a", kind)
    assert p["kind"] == kind
    json.dumps(p, allow_nan=False)
    for src in p["sources"]:
        assert "error" not in src, src
        assert src["path"] == "llama/model.py" and src["context"]["lines"]


def test_residual_stages_and_norms(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "residual", {"stages": [2, 0], "skip_first": True})
    assert p["pca_stages"] == [2, 0] and [g["stage"] for g in p["grid"]] == [2, 0]
    assert p["positions"] == list(range(1, len(ids_of(TEXT))))
    engine.model.reset_cache()
    _, cache = run_with_cache(engine.model, torch.tensor([ids_of(TEXT)]), names="layers.*.resid_post")
    assert np.allclose(p["resid_norm"][2], cache["layers.1.resid_post"][0].norm(dim=-1).numpy(), rtol=1e-3)
    assert len(p["trajectory"]["coords"]) == engine.model.args.n_layers + 1


def test_model_views_describe_the_model(engine):
    m = engine.model
    s = engine.view(None, "summary")
    assert s["total_params"] == m.num_params()
    arch = engine.view(None, "architecture")
    shapes = {b["hook"]: b["shape"] for b in arch["boxes"]}
    a = m.args
    assert shapes["layers.*.attention.k"] == ["B", "T", a.n_kv_heads, a.head_dim]
    assert shapes["layers.*.attention.probs"] == ["B", a.n_heads, "T", "S"]
    assert shapes["logits"] == ["B", "T", a.vocab_size]
    rope = engine.view(None, "rope", {"positions": 16})
    assert len(rope["cos"]) == 16 and len(rope["cos"][0]) == a.head_dim // 2
    params = engine.view(None, "params")
    assert set(params["kinds"]) >= {"attention.wq", "feed_forward.w1"}


def test_lens_in_chunks_equals_lens_at_once(engine, monkeypatch):
    from llama.studio.engine import _views

    engine.set_text("a", TEXT)
    whole = engine.view("a", "lens")
    engine.set_text("a", TEXT + " ")  # a new text: no cached payload parts
    engine.set_text("a", TEXT)
    monkeypatch.setattr(_views, "LENS_CHUNK", 3 * engine.model.args.vocab_size)  # T rows per product
    chunked = engine.view("a", "lens")
    for key in ("top_ids", "cand_ids", "final_ids"):
        assert chunked[key] == whole[key]
    assert np.allclose(chunked["final_probs"], whole["final_probs"], atol=1e-4)
