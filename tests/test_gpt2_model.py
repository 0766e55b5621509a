"""llama.gpt2.GPT2 against transformers' GPT2LMHeadModel, logit by logit and hook by hook.

Tiny random models shaped like GPT-2 small and medium (tests/gpt2_models.py), loaded
through weights.load_model from a save_pretrained folder, so the name mapping and the
Conv1D transposition are part of what is compared.
"""

from __future__ import annotations

import pytest
import torch

from gpt2_models import (
    ATOL_F32,
    GPT2_MEDIUM_CONFIG,
    GPT2_MEDIUM_PARAMS,
    TINY_GPT2,
    tiny_gpt2,
    tokens_for,
    write_hf,
)
from llama.config import ConfigError, ModelArgs
from llama.gpt2 import GPT2, GPT2Config
from llama.hooks import capture, intervene, load_capture, run_with_cache, save_capture
from llama.parity.reference import cached_step
from llama.source import hook_source
from llama.taps import Tappable, hook_order
from weights import load_model

KINDS = list(TINY_GPT2)


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory):
    hf = tiny_gpt2(request.param)
    folder = write_hf(hf, tmp_path_factory.mktemp(f"gpt2-{request.param}"))
    return request.param, hf, load_model(folder)


def test_config_and_protocol_names(pair):
    kind, hf, ours = pair
    a, c = ours.args, hf.config
    assert isinstance(ours, GPT2) and isinstance(a, GPT2Config)
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.dim) == (c.n_layer, c.n_head, c.n_head, c.n_embd)
    assert (a.head_dim, a.hidden_dim, a.vocab_size, a.max_seq_len) == (
        c.n_embd // c.n_head, 4 * c.n_embd, c.vocab_size, c.n_positions,
    )
    assert a.to_dict()["n_embd"] == c.n_embd and GPT2Config(**a.to_dict()) == a
    assert GPT2Config.from_hf_config(a.to_hf_config()) == a
    assert ours.output.weight is ours.tok_embeddings.weight  # tied
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())  # tied counted once
    assert ours.layers[0].attention.wo.bias is not None  # biases everywhere


def test_float32_logits_match(pair):
    kind, hf, ours = pair
    tokens = tokens_for(hf.config.vocab_size, length=72)
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens)
    assert got.shape == expected.shape == (2, 72, hf.config.vocab_size)
    assert got.dtype == torch.float32
    assert expected.abs().max() > 1.0, "random model too tame to test anything"
    diff = (got - expected).abs().max().item()
    assert diff <= ATOL_F32, f"{kind}: max abs logit diff {diff:.3g}"


def test_prefill_then_decode_token_by_token(pair):
    """64 tokens of prefill, then 8 single tokens through the KV cache, against
    transformers' full forward and its own cached decoding."""
    kind, hf, ours = pair
    tokens = tokens_for(hf.config.vocab_size, length=72, seed=5)
    with torch.no_grad():
        full = hf(tokens).logits
        out, past = cached_step(hf, tokens[:, :64])
        hf_steps = [out.logits]
        for pos in range(64, 72):
            out, past = cached_step(hf, tokens[:, pos : pos + 1], past)
            hf_steps.append(out.logits)
        ours.reset_cache()
        steps = [ours(tokens[:, :64])]
        for pos in range(64, 72):
            steps.append(ours(tokens[:, pos : pos + 1], start_pos=pos))
    assert ours.cache_length == 72
    got, hf_cached = torch.cat(steps, dim=1), torch.cat(hf_steps, dim=1)
    assert (got - full).abs().max().item() <= ATOL_F32
    assert (got - hf_cached).abs().max().item() <= ATOL_F32
    with torch.no_grad():  # last_only: the same last row
        last = ours(tokens, last_only=True)
    assert last.shape == (2, 1, hf.config.vocab_size)
    assert (last[:, 0] - full[:, -1]).abs().max().item() <= ATOL_F32


