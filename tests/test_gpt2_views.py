"""Every view's numbers on GPT-2 (llama.analysis through llama.family), checked against
transformers' GPT2LMHeadModel or against the definitions: the summary (gpt2-medium's
354,823,168 parameters), the learned positions, the token-vector PCA, weight statistics
with the fused q/k/v split, the residual stream entering layers.0 (token + position, the
`embeddings` hook) in the lens, PCA and activation norms, and the architecture drawing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpt2_models import (
    GPT2_MEDIUM_CONFIG,
    GPT2_MEDIUM_PARAMS,
    tiny_gpt2,
    tokens_for,
    write_hf,
)
from llama.analysis import (
    VIEW_KINDS,
    AnalysisError,
    ViewSource,
    activation_stats,
    compute_view,
    model_summary,
    param_counts_from_args,
    param_stats,
    pca,
    position_embeddings,
    residual_stages,
    run_and_capture,
    summary_text,
)
from llama.family import FAMILIES, family_of, residual_input
from llama.gpt2 import GPT2, GPT2Config
from weights import load_model

IDS = [5, 17, 5, 42, 8, 99, 63, 2, 17, 30]  # repeats: 5 and 17 appear twice


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny GPT-2 (small's shape) from transformers, and ours loaded from its folder."""
    hf = tiny_gpt2("small")
    with torch.no_grad():
        hf.transformer.wte.weight.mul_(0.1)  # predictions that are not all the token itself
    return hf, load_model(write_hf(hf, tmp_path_factory.mktemp("gpt2-views")))


# ---------------------------------------------------------------------------------------
# The family table
# ---------------------------------------------------------------------------------------


