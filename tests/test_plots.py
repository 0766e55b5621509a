"""llama.analysis and llama.plots: the numbers behind every plot, and every kind renders
to a real image.

A tiny random Transformer (2 layers, GQA 4:2, tied embeddings) stands in for a model; its
intermediates come from llama.hooks. The numbers are checked against independent
computations: PCA against the covariance eigenvalues, attention rows against the softmax
definition, the logit lens against the model's own logits, saliency against causality and
against autograd through an intervention, parameter statistics against float64 references.
"""

from __future__ import annotations


import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from llama.config import ModelArgs
from llama.model import Transformer, rope_inv_freq
from llama.analysis import (
    activation_stats,
    attention_maps,
    first_token_share,
    logit_lens,
    model_summary,
    param_stats,
    parse_stages,
    pca,
    pca_stages,
    plain_tokens,
    rope_table,
    run_and_capture,
    saliency,
    summary_text,
    tensor_stats,
    top_k,
)
from llama.analysis import params as params_module
from llama.analysis.summary import param_counts_from_args
from llama.plots import (
    PlotError,
    plot_activations,
    plot_architecture,
    plot_attention_grid,
    plot_attention_head,
    plot_first_token_share,
    plot_lens,
    plot_params,
    plot_pca,
    plot_rope,
    plot_saliency,
    plot_summary,
    plot_tokens,
    plot_topk,
    readable_token,
    save_figure,
)

T = 9  # prompt length of the tiny runs


def tiny_args(**overrides) -> ModelArgs:
    cfg = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, ffn_hidden_dim=96,
               max_seq_len=64, rope_theta=10000.0, tie_embeddings=True)
    cfg.update(overrides)
    return ModelArgs(**cfg)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_args(**overrides))
    with torch.no_grad():
        # Embeddings of moderate scale and norm weights near 1: logits with clear but not
        # certain winners, residual norms that change from layer to layer.
        model.tok_embeddings.weight.normal_(0, 0.25)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def ids():
    return [1, 17, 5, 42, 8, 8, 63, 2, 30][:T]


@pytest.fixture(scope="module")
def tokens(ids):
    return torch.tensor([ids])


@pytest.fixture(scope="module")
def cache(model, tokens):
    names = ["tok_embeddings", "layers.*.resid_post", "layers.*.attention.probs",
             "layers.*.feed_forward.act", "layers.*.ffn_norm", "logits"]
    return run_and_capture(model, tokens, names)