def test_explicit_attention_equals_fused(pair):
    kind, hf, ours = pair
    tokens = tokens_for(hf.config.vocab_size, length=40, seed=3)
    with torch.no_grad():
        fused = ours(tokens)
        ours.set_attention_impl("explicit")
        try:
            explicit = ours(tokens)
        finally:
            ours.set_attention_impl("sdpa")
    assert ours.layers[0].attention.impl == "sdpa"
    assert (fused - explicit).abs().max().item() <= ATOL_F32


def test_hook_captures_equal_hidden_states_and_attentions(pair):
    kind, hf, ours = pair
    L = hf.config.n_layer
    tokens = tokens_for(hf.config.vocab_size, length=64, seed=7)
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True, output_attentions=True)
    logits, cache = run_with_cache(ours, tokens)
    assert len(out.hidden_states) == L + 1 and len(out.attentions) == L

    def close(a, b, what):
        assert a.shape == b.shape, what
        assert (a - b).abs().max().item() <= 1e-4, what

    # hidden_states[0] is the input to the first block: token + position embedding.
    close(cache["embeddings"], out.hidden_states[0], "embeddings")
    assert torch.equal(cache["embeddings"], cache["tok_embeddings"] + cache["pos_embeddings"])
    close(cache["tok_embeddings"], hf.transformer.wte(tokens), "tok_embeddings")
    # hidden_states[i] is the output of block i-1 ...
    for i in range(1, L):
        close(cache[f"layers.{i - 1}.resid_post"], out.hidden_states[i], f"resid_post {i - 1}")
    # ... except the last, which transformers gives after the final LayerNorm (ln_f).
    close(cache["norm"], out.hidden_states[L], "norm (ln_f applied)")
    assert (cache[f"layers.{L - 1}.resid_post"] - out.hidden_states[L]).abs().max() > 1e-2
    for i in range(L):
        close(cache[f"layers.{i}.attention.probs"], out.attentions[i], f"probs {i}")
    close(cache["logits"], out.logits, "logits")
    assert ours.layers[0].attention.impl == "sdpa"  # switched back after the capture


