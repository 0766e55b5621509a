"""The studio's engine adapter on tiny random models: every payload against a
computation written out here with llama.hooks (or the model itself), never against the
library function the engine calls."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from llama.hooks import ablate_heads, intervene, patch_from, run_with_cache
from llama.studio.engine import KINDS, Engine, EngineError, hook_patterns
from llama.studio.engine._json import unpack_unit_u16
from studio_helpers import ByteTokenizer, tiny_model

TEXT = "Hello, tiny world"
OTHER = "Hello, tiny WORLD"  # the same number of tokens (a byte tokenizer)


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


def capture(model, ids, names):
    model.reset_cache()
    logits, cache = run_with_cache(model, torch.tensor([ids]), names=names)
    model.reset_cache()
    return logits, cache


# -- the text: one llama.session.Session per client ----------------------------------------


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


def test_a_generation_closed_early_keeps_what_it_made(engine):
    """A client that goes away closes the event stream: the tokens sent so far are the
    client's text, with the logits after them."""
    engine.set_text("a", TEXT)
    events = engine.generate("a", 50)
    sent = [next(events)["id"] for _ in range(3)]
    events.close()
    st = engine.state("a")
    ids = [t["id"] for t in st["tokens"]]
    assert ids == ids_of(TEXT) + sent and not st["generating"]
    want = torch.softmax(full_logits(engine.model, ids)[-1], -1)
    assert abs(st["candidates"][0]["prob"] - float(want.max())) < 2e-5


def test_stop_from_another_thread_ends_the_generation(engine):
    engine.set_text("s", TEXT)
    events = engine.generate("s", 200)
    first = next(events)
    assert first["type"] == "token"
    stopper = threading.Thread(target=engine.stop, args=("s",))
    stopper.start()
    stopper.join()
    rest = list(events)
    assert rest[-1]["type"] == "done" and rest[-1]["reason"] == "stopped"
    assert rest[-1]["count"] < 200 and not engine.state("s")["generating"]


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
                engine.view(client, "lens")  # a capture between the other client's steps
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


def test_the_model_run_behind_the_engines_back_is_noticed(engine):
    """A notebook runs the model itself between two calls: the next table is still the
    client's own (the session prefills again), not logits over someone else's cache."""
    engine.set_text("nb", TEXT)
    with torch.no_grad():
        engine.model(torch.tensor([ids_of("something else entirely")]))  # leaves its cache
    st = engine.pick("nb", 33)
    want = torch.softmax(full_logits(engine.model, ids_of(TEXT) + [33])[-1], -1)
    assert abs(st["candidates"][0]["prob"] - float(want.max())) < 2e-5


# -- the text's views ------------------------------------------------------------------------


def test_attention_payload_is_the_captured_probabilities(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "attention")
    ids = ids_of(TEXT)
    _, cache = capture(engine.model, ids, "layers.*.attention.probs")
    maps = unpack_unit_u16(p["probs"])
    a = engine.model.args
    assert maps.shape == (a.n_layers, a.n_heads, len(ids), len(ids))
    for L in range(a.n_layers):
        want = cache[f"layers.{L}.attention.probs"][0].numpy()
        assert np.abs(maps[L] - want).max() < 1e-4
        share = want[:, 1:, 0].mean(-1)
        assert np.allclose(p["first_token_share"][L], share, atol=1e-4)
    assert p["hooks"] == ["layers.*.attention.probs"]
    assert "softmax" in p["sources"][0]["text"] and p["sources"][0]["path"] == "llama/model.py"
    with pytest.raises(EngineError, match="layer 7 is out of range"):
        engine.view("a", "attention", {"layer": 7})


def test_attention_of_a_long_text_sends_one_layer_and_every_share(engine, monkeypatch):
    from llama.studio.engine import _views

    engine.set_text("a", TEXT)
    monkeypatch.setattr(_views, "MAX_ATTENTION_CELLS", 10)  # nothing "fits": one layer, shares in chunks
    p = engine.view("a", "attention", {"layer": 1})
    _, cache = capture(engine.model, ids_of(TEXT), "layers.*.attention.probs")
    assert p["layers"] == [1] and unpack_unit_u16(p["probs"]).shape[0] == 1
    for L in range(engine.model.args.n_layers):
        want = cache[f"layers.{L}.attention.probs"][0].numpy()[:, 1:, 0].mean(-1)
        assert np.allclose(p["first_token_share"][L], want, atol=1e-4)
    assert "only layer 0 is sent" in engine.view("a", "attention")["warnings"][0]


