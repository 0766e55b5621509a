"""llama/plots/interp.py draws exactly the numbers of the llama.interp results it is given,
and every figure renders to a real PNG."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from llama.interp import (
    attention_head_scores,
    attribution,
    head_ablation_sweep,
    induction_scores,
    logit_diff_metric,
    patching,
    steering_topk,
    steering_vector,
)
from llama.plots.interp import plot_dla, plot_head_map, plot_head_maps, plot_patching, plot_steering
from tiny_models import ours_from_hf, tiny_hf_model

CLEAN = [5, 17, 99, 201, 8, 63, 7]
CORRUPT = [5, 17, 98, 201, 8, 63, 7]


@pytest.fixture(scope="module")
def model():
    return ours_from_hf(tiny_hf_model("llama32"))


@pytest.fixture(scope="module")
def metric(model):
    with torch.no_grad():
        moved = model(torch.tensor([CLEAN]))[0, -1] - model(torch.tensor([CORRUPT]))[0, -1]
    return logit_diff_metric(model, CLEAN, CORRUPT, int(moved.argmax()), int(moved.argmin()))


def _renders(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    img = mpimg.imread(path)
    assert img.shape[0] > 50 and img.shape[1] > 50
    assert img.std() > 0.01  # not a blank canvas


@pytest.mark.parametrize("site", ["resid_post", "heads", "kv_heads"])
def test_patching_map_shows_the_scores(model, metric, site, tmp_path):
    result = patching(model, CLEAN, CORRUPT, metric, site=site)
    fig = plot_patching(result)
    ax = fig.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), result.scores.numpy())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if site == "resid_post":
        assert labels[2] == "#99 / #98" and labels[0] == "#5"  # clean / corrupted where they differ
    elif site == "kv_heads":
        assert labels == ["KV0\n(H0-H3)", "KV1\n(H4-H7)"]  # the query heads that share each
    else:
        assert labels == [f"H{h}" for h in range(8)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0", "L1"]
    _renders(fig, tmp_path, site)


@pytest.mark.parametrize("heads", [False, True])
def test_dla_bars_are_the_parts(model, heads, tmp_path):
    result = attribution(model, CLEAN, (3, 4))
    fig = plot_dla(result, heads=heads)
    ax = fig.axes[0]
    parts = result.parts(heads=heads)
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == pytest.approx(list(parts.values()), abs=1e-6)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(parts)
    _renders(fig, tmp_path, f"dla{heads}")
    # top=3: the three largest parts, the rest summed in one bar; the total is unchanged.
    fig = plot_dla(result, heads=True, top=3)
    widths = [bar.get_width() for bar in fig.axes[0].patches]
    assert len(widths) == 4 and sum(widths) == pytest.approx(result.total, abs=1e-5)


def test_head_maps(model, metric, tmp_path):
    sweep = head_ablation_sweep(model, CLEAN, metric)
    fig = plot_head_map(sweep)
    # Ablation maps show the change from the unablated run.
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()),
                               sweep.scores.numpy() - sweep.baseline, atol=1e-6)
    _renders(fig, tmp_path, "ablation")
    scores = attention_head_scores(model, CLEAN)
    maps = [scores["previous-token"], scores["first-token"], induction_scores(model, length=6)]
    fig = plot_head_maps(maps)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3
    for im, m in zip(images, maps):
        np.testing.assert_array_equal(np.asarray(im.get_array()), m.scores.numpy())
        assert im.get_clim() == (0.0, 1.0)  # scores are probabilities
    _renders(fig, tmp_path, "scores")


def test_steering_bars_are_the_two_tables(model, tmp_path):
    v = steering_vector(model, CLEAN, CORRUPT, layer=1)
    cmp = steering_topk(model, CLEAN, v, scale=8.0, k=4)
    fig = plot_steering(cmp)
    before, after = fig.axes[0], fig.axes[1]
    assert [b.get_width() for b in before.patches] == pytest.approx([c.prob for c in cmp.before])
    assert [b.get_width() for b in after.patches] == pytest.approx([c.prob for c in cmp.after])
    assert [t.get_text() for t in after.get_yticklabels()] == cmp.after_labels
    _renders(fig, tmp_path, "steering")