def test_hook_names_and_shapes(pair):
    kind, hf, ours = pair
    a = ours.args
    names = ours.hook_names()
    assert names[:3] == ["tok_embeddings", "pos_embeddings", "embeddings"]
    assert names[-2:] == ["norm", "logits"]
    layer0 = [n.removeprefix("layers.0.") for n in names if n.startswith("layers.0.")]
    assert layer0 == [
        "attention_norm", "attention.q", "attention.k", "attention.v", "attention.scores",
        "attention.probs", "attention.heads", "attention.out", "resid_mid", "ffn_norm",
        "feed_forward.up", "feed_forward.act", "feed_forward.out", "resid_post",
    ]
    assert len(names) == 5 + 14 * a.n_layers
    B, T = 2, 10
    tokens = tokens_for(a.vocab_size, length=T, batch=B, seed=2)
    _, cache = run_with_cache(ours, tokens)
    assert list(cache) == names  # every name fires, in forward order
    D, H, Hd, F, V = a.dim, a.n_heads, a.head_dim, a.hidden_dim, a.vocab_size
    expected = {
        "tok_embeddings": (B, T, D), "pos_embeddings": (B, T, D), "embeddings": (B, T, D),
        "layers.0.attention.q": (B, T, H, Hd), "layers.0.attention.v": (B, T, H, Hd),
        "layers.0.attention.scores": (B, H, T, T), "layers.0.attention.probs": (B, H, T, T),
        "layers.0.attention.heads": (B, T, H, Hd), "layers.0.attention.out": (B, T, D),
        "layers.0.feed_forward.up": (B, T, F), "layers.0.feed_forward.act": (B, T, F),
        "layers.1.resid_post": (B, T, D), "norm": (B, T, D), "logits": (B, T, V),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    # The same positions for every sequence; rows are the learned vectors of positions 0..T-1.
    assert torch.equal(cache["pos_embeddings"][0], ours.pos_embeddings.weight[:T])
    assert torch.equal(cache["pos_embeddings"][1], cache["pos_embeddings"][0])


def test_hook_order_is_the_order_taps_fire(pair, tmp_path):
    """hook_names() comes from the classes' tap_order (llama.taps), and equals the order in
    which a forward pass really calls the taps (recorded with a bare _tap_fn, not
    llama.hooks); a capture file restores it from its recorded class alone."""
    kind, hf, ours = pair
    fired: list[str] = []
    tappables = [(p, m) for p, m in ours.named_modules() if isinstance(m, Tappable)]
    for prefix, module in tappables:
        module._tap_fn = lambda local, value, prefix=prefix: (
            fired.append(f"{prefix}.{local}" if prefix else local) or value)
    ours.set_attention_impl("explicit")  # scores and probs fire only on this path
    try:
        with torch.no_grad():
            ours(tokens_for(ours.args.vocab_size, length=4, batch=1))
    finally:
        for _, module in tappables:
            module._tap_fn = None
        ours.set_attention_impl("sdpa")
        ours.reset_cache()
    assert fired == ours.hook_names() == hook_order(GPT2, n_layers=ours.args.n_layers)

    tokens = tokens_for(ours.args.vocab_size, length=5, batch=1)
    _, cache = run_with_cache(ours, tokens)
    path = save_capture(tmp_path / "gpt2.safetensors", cache, tokens=tokens, model=ours)
    cap = load_capture(path)
    assert cap.context["family"] == "gpt2" and cap.context["model_class"] == "llama.gpt2:GPT2"
    assert list(cap.tensors) == ours.hook_names()
    # Each name's source line is in llama/gpt2.py and computes that value.
    assert hook_source("pos_embeddings", ours).path == "llama/gpt2.py"
    assert "self.pos_embeddings(positions)" in hook_source("pos_embeddings", ours).text
    assert "F.gelu" in hook_source("layers.1.feed_forward.act", GPT2).text


def test_interventions_reach_the_logits(pair):
    """Editing a hook changes what follows: zeroing every position vector equals a model
    whose position matrix is zero."""
    kind, hf, ours = pair
    tokens = tokens_for(ours.args.vocab_size, length=12, seed=4)
    with torch.no_grad(), intervene(ours, {"pos_embeddings": lambda v: torch.zeros_like(v)}):
        edited = ours(tokens)
    saved = ours.pos_embeddings.weight.detach().clone()
    try:
        with torch.no_grad():
            ours.pos_embeddings.weight.zero_()
            expected = ours(tokens)
    finally:
        with torch.no_grad():
            ours.pos_embeddings.weight.copy_(saved)
    assert torch.allclose(edited, expected, atol=1e-5)
    with torch.no_grad():
        assert (ours(tokens) - edited).abs().max() > 1e-2
    with capture(ours, "layers.*.attention.probs") as probs:
        with torch.no_grad():
            ours(tokens)
    assert len(probs) == ours.args.n_layers


def test_bfloat16_same_top1(pair):
    kind, hf, ours = pair
    tokens = tokens_for(hf.config.vocab_size, length=24, seed=2)
    ours16 = GPT2(ours.args)
    ours16.load_state_dict(ours.state_dict())
    ours16 = ours16.to(torch.bfloat16).eval()
    with torch.no_grad():
        expected = hf(tokens).logits.argmax(-1)
        got = ours16(tokens)
    assert got.dtype == torch.float32
    agree = (got.argmax(-1) == expected).float().mean().item()
    assert agree >= 0.9, f"{kind}: bfloat16 top-1 agrees on only {agree:.0%} of positions"


def test_gpt2_medium_published_config_parameter_count():
    """gpt2-medium: 24 layers, width 1024, 16 heads, 1024 positions; transformers counts
    354,823,168 parameters. Built on the meta device: shapes only, no memory."""
    args = GPT2Config.from_hf_config(GPT2_MEDIUM_CONFIG)
    assert (args.n_layers, args.dim, args.n_heads, args.max_seq_len) == (24, 1024, 16, 1024)
    assert (args.head_dim, args.hidden_dim, args.vocab_size) == (64, 4096, 50257)
    with torch.device("meta"):
        model = GPT2(args)
    assert model.num_params() == GPT2_MEDIUM_PARAMS
    # And transformers, also on the meta device, agrees.
    from transformers import GPT2Config as HFConfig, GPT2LMHeadModel

    with torch.device("meta"):
        hf = GPT2LMHeadModel(HFConfig(**GPT2_MEDIUM_CONFIG))
    assert sum(p.numel() for p in hf.parameters()) == GPT2_MEDIUM_PARAMS


def test_input_errors_match_the_llama_model():
    model = GPT2(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    cases = [
        ([1, 2, 3], TypeError, "torch.Tensor"),
        (torch.ones(3, dtype=torch.long), ValueError, r"shape \(batch, seq\)"),
        (torch.ones(1, 3), TypeError, "integer ids"),
        (torch.ones(1, 0, dtype=torch.long), ValueError, "empty"),
        (torch.full((1, 3), 50), ValueError, r"\[0, 50\)"),
        (torch.ones(1, 17, dtype=torch.long), ValueError, "max_seq_len 16: GPT-2 has learned vectors for 16"),
    ]
    for tokens, error, message in cases:
        with pytest.raises(error, match=message):
            model(tokens)
    with pytest.raises(ValueError, match="start_pos must be a non-negative int"):
        model(torch.ones(1, 2, dtype=torch.long), start_pos=-1)
    with pytest.raises(ValueError, match="continues a sequence"):
        model.reset_cache()
        model(torch.ones(1, 2, dtype=torch.long), start_pos=2)
    with pytest.raises(ValueError, match="'sdpa' or 'explicit'"):
        model.set_attention_impl("flash")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(activation_function="relu"), "activation_function 'relu'"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (dict(scale_attn_weights=False), "scale_attn_weights"),
        (dict(add_cross_attention=True), "cross_attention"),
        (dict(n_embd=1000), "divisible by n_head"),
        (dict(model_type="llama"), "not GPT-2"),
    ],
)
def test_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        GPT2Config.from_hf_config({**GPT2_MEDIUM_CONFIG, **change})