def test_lens_last_stage_is_the_model_prediction(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "lens", {"k": 5})
    logits = full_logits(engine.model, ids_of(TEXT))
    assert p["top_ids"][-1] == logits.argmax(-1).tolist() == p["final_ids"]
    probs = torch.softmax(logits, -1)
    assert np.allclose(p["final_probs"][-1], probs.max(-1).values.numpy(), atol=1e-4)
    assert len(p["cand_ids"][0][0]) == 5 and len(p["stages"]) == engine.model.args.n_layers + 1
    assert p["stage_hooks"][0] == "tok_embeddings" and p["stages"][:2] == ["embed", "L0"]
    assert p["hooks"] == ["tok_embeddings", "layers.*.resid_post", "norm", "logits"]


def test_residual_stages_and_norms(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "residual", {"stages": [2, 0], "skip_first": True})
    assert p["pca_stages"] == [2, 0] and [g["stage"] for g in p["grid"]] == [2, 0]
    assert p["positions"] == list(range(1, len(ids_of(TEXT))))
    _, cache = capture(engine.model, ids_of(TEXT), ["layers.*.resid_post", "layers.*.feed_forward.act"])
    assert np.allclose(p["resid_norm"][2], cache["layers.1.resid_post"][0].norm(dim=-1).numpy(), rtol=1e-3)
    assert np.allclose(p["mlp_max_abs"][0], cache["layers.0.feed_forward.act"][0].abs().amax(-1).numpy(), rtol=1e-3)
    assert len(p["trajectory"]["coords"]) == engine.model.args.n_layers + 1
    # A 2-D panel is a PCA of that stage's vectors: distances between tokens in its top 3
    # axes equal those of an SVD written out here (signs of axes do not matter).
    x = cache["layers.1.resid_post"][0, 1:].double().numpy()
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    want = x @ vt[:3].T
    got = np.array(p["grid"][0]["coords"])
    dist = lambda c: np.linalg.norm(c[:, None] - c[None], axis=-1)  # noqa: E731
    assert np.allclose(dist(got), dist(want), atol=1e-3 * np.abs(want).max())


def test_token_embeddings_in_3d(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "embeddings")
    ids = ids_of(TEXT)
    distinct = list(dict.fromkeys(ids))
    assert p["ids"] == distinct and p["positions"] == [ids.index(i) for i in distinct]
    vectors = engine.model.tok_embeddings.weight[distinct].detach().double().numpy()
    assert np.allclose(p["norms"], np.linalg.norm(vectors, axis=-1), rtol=1e-3)
    x = vectors - vectors.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    got = np.array(p["coords"])
    dist = lambda c: np.linalg.norm(c[:, None] - c[None], axis=-1)  # noqa: E731
    assert got.shape == (len(distinct), 3)
    assert np.allclose(dist(got), dist(x @ vt[:3].T), atol=1e-3)
    assert np.allclose(p["variance"], (s[:3] ** 2 / (s**2).sum()), atol=1e-4)
    assert (p["vocab_size"], p["dim"]) == tuple(engine.model.tok_embeddings.weight.shape)
    engine.set_text("solo", "aaaa")
    assert "at least 2 different tokens" in engine.view("solo", "embeddings")["warnings"][0]


def test_saliency_is_input_times_gradient(engine):
    """Checked on the runner-up token: the tiny model's top token has p = 1.0 to float32
    precision, so its log p has no gradient to compare."""
    engine.set_text("a", TEXT)
    ids = torch.tensor([ids_of(TEXT)])
    model = engine.model
    emb = model.tok_embeddings(ids).detach().requires_grad_(True)
    model.reset_cache()
    with intervene(model, {"tok_embeddings": lambda v: emb}):
        logp = torch.log_softmax(model(ids)[0, 5].float(), -1)
    model.reset_cache()
    top, target = torch.topk(logp, 2).indices.tolist()
    assert engine.view("a", "saliency", {"position": 5})["target"] == top
    p = engine.view("a", "saliency", {"position": 5, "target": target})
    logp[target].backward()
    want = (emb * emb.grad)[0].sum(-1).detach().numpy()
    assert p["target"] == target and np.allclose(p["scores"], want, atol=1e-4, rtol=1e-3)
    assert max(abs(v) for v in p["scores"][:6]) > 0.01  # something to compare
    assert p["scores"][6:] == [0.0] * (len(ids_of(TEXT)) - 6)  # causal: later tokens cannot matter


