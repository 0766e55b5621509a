"""llama.analysis and its registry of view kinds: no matplotlib below llama.plots, the
registry as the one list llama-plot reads, option checks, and views computed through it
equal to the analysis functions called directly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from llama.analysis import (
    VIEW_KINDS,
    AnalysisError,
    ViewSource,
    attention_maps,
    compute_view,
    logit_lens,
    option_names,
    run_and_capture,
    top_k,
)
from test_plots import tiny_model
from test_plots_cli import checkpoint  # noqa: F401 - the tiny Meta-style checkpoint fixture

ROOT = Path(__file__).resolve().parent.parent
IDS = [3, 17, 5, 42, 8, 8, 63, 2]


def test_session_and_analysis_import_without_matplotlib():
    """In a fresh interpreter where importing matplotlib fails, the session and analysis
    modules import and compute views; llama.plots is the first thing that needs it."""
    code = textwrap.dedent(
        """
        import sys

        class NoMatplotlib:
            def find_spec(self, name, path=None, target=None):
                if name == "matplotlib" or name.startswith("matplotlib."):
                    raise ImportError("matplotlib is blocked in this test")
                return None

        sys.meta_path.insert(0, NoMatplotlib())
        import torch
        import llama.analysis, llama.session, llama.generate
        from llama.analysis import ViewSource, compute_view, VIEW_KINDS
        from llama.config import ModelArgs
        from llama.model import Transformer

        torch.manual_seed(0)
        model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                      vocab_size=64, ffn_hidden_dim=64, max_seq_len=32)).eval()
        src = ViewSource.from_model(model, ids=[1, 5, 9, 2, 7])
        for kind in VIEW_KINDS:
            # positions is GPT-2's (tests/test_gpt2_views.py); patching and steering need
            # a second prompt as text (tests/test_interp_views.py)
            if VIEW_KINDS[kind].applies_to(model) and not VIEW_KINDS[kind].required_options():
                compute_view(kind, src)
        assert not any(m == "matplotlib" or m.startswith("matplotlib.") for m in sys.modules)
        try:
            import llama.plots
        except ImportError as e:
            print("plots:", e)
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "plots: matplotlib is blocked in this test" in r.stdout and r.stdout.endswith("ok\n")


def test_every_registered_kind_is_a_llama_plot_kind_and_nothing_else():
    from llama.plots import RENDERERS
    from scripts.plot import build_parser, flag

    parser = build_parser()
    kind_action = next(a for a in parser._actions if a.dest == "kind")
    assert tuple(kind_action.choices) == tuple(VIEW_KINDS)
    assert set(RENDERERS) == set(VIEW_KINDS)  # one renderer per kind
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {flag(n) for n in option_names()} <= flags
    for kind in VIEW_KINDS:
        assert parser.parse_args([kind]).kind == kind
    with pytest.raises(SystemExit):
        parser.parse_args(["histogram"])


@pytest.mark.parametrize("kind", [k for k, v in VIEW_KINDS.items()
                                  if v.applies_to("llama") and not v.required_options()])