def test_config_refuses_unknown_overrides_and_llama_refers_to_it():
    with pytest.raises(ConfigError, match="cannot override max_seq_len.*n_positions"):
        GPT2Config.from_hf_config(GPT2_MEDIUM_CONFIG, max_seq_len=4096)
    with pytest.raises(ConfigError, match="GPT2Config.from_hf_config"):
        ModelArgs.from_hf_config(GPT2_MEDIUM_CONFIG)
    with pytest.raises(TypeError, match="n_layers"):
        GPT2Config(n_layers=3)  # a protocol name, not a field: refused, not ignored


def test_split_qkv_gives_the_q_k_v_projections(pair):
    """The fused wqkv's three parts, as views, compute the q, k and v hooks."""
    kind, hf, ours = pair
    a = ours.args
    tokens = tokens_for(a.vocab_size, length=8, seed=9)
    _, cache = run_with_cache(ours, tokens, ["layers.1.attention_norm", "layers.1.attention.*"])
    parts = ours.layers[1].attention.split_qkv()
    x = cache["layers.1.attention_norm"]  # (B, T, D)
    for name in ("q", "k", "v"):
        w, b = parts[f"w{name}.weight"], parts[f"w{name}.bias"]
        assert w.shape == (a.dim, a.dim) and w.data_ptr() >= ours.layers[1].attention.wqkv.weight.data_ptr()
        got = (x @ w.T + b).view(*x.shape[:2], a.n_heads, a.head_dim)  # (B, T, D) -> (B, T, H, Hd)
        assert torch.allclose(got, cache[f"layers.1.attention.{name}"], atol=1e-5), name