# -- attribution and interventions -----------------------------------------------------------


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


def test_dla_parts_are_the_projections_written_out(engine):
    """Each part = (part / rms(final residual)) * norm.weight . W_U[target], by hand."""
    engine.set_text("a", TEXT)
    p = engine.view("a", "dla")
    model, ids = engine.model, ids_of(TEXT)
    L = model.args.n_layers
    _, cache = capture(model, ids, ["tok_embeddings", "layers.*.feed_forward.out", f"layers.{L - 1}.resid_post"])
    r = cache[f"layers.{L - 1}.resid_post"][0, -1].double()
    scale = torch.rsqrt(r.pow(2).mean() + model.norm.eps)
    u = model.output.weight[p["target"]].detach().double() * model.norm.weight.detach().double()
    proj = lambda c: float((c[0, -1].double() * scale) @ u)  # noqa: E731
    parts = {q["name"]: q["value"] for q in p["parts"]}
    assert abs(parts["embed"] - proj(cache["tok_embeddings"])) < 1e-4
    assert abs(parts["L1.mlp"] - proj(cache["layers.1.feed_forward.out"])) < 1e-4


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


def test_ablating_a_blocks_attention_or_mlp_matches_the_hand_edit(engine):
    engine.set_text("a", TEXT)
    ids = torch.tensor([ids_of(TEXT)])
    a = engine.model.args
    for edit, hook, fn in (
            ("ablate_attn", "layers.0.attention.out", lambda v: torch.zeros_like(v)),
            ("ablate_mlp", "layers.1.feed_forward.out", lambda v: v.mean(1, keepdim=True).expand_as(v))):
        layer = int(hook.split(".")[1])
        p = engine.view("a", "intervene", {"edit": edit, "layer": layer,
                                           "mode": "zero" if edit == "ablate_attn" else "mean"})
        engine.model.reset_cache()
        with torch.no_grad(), intervene(engine.model, {hook: fn}):
            want = engine.model(ids)[0, -1].float()
        engine.model.reset_cache()
        # The top token's probability stays 1.0 in this tiny model: compare the logits.
        clean = full_logits(engine.model, ids_of(TEXT))[-1]
        rows = p["edited"]
        assert rows[0]["id"] == int(want.argmax()), edit
        assert np.allclose([r["logit"] for r in rows], want[[r["id"] for r in rows]].numpy(), atol=1e-3), edit
        assert abs(p["max_abs_logit_change"] - float((want - clean).abs().max())) < 1e-3, edit
        assert p["max_abs_logit_change"] > 0.1, edit
    assert a.n_heads > 1


def test_edits_that_change_nothing_change_nothing(engine):
    engine.set_text("a", TEXT)
    for opts in ({"edit": "steer", "prompt_a": "yes", "prompt_b": "no", "scale": 0.0, "layer": 0},
                 {"edit": "patch", "source": TEXT, "layer": 1, "site": "resid_mid"},
                 {"edit": "patch", "source": TEXT, "layer": 0, "site": "kv_heads", "head": 1,
                  "patch_position": None}):
        p = engine.view("a", "intervene", opts)
        assert p["kl"] < 1e-8 and not p["top_changed"] and p["max_abs_logit_change"] < 1e-4, opts


def test_steering_adds_the_vector_a_hand_hook_adds(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "intervene", {"edit": "steer", "prompt_a": "yes", "prompt_b": "no",
                                       "scale": 3.0, "layer": 0, "reduce": "last"})
    _, ca = capture(engine.model, ids_of("yes"), "layers.0.resid_post")
    _, cb = capture(engine.model, ids_of("no"), "layers.0.resid_post")
    vec = ca["layers.0.resid_post"][0, -1] - cb["layers.0.resid_post"][0, -1]
    engine.model.reset_cache()
    with torch.no_grad(), intervene(engine.model, {"layers.0.resid_post": lambda v: v + 3.0 * vec}):
        want = torch.softmax(engine.model(torch.tensor([ids_of(TEXT)]))[0, -1].float(), -1)
    engine.model.reset_cache()
    assert p["edited"][0]["id"] == int(want.argmax()) and abs(p["edited"][0]["prob"] - float(want.max())) < 1e-4
    assert p["hooks"][0] == "layers.0.resid_post"