def test_family_of_every_kind_of_object(pair):
    hf, ours = pair
    gpt2 = FAMILIES["gpt2"]
    assert family_of(ours) is family_of(GPT2) is family_of(ours.args) is family_of("gpt2") is gpt2
    assert family_of({"family": "gpt2"}) is family_of({"model_class": "llama.gpt2:GPT2"}) is gpt2
    assert family_of({}).name == "llama"  # a capture file from before families were recorded
    assert gpt2.model() is GPT2 and gpt2.config(ours.args.to_dict()) == ours.args
    assert residual_input(ours) == "embeddings" and gpt2.source == "llama/gpt2.py"
    assert "embeddings" in ours.hook_names()  # the family's residual input is a real hook
    from tiny_models import ours_from_hf, tiny_hf_model

    llama = ours_from_hf(tiny_hf_model("llama2"))
    assert residual_input(llama) == "tok_embeddings" and residual_input(llama.args) == "tok_embeddings"
    with pytest.raises(LookupError, match="no model family"):
        family_of(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------


def test_gpt2_medium_summary():
    args = GPT2Config.from_hf_config(GPT2_MEDIUM_CONFIG)
    s = model_summary(args, "gpt2-medium")
    rows = dict(s.config)
    assert (rows["layers"], rows["hidden size (dim)"], rows["attention heads"]) == ("24", "1,024", "16")
    assert rows["context (max_seq_len)"] == "1,024" and rows["head size"] == "64"
    assert rows["positions"].startswith("learned: 1,024 vectors") and "rope theta" not in rows
    assert rows["norm"] == "LayerNorm, eps 1e-05" and "q/k/v bias" not in rows
    assert s.total_params == GPT2_MEDIUM_PARAMS == 354_823_168
    assert s.params["embedding"] == 50257 * 1024 and s.params["position embedding"] == 1024 * 1024
    assert s.params["output"] == 0  # tied: the embedding matrix again
    assert "354,823,168" in summary_text(s)
    with torch.device("meta"):
        model = GPT2(args)
    counted = model_summary(model)  # tensor by tensor, on the meta device
    assert counted.params == s.params and counted.total_params == model.num_params()


def test_counts_by_part_match_transformers_modules():
    hf = tiny_gpt2("small", tie_word_embeddings=False)
    parts = param_counts_from_args(GPT2Config.from_hf_config(hf.config.to_dict()))

    def n(modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    blocks, t = hf.transformer.h, hf.transformer
    assert parts["embedding"] == t.wte.weight.numel()
    assert parts["position embedding"] == t.wpe.weight.numel()
    assert parts["attention"] == n(b.attn for b in blocks)
    assert parts["feed-forward"] == n(b.mlp for b in blocks)
    assert parts["norms"] == n([*(b.ln_1 for b in blocks), *(b.ln_2 for b in blocks), t.ln_f])
    assert parts["output"] == hf.lm_head.weight.numel()
    assert sum(parts.values()) == sum(p.numel() for p in hf.parameters())


def test_summary_view_counts_the_loaded_model(pair):
    hf, ours = pair
    view = compute_view("summary", ViewSource.from_model(ours, ids=IDS))
    assert view.data.total_params == ours.num_params() == sum(p.numel() for p in hf.parameters())
    assert view.data.tied.startswith("tied")


# ---------------------------------------------------------------------------------------
# Positions, and RoPE that GPT-2 does not have
# ---------------------------------------------------------------------------------------


def test_position_similarity_of_a_loaded_model(pair):
    hf, ours = pair
    view = compute_view("positions", ViewSource.from_model(ours), positions=64)
    p = view.data
    assert view.hooks == ["pos_embeddings"]
    wpe = hf.transformer.wpe.weight[:64].detach()
    assert p.n_positions == 64 and p.n_learned == 1024 and torch.equal(p.matrix, wpe)
    assert torch.allclose(p.norms, wpe.norm(dim=-1))
    expected = torch.nn.functional.cosine_similarity(wpe[:, None, :], wpe[None, :, :], dim=-1)
    assert torch.allclose(p.cosine, expected, atol=1e-5)
    assert torch.allclose(p.cosine.diagonal(), torch.ones(64), atol=1e-5)
    assert p.by_offset[0].item() == pytest.approx(1.0, abs=1e-5)
    assert p.by_offset[3].item() == pytest.approx(expected.diagonal(3).mean().item(), abs=1e-5)
    assert position_embeddings(ours).cosine.shape == (1024, 1024)


def test_smooth_positions_show_a_band():
    """Rows on a smooth curve (as trained GPT-2 learns them): similarity falls with distance."""
    model = GPT2(GPT2Config(vocab_size=10, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    p = torch.arange(32.0)[:, None]
    freqs = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) * math.pi / 256
    with torch.no_grad():
        model.pos_embeddings.weight.copy_(torch.cat([torch.cos(p * freqs), torch.sin(p * freqs)], dim=1))
    view = position_embeddings(model)
    assert (view.by_offset[1:16].diff() < 0).all()  # monotonically less similar, up to 16 apart
    assert view.cosine[0, 1] > 0.9 > view.cosine[0, 16]


def test_each_family_is_told_which_position_view_it_has(pair):
    hf, ours = pair
    from tiny_models import ours_from_hf, tiny_hf_model

    llama = ours_from_hf(tiny_hf_model("llama2"))
    assert VIEW_KINDS["positions"].applies_to(ours) and not VIEW_KINDS["positions"].applies_to(llama)
    assert VIEW_KINDS["rope"].applies_to(llama) and not VIEW_KINDS["rope"].applies_to(ours.args)
    with pytest.raises(AnalysisError, match=r"GPT-2 has no rotary position embedding.*'positions' view"):
        compute_view("rope", ViewSource(ours.args))  # from the configuration alone
    with pytest.raises(AnalysisError, match=r"Llama has no learned position embeddings.*'rope' view"):
        compute_view("positions", ViewSource.from_model(llama))
    with pytest.raises(AnalysisError, match=r"1\.\.1024"):
        compute_view("positions", ViewSource.from_model(ours), positions=2000)
    for kind in VIEW_KINDS.values():  # every other kind is for every family
        assert kind.name in ("rope", "positions") or kind.applies_to(ours) and kind.applies_to(llama)


# ---------------------------------------------------------------------------------------
# Token vectors in 3-D
# ---------------------------------------------------------------------------------------


def test_token_embeddings_pca(pair):
    hf, ours = pair
    view = compute_view("embeddings", ViewSource.from_model(ours, ids=IDS))
    e = view.data
    distinct = list(dict.fromkeys(IDS))
    assert e.ids == distinct and e.positions == [IDS.index(i) for i in distinct]
    assert view.hooks == ["tok_embeddings"] and e.dims == 3 and e.fit.coords.shape == (len(distinct), 3)
    rows = hf.transformer.wte.weight[distinct].detach().double()  # the vectors, without positions
    centred = rows - rows.mean(0)
    np.testing.assert_allclose(e.fit.coords, (centred @ torch.as_tensor(e.fit.components).T).numpy(),
                               atol=1e-6)
    # The top three eigenvalues of the covariance, as shares of the total variance.
    eig = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    np.testing.assert_allclose(e.fit.explained_variance_ratio, (eig[:3] / eig.sum()).numpy(), atol=1e-6)
    np.testing.assert_allclose(e.norms, rows.norm(dim=-1).numpy(), atol=1e-6)
    assert compute_view("embeddings", ViewSource.from_model(ours, ids=IDS), dims=2).data.fit.coords.shape[1] == 2
    with pytest.raises(AnalysisError, match="at least 2 different tokens"):
        compute_view("embeddings", ViewSource.from_model(ours, ids=[7, 7, 7]))


# ---------------------------------------------------------------------------------------
# Weight statistics: the fused projection seen as wq, wk, wv
# ---------------------------------------------------------------------------------------


def test_params_split_the_fused_projection(pair):
    hf, ours = pair
    ps = param_stats(ours)
    assert ps.matrices == ["attention.wq", "attention.wk", "attention.wv", "attention.wo",
                           "feed_forward.w1", "feed_forward.w2"]
    assert ps.vectors == ["attention_norm", "ffn_norm"] and ps.norm == "LayerNorm"
    assert ps.labels == {"feed_forward.w1": "w1 (up)", "feed_forward.w2": "w2 (down)"}
    assert list(ps.others) == ["tok_embeddings", "pos_embeddings", "norm"]  # output is tied
    D = ours.args.dim
    for i, block in enumerate(hf.transformer.h):
        c_attn = block.attn.c_attn.weight.detach().double()  # Conv1D: (D, 3D), columns [q | k | v]
        for j, kind in enumerate(("attention.wq", "attention.wk", "attention.wv")):
            w = c_attn[:, j * D:(j + 1) * D]
            assert ps.stats[kind]["std"][i] == pytest.approx(w.std(correction=0).item(), rel=1e-5)
            assert ps.stats[kind]["norm"][i] == pytest.approx(w.norm().item(), rel=1e-5)
            np.testing.assert_allclose(ps.rows[kind][i], w.norm(dim=0).numpy(), rtol=1e-5)  # rows of (out, in)


# ---------------------------------------------------------------------------------------
# The residual stream entering layers.0 is token + position
# ---------------------------------------------------------------------------------------


def test_lens_pca_and_activations_start_from_token_plus_position(pair):
    hf, ours = pair
    tokens = torch.tensor([IDS])
    src = ViewSource.from_model(ours, ids=IDS)
    lens = compute_view("lens", src, k=3)
    L = ours.args.n_layers
    assert lens.hooks == ["embeddings"] + [f"layers.{i}.resid_post" for i in range(L)]
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        # transformers' hidden_states[0] is wte + wpe, the input of its first block.
        first = torch.softmax(hf.lm_head(hf.transformer.ln_f(out.hidden_states[0]))[0], -1)
        own = torch.softmax(ours(tokens)[0], -1)
    np.testing.assert_allclose(lens.data.ranked_probs[0, :, 0], first.max(-1).values.numpy(), atol=1e-5)
    np.testing.assert_array_equal(lens.data.top_ids[0], first.argmax(-1).numpy())
    # The last stage is the model's own prediction.
    np.testing.assert_array_equal(lens.data.final_ids, own.argmax(-1).numpy())
    np.testing.assert_allclose(lens.data.top_probs[-1], own.max(-1).values.numpy(), atol=1e-5)
    assert not np.array_equal(lens.data.top_ids[0], lens.data.top_ids[-1])  # the stages differ
    assert lens.data.input_label == "token + position"

    acts = compute_view("activations", src)
    emb = (hf.transformer.wte(tokens) + hf.transformer.wpe(torch.arange(len(IDS))))[0].detach()
    np.testing.assert_allclose(acts.data.resid_norm[0], emb.norm(dim=-1).numpy(), rtol=1e-5)
    assert acts.hooks[0] == "embeddings"

    view = compute_view("pca", src, layers="emb,-1")
    assert view.hooks == ["embeddings", f"layers.{L - 1}.resid_post"]
    direct = pca(emb.double(), 2)
    np.testing.assert_allclose(np.abs(view.data.coords[0]), np.abs(direct.coords), atol=1e-5)


def test_a_gpt2_capture_is_not_read_from_tok_embeddings(pair):
    """Reading stage 0 as tok_embeddings from a capture with position vectors is refused."""
    hf, ours = pair
    cache = run_and_capture(ours, torch.tensor([IDS]), ["tok_embeddings", "pos_embeddings",
                                                        "embeddings", "layers.*.resid_post",
                                                        "layers.*.feed_forward.act"])
    with pytest.raises(AnalysisError, match="token \\+ position embeddings.*'embeddings'"):
        residual_stages(cache, [0, 1], "pca")
    with pytest.raises(AnalysisError, match="residual_input"):
        activation_stats(cache)
    good = activation_stats(cache, residual_input="embeddings")
    np.testing.assert_allclose(good.resid_norm[0], cache["embeddings"][0].norm(dim=-1).numpy())


def test_a_gpt2_capture_file_rebuilds_its_config(pair, tmp_path):
    """A capture file of a GPT-2 gives views without the model: its config is a GPT2Config."""
    from llama.hooks import save_capture
    from scripts.plot import _source_from_export, build_parser

    hf, ours = pair
    cache = run_and_capture(ours, torch.tensor([IDS]), ["embeddings", "tok_embeddings",
                                                        "layers.*.resid_post",
                                                        "layers.*.attention.probs"])
    path = save_capture(tmp_path / "g.safetensors", cache, tokens=IDS, model=ours)
    opts = build_parser().parse_args(["pca", "--from", str(path)])
    src = _source_from_export(opts, None, None, "export")
    assert isinstance(src.args, GPT2Config) and src.args == ours.args and src.residual_input == "embeddings"
    live = compute_view("pca", ViewSource.from_model(ours, ids=IDS), layers="emb,0")
    from_file = compute_view("pca", src, layers="emb,0")
    assert from_file.hooks == live.hooks == ["embeddings", "layers.0.resid_post"]
    np.testing.assert_allclose(from_file.data.coords[0], live.data.coords[0], atol=1e-6)
    assert compute_view("summary", src).data.total_params == ours.num_params()


# ---------------------------------------------------------------------------------------
# The architecture drawing shows GPT-2's own blocks
# ---------------------------------------------------------------------------------------


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts) + "\n" + fig._suptitle.get_text()


def test_architecture_draws_gpt2s_blocks():
    from llama.plots import draw

    args = GPT2Config.from_hf_config(GPT2_MEDIUM_CONFIG)
    text = _texts(draw(compute_view("architecture", ViewSource(args, name="gpt2-medium"))))
    for part in ("pos_embeddings  1,024 × 1,024", "tok_embeddings  50,257 × 1,024", "embeddings",
                 "LayerNorm, 1024", "wqkv  1024→3×1024 (+ bias)", "gelu(up)", "w1 (up)",
                 "GPT2Block × 24", "354.82M parameters", "16 heads,"):
        assert part in text, part
    for llama_only in ("RMSNorm", "RoPE", "silu", "w3", "gate", "q_rot", "k/v)"):
        assert llama_only not in text, llama_only
    from tiny_models import ours_from_hf, tiny_hf_model

    llama_text = _texts(draw(compute_view("architecture", ViewSource(ours_from_hf(tiny_hf_model("llama2")).args))))
    assert "RMSNorm" in llama_text and "RoPE" in llama_text and "LayerNorm" not in llama_text