def assert_real_image(path):
    """A non-trivial PNG: readable, a sensible size, and not one flat colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 3_000
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 200
    assert img[..., :3].std() > 0.02


# ----------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------


def test_pca_explained_variance_matches_covariance_eigenvalues():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 7, generator=gen) @ torch.randn(7, 7, generator=gen)
    r = pca(x, k=3)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T)))[::-1]
    np.testing.assert_allclose(r.explained_variance_ratio, eig[:3] / eig.sum(), rtol=1e-9)
    # Coordinates are the projections of the centred points on orthonormal axes.
    np.testing.assert_allclose(r.components @ r.components.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(np.var(r.coords, axis=0, ddof=1), eig[:3], rtol=1e-9)


def test_pca_of_points_in_a_plane_explains_everything():
    gen = torch.Generator().manual_seed(1)
    plane = torch.randn(2, 16, generator=gen)
    x = torch.randn(12, 2, generator=gen) @ plane + 3.0  # 12 points in a 2-D affine plane
    r = pca(x, k=2)
    assert r.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    # The two coordinates reconstruct the points exactly.
    back = r.coords @ r.components + r.mean
    np.testing.assert_allclose(back, x.double().numpy(), atol=1e-5)  # x itself is float32


def test_pca_stages_on_the_model(cache, model, ids):
    stages = parse_stages("emb,0,-1", model.args.n_layers)
    assert stages == [0, 1, 2]
    grid = pca_stages(cache, stages, dims=3)
    assert len(grid.coords) == 3 and grid.coords[0].shape == (T, 3)
    for fit in grid.per_stage:
        assert 0 < fit.explained_variance_ratio.sum() <= 1 + 1e-12
    # Stage 0 is the token embeddings themselves.
    direct = pca(model.tok_embeddings.weight[ids].detach(), k=3)
    np.testing.assert_allclose(grid.per_stage[0].explained_variance_ratio,
                               direct.explained_variance_ratio, rtol=1e-6)
    traj = pca_stages(cache, stages, view="trajectory", skip_first=True)
    assert traj.positions == list(range(1, T))
    assert len(traj.per_stage) == 1 and all(c.shape == (T - 1, 2) for c in traj.coords)


def test_parse_stages_errors_name_the_range():
    with pytest.raises(PlotError, match=r"0\.\.29"):
        parse_stages("emb,30", 30)
    with pytest.raises(PlotError, match="not a number"):
        parse_stages("first", 30)
    assert parse_stages(None, 30) == [0, 6, 12, 18, 24, 30]
    assert parse_stages("-1,emb", 30) == [30, 0]


# ----------------------------------------------------------------------------------
# Attention, activations
# ----------------------------------------------------------------------------------


def test_attention_rows_are_distributions_and_causal(cache, model):
    maps = attention_maps(cache)
    assert sorted(maps.probs) == [0, 1]
    for p in maps.probs.values():
        assert p.shape == (model.args.n_heads, T, T)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        assert (p >= 0).all()
        assert np.triu(p, k=1).max() == 0.0  # no query looks at a later token
    share = first_token_share(maps)
    assert share.shape == (2, model.args.n_heads)
    manual = np.array([[maps.probs[i][h, 1:, 0].mean() for h in range(4)] for i in (0, 1)])
    np.testing.assert_allclose(share, manual)


def test_attention_index_errors(cache, ids):
    maps = attention_maps(cache)
    with pytest.raises(PlotError, match=r"head 4 is out of range.*0\.\.3"):
        plot_attention_head(maps, plain_tokens(ids), layer=0, head=4)
    with pytest.raises(PlotError, match=r"layer 5 is out of range.*0\.\.1"):
        attention_maps(cache, [5])


def test_activation_stats(cache, model, ids):
    a = activation_stats(cache)
    assert a.resid_norm.shape == (3, T) and a.mlp_mean_abs.shape == (2, T)
    emb = model.tok_embeddings.weight[ids].detach()
    np.testing.assert_allclose(a.resid_norm[0], emb.norm(dim=-1).numpy(), rtol=1e-5)
    # MLP activation of layer 1 recomputed from its weights and its (captured) input.
    ff = model.layers[1].feed_forward
    x = cache["layers.1.ffn_norm"][0]
    with torch.no_grad():
        act = torch.nn.functional.silu(ff.w1(x)) * ff.w3(x)
    np.testing.assert_allclose(a.mlp_mean_abs[1], act.abs().mean(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(a.mlp_max_abs[1], act.abs().amax(-1).numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------------
# Logit lens, top-k, saliency
# ----------------------------------------------------------------------------------


def test_lens_at_the_last_layer_is_the_models_prediction(cache, model, tokens):
    lens = logit_lens(model, cache)
    assert lens.top_ids.shape == (3, T)
    with torch.no_grad():
        probs = torch.softmax(model(tokens)[0], -1)  # (T, V)
    p, i = probs.max(-1)
    np.testing.assert_array_equal(lens.top_ids[-1], i.numpy())
    np.testing.assert_allclose(lens.top_probs[-1], p.numpy(), atol=1e-5)
    np.testing.assert_allclose(lens.final_token_probs[-1], p.numpy(), atol=1e-5)
    # Earlier stages decode other vectors: they are not simply copies of the last one.
    assert not np.allclose(lens.top_probs[0], lens.top_probs[-1])


def test_topk_matches_softmax(cache):
    logits = cache["logits"]
    r = top_k(logits, k=5, position=3)
    probs = torch.softmax(logits[0, 3], -1)
    p, i = probs.topk(5)
    np.testing.assert_array_equal(r.ids, i.numpy())
    np.testing.assert_allclose(r.probs, p.numpy(), rtol=1e-6)
    assert (np.diff(r.probs) <= 0).all()
    with pytest.raises(PlotError, match=r"position 9 is out of range.*0\.\.8"):
        top_k(logits, position=9)
    with pytest.raises(PlotError, match="k must be between 1 and"):
        top_k(logits, k=0)


def test_saliency_is_zero_for_tokens_after_the_position(model, tokens):
    s = saliency(model, tokens, position=4)
    assert s.scores.shape == (T,)
    # Causal attention: the prediction at position 4 cannot depend on positions 5..T-1.
    assert (s.scores[5:] == 0).all() and (s.grad_norm[5:] == 0).all()
    assert (s.grad_norm[:5] > 0).all()
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens)[0, 4], -1)
    assert s.target_id == int(logp.argmax())
    assert s.target_logprob == pytest.approx(float(logp.max()), abs=1e-5)


def test_saliency_equals_autograd_through_an_intervention(model, tokens):
    """Input x gradient computed independently: replace the embeddings by a leaf tensor."""
    from llama.hooks import intervene

    s = saliency(model, tokens, position=-1)
    emb = model.tok_embeddings(tokens).detach().clone().requires_grad_(True)  # (1, T, D)
    with intervene(model, {"tok_embeddings": lambda value: emb}):
        logits = model(tokens)
    torch.log_softmax(logits[0, -1], -1)[s.target_id].backward()
    expected = (emb.grad[0] * emb[0]).sum(-1).detach().numpy()
    np.testing.assert_allclose(s.scores, expected, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------
# Parameters, summary, RoPE
# ----------------------------------------------------------------------------------


def test_tensor_stats_chunked_equals_float64_reference(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(37, 23, generator=gen) * 0.3 + 0.05).to(torch.bfloat16)
    monkeypatch.setattr(params_module, "CHUNK_ELEMENTS", 50)  # force many chunks of 2 rows
    s = tensor_stats(w)
    ref = w.double()
    assert s.numel == w.numel()
    assert s.mean == pytest.approx(float(ref.mean()), rel=1e-6)
    assert s.std == pytest.approx(float(ref.std(unbiased=False)), rel=1e-6)
    assert s.norm == pytest.approx(float(ref.norm()), rel=1e-6)
    assert s.absmax == pytest.approx(float(ref.abs().max()))


def test_param_stats_per_layer(model):
    ps = param_stats(model)
    wq1 = model.layers[1].attention.wq.weight.detach().double()
    assert ps.stats["attention.wq"]["std"][1] == pytest.approx(float(wq1.std(unbiased=False)), rel=1e-5)
    assert ps.stats["feed_forward.w2"]["norm"].shape == (2,)
    np.testing.assert_allclose(ps.rows["attention.wq"][1], wq1.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(ps.rows["ffn_norm"][0], model.layers[0].ffn_norm.weight.detach().numpy())
    for kind, h in ps.hist.items():  # every value lands in some bin (tails in the edge bins)
        w = model.layers[0].get_submodule(kind).weight
        assert h[0].sum() == w.numel()
    assert "output" not in ps.others  # tied: one matrix, reported once


def test_summary_counts_and_memory():
    for tied in (True, False):
        m = tiny_model(tie_embeddings=tied, attention_bias=not tied)
        s = model_summary(m, "tiny")
        assert s.total_params == m.num_params() == sum(param_counts_from_args(m.args).values())
        assert s.params == param_counts_from_args(m.args)
        assert s.tied.startswith("tied") if tied else s.tied.startswith("untied")
    a = m.args
    per_token = 2 * a.n_layers * a.n_kv_heads * a.head_dim  # keys and values
    assert s.kv_bytes_per_token["float32"] == 4 * per_token
    assert s.kv_bytes_full["bfloat16 / float16"] == 2 * per_token * a.max_seq_len
    assert s.weight_bytes["float32"] == 4 * s.total_params
    text = summary_text(s)
    assert "key/value heads" in text and f"{s.total_params:,}" in text
    # From the configuration alone (an export) the counts are the same.
    assert model_summary(a).total_params == s.total_params
    with pytest.raises(TypeError, match="needs a model .*Transformer.* or its configuration"):
        model_summary("not a model")


def test_rope_table_uses_the_models_frequencies():
    plain = tiny_args()
    t = rope_table(plain, positions=32)
    np.testing.assert_allclose(t.inv_freq, rope_inv_freq(16, 10000.0).numpy())
    m = Transformer(plain)
    np.testing.assert_allclose(t.cos, m.freqs_cis[:32].real.numpy(), atol=1e-5)
    np.testing.assert_allclose(t.sin, m.freqs_cis[:32].imag.numpy(), atol=1e-5)
    scaled = rope_table(tiny_args(use_scaled_rope=True, rope_scaling_factor=32.0, rope_theta=5e5))
    assert scaled.scaling_is_models_own
    # Fast pairs keep their speed; the slowest is slowed by exactly the factor.
    assert scaled.inv_freq_scaled[0] == pytest.approx(scaled.inv_freq[0])
    assert scaled.inv_freq_scaled[-1] == pytest.approx(scaled.inv_freq[-1] / 32)
    assert not t.scaling_is_models_own and t.scaling["factor"] == 8.0


def test_readable_token():
    assert readable_token("Ġcapital") == "␣capital"
    assert readable_token("▁Paris") == "␣Paris"
    assert readable_token("\n") == "↵"
    assert readable_token("$5") == r"\$5"
    assert readable_token("a" * 40).endswith("…")


# ----------------------------------------------------------------------------------
# Every kind renders
# ----------------------------------------------------------------------------------


def _figures(model, cache, tokens, ids):
    toks = plain_tokens(ids)
    maps = attention_maps(cache)
    ps = param_stats(model)
    stages = parse_stages(None, 2)
    return {
        "summary": plot_summary(model_summary(model, "tiny")),
        "tokens": plot_tokens(toks, "tiny", prompt="a tiny prompt"),
        "pca_grid": plot_pca(pca_stages(cache, stages), toks),
        "pca_3d": plot_pca(pca_stages(cache, stages, dims=3), toks),
        "pca_traj": plot_pca(pca_stages(cache, stages, view="trajectory"), toks),
        "attention_head": plot_attention_head(maps, toks, layer=-1, head=2),
        "attention_grid": plot_attention_grid(maps, toks, layer=0),
        "attention_sink": plot_first_token_share(maps, toks),
        "activations": plot_activations(activation_stats(cache), toks),
        "lens": plot_lens(logit_lens(model, cache), toks, decode=lambda i: f"t{i}"),
        "topk": plot_topk(top_k(cache["logits"], k=6), toks),
        "saliency": plot_saliency(saliency(model, tokens, position=5), toks),
        "params_stats": plot_params(ps, "stats"),
        "params_hist": plot_params(ps, "hist"),
        "params_heatmap": plot_params(ps, "heatmap"),
        "rope": plot_rope(rope_table(model.args)),
        "architecture": plot_architecture(model.args),
    }


def test_every_kind_renders_an_image(model, cache, tokens, ids, tmp_path):
    figures = _figures(model, cache, tokens, ids)
    for name, fig in figures.items():
        out = save_figure(fig, tmp_path / f"{name}.png", dpi=60)  # low dpi: a faster test
        assert_real_image(out)
    svg = save_figure(plot_rope(rope_table(model.args)), tmp_path / "rope.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    with pytest.raises(PlotError, match=r"\.png, \.svg or \.pdf"):
        save_figure(plot_tokens(plain_tokens(ids)), tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="stats, hist, heatmap"):
        plot_params(param_stats(model), "violin")