def test_patching_the_last_residual_copies_the_source_prediction(engine):
    # After the last block, the last position's residual decides the next token alone.
    engine.set_text("a", TEXT)
    p = engine.view("a", "intervene", {"edit": "patch", "source": OTHER, "layer": -1,
                                       "site": "resid_post", "patch_position": -1})
    want = torch.softmax(full_logits(engine.model, ids_of(OTHER))[-1], -1)
    assert p["edited"][0]["id"] == int(want.argmax())
    assert abs(p["edited"][0]["prob"] - float(want.max())) < 1e-4


def test_patching_map_cells_are_patched_runs(engine):
    """Each cell: the second prompt's run with one value copied from the text's run, as a
    normalised logit difference (text 1, second prompt 0), checked by hand."""
    engine.set_text("a", TEXT)
    p = engine.view("a", "patching", {"corrupt": OTHER, "site": "resid_pre"})
    model, clean, corrupt = engine.model, ids_of(TEXT), ids_of(OTHER)
    L, T = model.args.n_layers, len(clean)
    assert len(p["scores"]) == L and len(p["scores"][0]) == T and p["column_kind"] == "position"
    cl, cache = capture(model, clean, ["tok_embeddings", "layers.*.resid_post"])
    co = full_logits(model, corrupt)
    a, w = p["answer"], p["wrong"]
    assert a == int(cl[0, -1].argmax())
    d_clean = float(cl[0, -1, a] - cl[0, -1, w])
    d_corrupt = float(co[-1, a] - co[-1, w])
    for layer, pos in ((0, 12), (1, 3), (1, 16)):
        hook = "tok_embeddings" if layer == 0 else f"layers.{layer - 1}.resid_post"
        model.reset_cache()
        with torch.no_grad(), intervene(model, {hook: patch_from(cache, positions=[pos])}):
            out = model(torch.tensor([corrupt]))[0, -1].float()
        model.reset_cache()
        want = (float(out[a] - out[w]) - d_corrupt) / (d_clean - d_corrupt)
        assert abs(p["scores"][layer][pos] - want) < 1e-4, (layer, pos)
        assert p["cell_hooks"][layer] == [hook]  # what the cell's tooltip names
    assert p["differ"] == [i for i in range(T) if clean[i] != corrupt[i]]
    assert all(abs(v) < 1e-5 for v in p["scores"][0][: p["differ"][0]])  # before any difference: 0
    heads = engine.view("a", "patching", {"corrupt": OTHER, "site": "kv_heads"})
    assert len(heads["scores"][0]) == model.args.n_kv_heads and heads["query_heads"][0] == [0, 1, 2, 3]
    assert heads["hooks"] == ["layers.*.attention.k", "layers.*.attention.v", "logits"]


def test_head_ablation_map_cells_are_ablated_runs(engine):
    """The tiny model's top token has p = 1.0 to float32 precision (log p = 0 whatever is
    ablated), so the map is checked on the runner-up, whose log p does move."""
    engine.set_text("a", TEXT)
    model, ids = engine.model, ids_of(TEXT)
    logits = full_logits(model, ids)[-1]
    top = engine.view("a", "ablation")
    assert top["target"] == int(logits.argmax())
    target = int(torch.topk(logits, 2).indices[1])
    p = engine.view("a", "ablation", {"target": target})
    assert p["target"] == target
    base = float(torch.log_softmax(logits, -1)[target])
    assert abs(p["baseline"] - base) < 1e-4
    assert max(abs(v) for row in p["scores"] for v in row) > 0.01  # the heads matter to it
    for layer, head in ((0, 0), (1, 6), tuple(p["top"][0][:2])):
        model.reset_cache()
        with torch.no_grad(), intervene(model, {f"layers.{layer}.attention.heads": ablate_heads(head)}):
            lp = float(torch.log_softmax(model(torch.tensor([ids]))[0, -1].float(), -1)[target])
        model.reset_cache()
        assert abs(p["scores"][layer][head] - (lp - base)) < 1e-4


