"""llama-plot (scripts/plot.py): end to end on a tiny checkpoint folder, exports, errors,
and one run of the real default model (skipped when it is not installed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from real_models import SMOLLM2_GGUF, needs_smollm2
from scripts.plot import main
from test_plots import tiny_model

IDS = "3,17,5,42,8,8,63,2"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Meta-style folder (params.json + consolidated.00.pth) holding the tiny model."""
    model = tiny_model(seed=1, tie_embeddings=False)
    folder = tmp_path_factory.mktemp("tiny_ckpt")
    (folder / "params.json").write_text(json.dumps(model.args.to_dict()))
    torch.save(model.state_dict(), folder / "consolidated.00.pth")
    return folder


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img[..., :3].std() > 0.02


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("lens", []),
        ("attention", ["--layer", "-1", "--head", "1"]),
        ("pca", ["--view", "trajectory", "--dims", "3"]),
        ("saliency", ["--position", "4"]),
        ("rope", []),
    ],
)
def test_cli_writes_each_plot(checkpoint, tmp_path, capsys, kind, extra):
    out = tmp_path / f"{kind}.png"
    rc, stdout, err = run(capsys, kind, "--model", checkpoint, "--ids", IDS, "-o", out, *extra)
    assert rc == 0, err
    assert f"wrote {out}" in stdout
    assert_png(out)


def test_summary_text(checkpoint, capsys):
    rc, stdout, _ = run(capsys, "summary", "--model", checkpoint, "--text")
    assert rc == 0
    model = tiny_model(seed=1, tie_embeddings=False)
    assert f"{model.num_params():,}" in stdout
    assert "untied: own output matrix" in stdout
    assert "KV cache" in stdout


def test_plot_from_an_export(checkpoint, tmp_path, capsys):
    from llama.hooks import run_with_cache, save_capture

    model = tiny_model(seed=1, tie_embeddings=False)
    ids = [int(i) for i in IDS.split(",")]
    _, cache = run_with_cache(model, torch.tensor([ids]),
                              ["tok_embeddings", "layers.*.resid_post", "layers.*.attention.probs",
                               "logits"])
    export = save_capture(tmp_path / "cap.safetensors", cache, tokens=ids, model=model,
                          pieces=[f"p{i}" for i in ids], prompt="tiny")
    out = tmp_path / "sink.png"
    rc, _, err = run(capsys, "attention", "--from", export, "--view", "sink", "-o", out)
    assert rc == 0, err
    assert_png(out)
    rc, _, err = run(capsys, "topk", "--from", export, "-o", tmp_path / "topk.svg")
    assert rc == 0, err
    assert (tmp_path / "topk.svg").read_text().lstrip().startswith("<?xml")
    # The lens needs the model's final norm and output matrix.
    rc, _, err = run(capsys, "lens", "--from", export, "-o", tmp_path / "lens.png")
    assert rc == 2 and "pass --model" in err
    rc, _, err = run(capsys, "lens", "--from", export, "--model", checkpoint, "-o",
                     tmp_path / "lens.png")
    assert rc == 0, err
    # What the export lacks is named.
    rc, _, err = run(capsys, "activations", "--from", export, "-o", tmp_path / "a.png")
    assert rc == 2 and "feed_forward.act" in err
    rc, _, err = run(capsys, "params", "--from", export)
    assert rc == 2 and "needs the model itself" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["attention", "--layer", "2"], "layer 2 is out of range: there are 2 layers (layer 0..1"),
        (["attention", "--layer", "0", "--head", "7"], "head 7 is out of range: there are 4 heads (head 0..3"),
        (["pca", "--layers", "emb,5"], "layer 5 is out of range: this model has 2 layers"),
        (["topk", "--position", "20"], "position 20 is out of range: there are 8 positions"),
        (["pca", "--view", "sideways"], "--view for pca must be one of grid, trajectory"),
        (["tokens", "--view", "grid"], "--view does not apply to tokens"),
        (["lens", "-o", "out.jpg"], "must end in .png, .svg or .pdf"),
        (["lens", "--ids", "1,x"], "--ids takes token ids"),
        (["lens", "--ids", "1,500"], "token ids must lie in [0, 96)"),
        (["lens"], "no tokenizer found with the model"),
    ],
)
def test_cli_errors_are_one_clear_line(checkpoint, tmp_path, capsys, argv, message):
    argv = list(argv)
    if "--ids" not in argv and argv != ["lens"]:
        argv += ["--ids", IDS]
    if "-o" not in argv:
        argv += ["-o", tmp_path / "x.png"]
    rc, _, err = run(capsys, *argv, "--model", checkpoint)
    assert rc == 2
    assert err.startswith("llama-plot: error: ") and "Traceback" not in err
    assert message in err


def test_cli_rejects_unknown_kind_and_bad_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["histogram"])
    assert e.value.code == 2
    assert "invalid choice: 'histogram'" in capsys.readouterr().err
    rc, _, err = run(capsys, "attention", "--from", tmp_path / "missing.safetensors")
    assert rc == 2 and "does not exist" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a capture")
    rc, _, err = run(capsys, "attention", "--from", junk)
    assert rc == 2 and "cannot read export" in err
    rc, _, err = run(capsys, "rope", "--model", tmp_path / "nowhere")
    assert rc == 2 and "does not exist" in err


@needs_smollm2
def test_real_model_lens_and_topk_say_paris():
    from llama.plots import logit_lens, run_and_capture, top_k
    from tokenizer import load_tokenizer
    from weights import load_model

    path = SMOLLM2_GGUF
    model, tok = load_model(path), load_tokenizer(path)
    ids = tok.encode("The capital of France is", bos=True)
    cache = run_and_capture(model, torch.tensor([ids]), ["tok_embeddings", "layers.*.resid_post"])
    r = top_k(cache["logits"], k=5)
    assert tok.decode([int(r.ids[0])]) == " Paris"
    assert 0.65 < r.probs[0] < 0.9  # about 0.77
    lens = logit_lens(model, cache)
    assert lens.top_ids.shape == (model.args.n_layers + 1, len(ids))
    assert int(lens.top_ids[-1, -1]) == int(r.ids[0])
    assert lens.top_probs[-1, -1] == pytest.approx(float(r.probs[0]), abs=1e-5)