def test_llama_plot_draws_every_registered_kind(kind, checkpoint, tmp_path, capsys):
    """Every kind a Llama model has (GPT-2's: tests/test_gpt2_views.py) that needs no
    option (patching and steering, with theirs: tests/test_interp_views.py)."""
    from scripts.plot import main

    out = tmp_path / f"{kind}.png"
    rc = main([kind, "--model", str(checkpoint), "--ids", ",".join(map(str, IDS)), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 3000


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_views_equal_the_analysis_functions(model):
    src = ViewSource.from_model(model, ids=IDS)
    cache = run_and_capture(model, torch.tensor([IDS]), ["tok_embeddings", "layers.*.resid_post",
                                                         "layers.*.attention.probs"])
    lens = compute_view("lens", src, k=3)
    direct = logit_lens(model, cache, k=3)
    np.testing.assert_array_equal(lens.data.ranked_ids, direct.ranked_ids)
    np.testing.assert_allclose(lens.data.ranked_probs, direct.ranked_probs, atol=1e-6)
    assert lens.hooks == ["tok_embeddings", "layers.0.resid_post", "layers.1.resid_post"]
    assert lens.tokens.ids == IDS and lens.labels == {}  # no tokenizer: ids only
    sink = compute_view("attention", src, view="sink")
    for layer, p in attention_maps(cache).probs.items():
        np.testing.assert_allclose(sink.data.probs[layer], p, atol=1e-6)
    assert sink.hooks == ["layers.0.attention.probs", "layers.1.attention.probs"]
    topk = compute_view("topk", src, k=4, position=2)
    expected = top_k(src.cache["logits"], k=4, position=2)
    np.testing.assert_array_equal(topk.data.ids, expected.ids)
    head = compute_view("attention", src, layer=-1, head=-1)
    assert (head.options["view"], head.options["layer"], head.options["head"]) == ("head", 1, 3)


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("tokens", {"view": "grid"}, "view does not apply to tokens (only to pca, attention, params)"),
        ("pca", {"view": "sideways"}, "view for pca must be one of grid, trajectory, got 'sideways'"),
        ("pca", {"dims": 4}, "dims for pca must be one of 2, 3, got 4"),
        ("topk", {"k": 0}, "k must be at least 1, got 0"),
        ("topk", {"k": "many"}, "k needs a whole number, got 'many'"),
        ("pca", {"skip_first": "yes"}, "skip_first is on or off"),
        ("attention", {"layer": 2}, "layer 2 is out of range: there are 2 layers"),
        ("attention", {"layer": 0, "head": 4}, "head 4 is out of range: there are 4 heads"),
        ("saliency", {"position": 8}, "position 8 is out of range"),
        ("wavelets", {}, "unknown view kind 'wavelets'; the kinds are summary, tokens"),
    ],
)
def test_bad_options_are_named(model, kind, options, message):
    with pytest.raises(AnalysisError) as e:
        compute_view(kind, ViewSource.from_model(model, ids=IDS), options)
    assert message in str(e.value)


def test_what_a_kind_needs_is_checked(model):
    config_only = ViewSource(model.args)
    assert compute_view("rope", config_only).data.head_dim == model.args.head_dim
    with pytest.raises(AnalysisError, match="params needs the model itself"):
        compute_view("params", config_only)
    with pytest.raises(AnalysisError, match="tokens needs a prompt"):
        compute_view("tokens", ViewSource.from_model(model))
    for kind in VIEW_KINDS.values():  # the entries say what they are
        assert kind.needs in ("prompt", "model", "config")
        assert kind.captures <= kind.from_capture  # captured numbers can come from a file
        assert all(o.name.isidentifier() for o in kind.options)


def test_lens_in_row_chunks_equals_the_lens_from_whole_softmaxes(model, monkeypatch):
    """The lens decodes a few positions at a time (a long prompt times the vocabulary does
    not fit in memory at once) and keeps no (stages, T, V) array; its numbers equal a
    softmax of every stage's whole (T, V) logits written out here."""
    import llama.analysis.lens as lens_module

    cache = run_and_capture(model, torch.tensor([IDS]), ["tok_embeddings", "layers.*.resid_post"])
    V = model.args.vocab_size
    monkeypatch.setattr(lens_module, "CHUNK_LOGITS", 3 * V)  # three positions per product
    chunked = logit_lens(model, cache, k=4)
    names = ["tok_embeddings"] + [f"layers.{i}.resid_post" for i in range(model.args.n_layers)]
    with torch.no_grad():
        probs = torch.stack([torch.softmax(model.output(model.norm(cache[n][0])).float(), -1)
                             for n in names])  # (S, T, V)
    top_p, top_i = torch.sort(probs, dim=-1, descending=True, stable=True)
    np.testing.assert_array_equal(chunked.ranked_ids, top_i[..., :4].numpy())
    np.testing.assert_allclose(chunked.ranked_probs, top_p[..., :4].numpy(), atol=1e-6)
    final = top_i[-1, :, 0]
    np.testing.assert_array_equal(chunked.final_ids, final.numpy())
    np.testing.assert_allclose(chunked.final_token_probs,
                               probs.gather(-1, final[None, :, None].expand(len(names), -1, 1))[..., 0].numpy(),
                               atol=1e-6)