def test_head_scores_are_averages_of_the_attention(engine):
    engine.set_text("a", TEXT)
    p = engine.view("a", "head_scores", {"length": 8})
    _, cache = capture(engine.model, ids_of(TEXT), "layers.*.attention.probs")
    maps = {m["name"]: m for m in p["maps"]}
    assert set(maps) == {"previous-token", "first-token", "induction"}
    for layer in range(engine.model.args.n_layers):
        probs = cache[f"layers.{layer}.attention.probs"][0]  # (H, T, T)
        T = probs.shape[1]
        prev = torch.stack([probs[:, t, t - 1] for t in range(1, T)], -1).mean(-1)
        assert np.allclose(maps["previous-token"]["scores"][layer], prev.numpy(), atol=1e-4)
        assert np.allclose(maps["first-token"]["scores"][layer], probs[:, 1:, 0].mean(-1).numpy(), atol=1e-4)
    # Induction on the same random tokens as llama-plot heads draws for this text.
    from llama.interp.views import induction_for

    expected = induction_for(engine.model, ids_of(TEXT), engine.tokenizer, 8).scores.numpy()
    assert np.allclose(maps["induction"]["scores"], expected, atol=1e-4)


# -- the model's views ---------------------------------------------------------------------------


def test_model_views_describe_the_model(engine):
    m = engine.model
    s = engine.view(None, "summary")
    assert s["total_params"] == m.num_params() and s["family"] == "Llama"
    arch = engine.view(None, "architecture")
    shapes = {b["hook"]: b["shape"] for b in arch["boxes"]}
    a = m.args
    assert shapes["layers.*.attention.k"] == ["B", "T", a.n_kv_heads, a.head_dim]
    assert shapes["layers.*.attention.probs"] == ["B", a.n_heads, "T", "S"]
    assert shapes["logits"] == ["B", "T", a.vocab_size]
    rope = engine.view(None, "rope", {"positions": 16})
    assert len(rope["cos"]) == 16 and len(rope["cos"][0]) == a.head_dim // 2
    inv = 1.0 / (a.rope_theta ** (np.arange(0, a.head_dim, 2) / a.head_dim))
    assert np.allclose(rope["cos"][5], np.cos(5 * inv), atol=2e-3)
    params = engine.view(None, "params")
    assert set(params["kinds"]) >= {"attention.wq", "feed_forward.w1"}
    w = m.layers[1].attention.wq.weight.detach().double()
    assert abs(params["stats"]["attention.wq"]["norm"][1] - float(w.norm())) < 1e-3 * float(w.norm())


def test_views_that_do_not_apply_say_why(engine):
    info = engine.info()
    views = {v["name"]: v for v in info["views"]}
    assert views["positions"]["available"] is False and "RoPE" in views["positions"]["why_not"]
    assert views["rope"]["available"] is True
    with pytest.raises(EngineError, match="no learned position embeddings"):
        engine.view(None, "positions")


def test_hook_patterns_shorten_only_what_repeats():
    names = ["tok_embeddings", "layers.0.resid_post", "layers.1.resid_post", "layers.3.attention.heads", "logits"]
    assert hook_patterns(names) == ["tok_embeddings", "layers.*.resid_post", "layers.3.attention.heads", "logits"]


# -- bad input ---------------------------------------------------------------------------------------


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
        (lambda: engine.view("a", "intervene", {"edit": "ablate_head", "head": 8}), "head 8 is out of range"),
        (lambda: engine.view("a", "patching", {}), "needs a second prompt"),
        (lambda: engine.view("a", "patching", {"corrupt": TEXT + "!"}), "same number of tokens"),
        (lambda: engine.view("a", "patching", {"corrupt": OTHER, "position": 1}), "per-head sites"),
        (lambda: engine.view("a", "dla", {"target": 5, "contrast": 5}), "the same"),
        (lambda: engine.view("empty", "lens"), "no text yet"),
        (lambda: engine.view("a", "residual", {"stages": [0, 9]}), "stage 9 is out of range: stages are 0"),
        (lambda: engine.set_text("a", TEXT, sampling={"temperature": -1}), "temperature"),
        (lambda: engine.set_text("a", TEXT, sampling={"top_p": 1.5}), "top_p"),
        (lambda: engine.pick("a", 10**6), "token id must be an integer in 0..383"),
        (lambda: engine.back("a", 0), "n must be an integer >= 1"),
        (lambda: engine.back("a", 99), "at most 16 can be removed"),
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
    json.dumps(eng.view("a", "residual"), allow_nan=False)


OPTIONS = {"patching": {"corrupt": OTHER}}


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "positions"])
def test_every_view_is_plain_json_with_its_sources(engine, kind):
    engine.set_text("a", TEXT)
    p = engine.view("a" if KINDS[kind].needs == "text" else None, kind, OPTIONS.get(kind))
    assert p["kind"] == kind
    json.dumps(p, allow_nan=False)
    for src in p["sources"]:
        assert "error" not in src, src
        assert src["path"] == "llama/model.py" and src["context"]["lines"]
