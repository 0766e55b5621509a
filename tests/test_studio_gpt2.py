"""Every studio view on a tiny GPT-2 checkpoint (a transformers save_pretrained folder with
a byte-level BPE beside it, tests/gpt2_models.py), checked against the model itself: the
sources point into llama/gpt2.py, stage 0 is token + position, the learned positions and
the 3-D token embeddings are the model's weights, RoPE says why it is not there.

The same payloads are drawn in a real browser by tests/test_studio_browser.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gpt2_models import write_gpt2_with_tokenizer
from llama.studio.engine import KINDS, Engine, EngineError

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from tokenizer import load_tokenizer
    from weights import load_model

    folder = write_gpt2_with_tokenizer(tmp_path_factory.mktemp("studio-gpt2"))
    model, tok = load_model(folder), load_tokenizer(folder)
    return Engine(model, tok, name="tiny-gpt2"), model, tok


def same_length_prompt(tok, text: str) -> str:
    """A second prompt with as many tokens as `text`: one letter changed (the tiny BPE
    splits words its own way, so the first change that keeps the count is taken)."""
    n = len(tok.encode(text))
    for i in range(len(text) - 1, -1, -1):
        for c in "aeioustnrl":
            other = text[:i] + c + text[i + 1:]
            if other != text and text[i] != " " and len(tok.encode(other)) == n:
                return other
    raise AssertionError("no prompt of the same length")  # pragma: no cover


def own_logits(model, ids):
    model.reset_cache()
    with torch.no_grad():
        out = model(torch.tensor([ids]))[0].float()
    model.reset_cache()
    return out


def gpt2_payloads(engine, tok) -> dict:
    """One payload of every view that applies to GPT-2 (the browser test draws them)."""
    engine.set_text("g", PROMPT)
    options = {"patching": {"corrupt": same_length_prompt(tok, PROMPT)}, "head_scores": {"length": 8}}
    return {k: engine.view("g" if KINDS[k].needs == "text" else None, k, options.get(k))
            for k in KINDS if engine.available(k)}


def test_every_view_that_applies_works_and_points_into_gpt2_py(gpt2):
    engine, model, tok = gpt2
    payloads = gpt2_payloads(engine, tok)
    assert set(KINDS) - set(payloads) == {"rope"}
    for kind, p in payloads.items():
        json.dumps(p, allow_nan=False)
        assert p["family"] == "GPT-2", kind
        for src in p["sources"]:
            assert "error" not in src and src["path"] == "llama/gpt2.py" and src["context"]["lines"], (kind, src)
    lens = payloads["lens"]
    ids = tok.encode(PROMPT)
    logits = own_logits(model, ids)
    assert lens["final_ids"] == lens["top_ids"][-1] == logits.argmax(-1).tolist()
    assert lens["stage_hooks"][0] == "embeddings" and lens["stage0"] == "token + position"
    assert payloads["residual"]["stage_hooks"][0] == "embeddings"
    arch = {b["hook"]: b for b in payloads["architecture"]["boxes"]}
    assert {"pos_embeddings", "embeddings"} <= set(arch) and "layers.*.attention.q_rot" not in arch
    assert payloads["summary"]["total_params"] == model.num_params()
    # The tour's lines are GPT-2's own where it computes them (shared helpers may live in
    # model.py, the tokenizer in tokenizer/): every one is a real line of a real file.
    tour_paths = {s["path"] for st in payloads["tour"]["stages"] for s in st["sources"]}
    assert "llama/gpt2.py" in tour_paths
    for st in payloads["tour"]["stages"]:
        for s in st["sources"]:
            assert s["context"]["lines"][s["line"] - s["context"]["start"]].strip()


def test_rope_is_not_there_and_says_why(gpt2):
    engine = gpt2[0]
    views = {v["name"]: v for v in engine.info()["views"]}
    assert not views["rope"]["available"] and "no rotary position embedding" in views["rope"]["why_not"]
    assert views["positions"]["available"]
    with pytest.raises(EngineError, match="positions"):
        engine.view(None, "rope")


def test_position_embeddings_are_the_models_learned_vectors(gpt2):
    engine, model, _ = gpt2
    p = engine.view(None, "positions", {"positions": 64})
    wpe = model.pos_embeddings.weight[:64].detach().double()
    assert p["n_positions"] == 64 and p["n_learned"] == model.pos_embeddings.num_embeddings
    assert np.allclose(p["norms"], wpe.norm(dim=-1).numpy(), rtol=1e-3)
    unit = wpe / wpe.norm(dim=-1, keepdim=True)
    cos = (unit @ unit.T).numpy()
    from llama.studio.engine._json import unpack_unit_u16

    assert np.allclose(unpack_unit_u16(p["cosine"]) * 2 - 1, cos, atol=1e-4)
    assert np.allclose(p["by_offset"][3], np.diagonal(cos, 3).mean(), atol=1e-4)
    x = wpe.numpy() - wpe.numpy().mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    dist = lambda c: np.linalg.norm(c[:, None] - c[None], axis=-1)  # noqa: E731
    assert np.allclose(dist(np.array(p["coords"])), dist(x @ vt[:3].T), atol=1e-3)


def test_token_embeddings_are_the_wte_rows(gpt2):
    engine, model, tok = gpt2
    engine.set_text("e", PROMPT)
    p = engine.view("e", "embeddings")
    distinct = list(dict.fromkeys(tok.encode(PROMPT)))
    assert p["ids"] == distinct and len(p["coords"]) == len(distinct) and len(p["coords"][0]) == 3
    rows = model.tok_embeddings.weight[distinct].detach().double()
    assert np.allclose(p["norms"], rows.norm(dim=-1).numpy(), rtol=1e-3)


def test_dla_on_gpt2_has_position_embeddings_and_biases_and_sums_to_the_logit(gpt2):
    engine, model, tok = gpt2
    engine.set_text("d", PROMPT)
    p = engine.view("d", "dla")
    groups = {q["name"]: q["group"] for q in p["parts"]}
    assert groups["pos_embed"] == "embed" and groups["norm.bias"] == "bias" and groups["L0.attn_bias"] == "bias"
    logit = float(own_logits(model, tok.encode(PROMPT))[-1, p["target"]])
    assert abs(p["logit"] - logit) < 1e-4 and abs(sum(q["value"] for q in p["parts"]) - logit) < 1e-3
    assert p["norm_kind"] == "layer"


def test_ablating_a_gpt2_blocks_attention_leaves_wos_bias(gpt2):
    """Every head of a block zeroed: attention.out becomes wo's bias, checked by hand."""
    from llama.hooks import intervene

    engine, model, tok = gpt2
    engine.set_text("i", PROMPT)
    p = engine.view("i", "intervene", {"edit": "ablate_attn", "layer": 1})
    bias = model.layers[1].attention.wo.bias.detach()
    ids = torch.tensor([tok.encode(PROMPT)])
    model.reset_cache()
    with torch.no_grad(), intervene(model, {"layers.1.attention.out": lambda v: bias.expand_as(v).clone()}):
        want = torch.softmax(model(ids)[0, -1].float(), -1)
    model.reset_cache()
    assert p["edited"][0]["id"] == int(want.argmax()) and abs(p["edited"][0]["prob"] - float(want.max())) < 1e-4


def test_patching_on_gpt2_restores_at_the_last_residual(gpt2):
    engine, model, tok = gpt2
    engine.set_text("p", PROMPT)
    p = engine.view("p", "patching", {"corrupt": same_length_prompt(tok, PROMPT)})
    assert abs(p["scores"][-1][-1] - 1) < 1e-4  # the last residual at the last position: all of it
    assert p["hooks"][0] == "layers.*.resid_post"
