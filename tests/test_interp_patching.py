"""Activation patching (llama.interp.patching) against patches written by hand.

References, each independent of llama/interp:
* llama.hooks by hand: for every site and every cell, one corrupted run with that one
  value replaced (patch_from, or a lambda on the per-head points), scored by hand;
* transformers with plain torch forward hooks on its own modules (decoder layers,
  self_attn, mlp, o_proj, k_proj / v_proj), on the same weights: the sweeps agree with
  transformers' logit differences within the float32 logit tolerance;
* on a grouped-query model, patching kv head g changes exactly the outputs of the query
  heads that read it, and the result names them.
"""

from __future__ import annotations

import pytest
import torch

from llama.hooks import capture, intervene, patch_from, run_with_cache
from llama.interp import (
    SITES,
    LogitDiffMetric,
    logit_diff,
    logit_diff_metric,
    patch_sweep,
    patched_logits,
    patching,
)
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model

ATOL = 1e-4  # float32: the logit tolerance of the parity tests
T = 7
CHANGED = (2, 4)  # positions where the corrupted prompt differs


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def setup(request):
    """A tiny model, a clean and a corrupted prompt, and the answer pair whose logit
    difference the corruption moves most (so the normalised metric is well conditioned)."""
    hf = tiny_hf_model(request.param)
    model = ours_from_hf(hf)
    V = model.args.vocab_size
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(0, V, (1, T), generator=gen)
    corrupt = clean.clone()
    for p in CHANGED:
        corrupt[0, p] = (clean[0, p] + 1 + int(torch.randint(0, V - 1, (1,), generator=gen))) % V
    with torch.no_grad():
        moved = model(clean)[0, -1] - model(corrupt)[0, -1]
    answer, wrong = int(moved.argmax()), int(moved.argmin())
    return request.param, hf, model, clean, corrupt, answer, wrong


def _hand_edit(site: str, layer: int, col: int, clean_cache, position=None):
    """{hook: fn} that patches one cell, written with llama.hooks directly."""
    if site in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
        hook = {
            "resid_pre": "tok_embeddings" if layer == 0 else f"layers.{layer - 1}.resid_post",
            "resid_mid": f"layers.{layer}.resid_mid",
            "resid_post": f"layers.{layer}.resid_post",
            "attn_out": f"layers.{layer}.attention.out",
            "mlp_out": f"layers.{layer}.feed_forward.out",
        }[site]
        return {hook: patch_from(clean_cache, positions=[col])}
    names = [f"layers.{layer}.attention.heads"] if site == "heads" else [
        f"layers.{layer}.attention.k", f"layers.{layer}.attention.v"]
    where = slice(None) if position is None else position

    def head_patch(value, name):  # (B, T, H or KV, Hd)
        out = value.clone()
        out[:, where, col] = clean_cache[name][:, where, col]
        return out

    return {n: head_patch for n in names}


def _by_hand(model, clean, corrupt, metric, site, position=None):
    names = [
        "tok_embeddings", "layers.*.resid_mid", "layers.*.resid_post", "layers.*.attention.out",
        "layers.*.feed_forward.out", "layers.*.attention.heads", "layers.*.attention.k",
        "layers.*.attention.v",
    ]
    _, clean_cache = run_with_cache(model, clean, names)
    a = model.args
    n_cols = {"heads": a.n_heads, "kv_heads": a.n_kv_heads}.get(site, clean.shape[1])
    out = torch.zeros(a.n_layers, n_cols)
    for layer in range(a.n_layers):
        for col in range(n_cols):
            with intervene(model, _hand_edit(site, layer, col, clean_cache, position)), torch.no_grad():
                out[layer, col] = metric(model(corrupt))
    return out


@pytest.mark.parametrize("site", list(SITES))
def test_every_cell_of_every_site_equals_patching_it_by_hand(setup, site):
    kind, _, model, clean, corrupt, answer, wrong = setup
    metric = logit_diff_metric(model, clean, corrupt, answer, wrong)
    result = patching(model, clean, corrupt, metric, site=site)
    expected = _by_hand(model, clean, corrupt, metric, site)
    a = model.args
    shape = {"heads": (a.n_layers, a.n_heads), "kv_heads": (a.n_layers, a.n_kv_heads)}
    assert result.scores.shape == shape.get(site, (a.n_layers, T))
    err = (result.scores - expected).abs().max()
    assert err <= 1e-5, (kind, site)  # the same runs, batched: float32 rounding only
    assert torch.equal(patch_sweep(model, clean, corrupt, metric, site=site), result.scores)
    # The sweep is not flat (random tiny models' MLPs matter little, but measurably).
    assert result.scores.abs().max() > (1e-3 if site == "mlp_out" else 0.1)


def test_per_head_sites_at_one_position(setup):
    _, _, model, clean, corrupt, answer, wrong = setup
    metric = logit_diff_metric(model, clean, corrupt, answer, wrong)
    for site in ("heads", "kv_heads"):
        for position in (CHANGED[0], -1):
            got = patching(model, clean, corrupt, metric, site=site, position=position)
            want = _by_hand(model, clean, corrupt, metric, site, position=position)
            assert (got.scores - want).abs().max() <= ATOL
            assert got.position == position % T


def test_the_metric_is_normalised_and_the_sweep_has_its_invariants(setup):
    """Clean scores 1 and corrupted 0 (baselines checked by hand); a position before the
    first change never matters; the last layer's last position restores everything."""
    _, _, model, clean, corrupt, answer, wrong = setup
    metric = logit_diff_metric(model, clean, corrupt, answer, wrong)
    with torch.no_grad():
        lc, lx = model(clean)[0, -1], model(corrupt)[0, -1]
    assert metric.clean_diff == pytest.approx(float(lc[answer] - lc[wrong]), abs=1e-5)
    assert metric.corrupt_diff == pytest.approx(float(lx[answer] - lx[wrong]), abs=1e-5)
    result = patching(model, clean, corrupt, metric, site="resid_post")
    assert result.clean_score == pytest.approx(1.0, abs=1e-5)
    assert result.corrupt_score == pytest.approx(0.0, abs=ATOL)
    # Positions before the first corrupted token hold identical values in both runs.
    assert result.scores[:, : CHANGED[0]].abs().max() <= ATOL
    # The final residual at the last position decides the last logits entirely.
    assert result.scores[-1, -1] == pytest.approx(1.0, abs=ATOL)
    # Patching every position of the embeddings makes the corrupted run the clean one.
    full = patched_logits(model, clean, corrupt, "resid_pre", layer=0)
    assert metric(full) == pytest.approx(1.0, abs=ATOL)


def test_batched_runs_equal_one_forward_per_cell_and_the_metric_sees_one_run(setup):
    _, _, model, clean, corrupt, answer, wrong = setup
    inner = logit_diff_metric(model, clean, corrupt, answer, wrong)
    seen = []

    def metric(logits):
        seen.append((tuple(logits.shape), logits.dtype))
        return inner(logits)

    V = model.args.vocab_size
    one = patch_sweep(model, clean, corrupt, metric, site="resid_mid", batch_size=1)
    n_cells = model.args.n_layers * T
    assert len(seen) == n_cells + 2  # every cell, plus the clean and the corrupted run
    assert set(seen) == {((1, T, V), torch.float32)}
    for batch_size in (3, None, 1000):
        other = patch_sweep(model, clean, corrupt, metric, site="resid_mid", batch_size=batch_size)
        assert (other - one).abs().max() <= 1e-5
    assert model.cache_length == 0  # the batch of patched runs is not left in the cache


def test_single_token_difference_embedding_patch_restores_everything():
    hf = tiny_hf_model("llama32")
    model = ours_from_hf(hf)
    clean = torch.tensor([[5, 17, 99, 201, 8, 63]])
    corrupt = clean.clone()
    corrupt[0, 3] = 300
    with torch.no_grad():
        moved = model(clean)[0, -1] - model(corrupt)[0, -1]
    metric = logit_diff_metric(model, clean, corrupt, int(moved.argmax()), int(moved.argmin()))
    scores = patch_sweep(model, clean, corrupt, metric, site="resid_pre")
    assert scores[0, 3] == pytest.approx(1.0, abs=ATOL)  # the one token that differs
    assert scores[:, :3].abs().max() <= ATOL  # before it: identical runs


# ----------------------------------------------------------------------------------
# Grouped-query attention: kv heads
# ----------------------------------------------------------------------------------


def test_patching_a_kv_head_changes_exactly_the_query_heads_that_share_it():
    hf = tiny_hf_model("llama32")  # 8 query heads, 2 kv heads: 4 query heads per kv head
    model = ours_from_hf(hf)
    a = model.args
    gen = torch.Generator().manual_seed(11)
    clean = torch.randint(0, a.vocab_size, (1, T), generator=gen)
    corrupt = torch.randint(0, a.vocab_size, (1, T), generator=gen)
    with torch.no_grad():
        moved = model(clean)[0, -1] - model(corrupt)[0, -1]
    metric = logit_diff_metric(model, clean, corrupt, int(moved.argmax()), int(moved.argmin()))
    result = patching(model, clean, corrupt, metric, site="kv_heads")
    assert result.query_heads == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert result.column_labels == ["KV0", "KV1"]

    _, clean_cache = run_with_cache(model, clean, ["layers.*.attention.k", "layers.*.attention.v"])
    _, plain = run_with_cache(model, corrupt, "layers.*.attention.heads")
    for layer in range(a.n_layers):
        for g in range(a.n_kv_heads):
            def kv_patch(value, name, g=g):  # (B, T, KV, Hd)
                out = value.clone()
                out[:, :, g] = clean_cache[name][:, :, g]
                return out

            hooks = {f"layers.{layer}.attention.k": kv_patch, f"layers.{layer}.attention.v": kv_patch}
            with intervene(model, hooks), capture(model, "layers.*.attention.heads") as cache, torch.no_grad():
                score = metric(model(corrupt))
            assert result.scores[layer, g] == pytest.approx(score, abs=ATOL)
            name = f"layers.{layer}.attention.heads"
            diff = (cache[name] - plain[name]).abs().amax(dim=(0, 1, 3))  # (H,)
            changed = [h for h in range(a.n_heads) if diff[h] > 1e-6]
            assert changed == result.query_heads[g], (layer, g, diff)
            # Earlier layers are untouched by a patch in this one.
            for earlier in range(layer):
                e = f"layers.{earlier}.attention.heads"
                assert torch.equal(cache[e], plain[e])


@pytest.mark.parametrize("kv_part", ["k", "v"])
def test_patching_only_keys_or_only_values_of_a_kv_head(kv_part):
    hf = tiny_hf_model("qwen2")
    model = ours_from_hf(hf)
    gen = torch.Generator().manual_seed(2)
    clean = torch.randint(0, model.args.vocab_size, (1, T), generator=gen)
    corrupt = torch.randint(0, model.args.vocab_size, (1, T), generator=gen)
    with torch.no_grad():
        moved = model(clean)[0, -1] - model(corrupt)[0, -1]
    metric = logit_diff_metric(model, clean, corrupt, int(moved.argmax()), int(moved.argmin()))
    got = patching(model, clean, corrupt, metric, site="kv_heads", kv_part=kv_part)
    _, clean_cache = run_with_cache(model, clean, f"layers.*.attention.{kv_part}")
    for layer in range(model.args.n_layers):
        for g in range(model.args.n_kv_heads):
            def patch(value, name, g=g):
                out = value.clone()
                out[:, :, g] = clean_cache[name][:, :, g]
                return out

            with intervene(model, {f"layers.{layer}.attention.{kv_part}": patch}), torch.no_grad():
                assert got.scores[layer, g] == pytest.approx(metric(model(corrupt)), abs=ATOL)
    assert got.hooks[0] == [f"layers.0.attention.{kv_part}"]


# ----------------------------------------------------------------------------------
# Against transformers, patched with plain torch hooks on its own modules
# ----------------------------------------------------------------------------------


def _output_tensor(out):
    return out[0] if isinstance(out, tuple) else out


def _with_output(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


def _hf_module_and_kind(hf, site: str, layer: int):
    """(module, "pre" or "post", slice of the last axis or None) that carries `site`."""
    block = hf.model.layers[layer]
    Hd = hf.config.hidden_size // hf.config.num_attention_heads
    return {
        "resid_pre": [(block, "pre")],
        "resid_post": [(block, "post")],
        "attn_out": [(block.self_attn, "post")],
        "mlp_out": [(block.mlp, "post")],
        "heads": [(block.self_attn.o_proj, "pre")],
        "kv_heads": [(block.self_attn.k_proj, "post"), (block.self_attn.v_proj, "post")],
    }[site], Hd


def _hf_sweep(hf, clean, corrupt, site, score):
    """The patching sweep done on transformers with torch hooks: (n_layers, columns)."""
    cfg = hf.config
    n_cols = {"heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads}.get(site, clean.shape[1])
    out = torch.zeros(cfg.num_hidden_layers, n_cols)
    for layer in range(cfg.num_hidden_layers):
        mods, Hd = _hf_module_and_kind(hf, site, layer)
        # 1. Record the clean values at these modules.
        stored: dict[int, torch.Tensor] = {}
        handles = []
        for i, (m, when) in enumerate(mods):
            if when == "pre":
                def rec_pre(mod, args, kwargs, i=i):
                    x = args[0] if args else kwargs["hidden_states"]
                    stored[i] = x.detach().clone()
                handles.append(m.register_forward_pre_hook(rec_pre, with_kwargs=True))
            else:
                def rec_post(mod, args, output, i=i):
                    stored[i] = _output_tensor(output).detach().clone()
                handles.append(m.register_forward_hook(rec_post))
        with torch.no_grad():
            hf(clean)
        for h in handles:
            h.remove()
        # 2. One corrupted run per column with that column replaced.
        for col in range(n_cols):
            if site in ("heads", "kv_heads"):
                where = (slice(None), slice(None), slice(col * Hd, (col + 1) * Hd))  # (B, T, H*Hd)
            else:
                where = (slice(None), col)  # (B, T, D) at one position
            handles = []
            for i, (m, when) in enumerate(mods):
                if when == "pre":
                    def patch_pre(mod, args, kwargs, i=i, where=where):
                        x = (args[0] if args else kwargs["hidden_states"]).clone()
                        x[where] = stored[i][where]
                        if args:
                            return (x, *args[1:]), kwargs
                        return args, {**kwargs, "hidden_states": x}
                    handles.append(m.register_forward_pre_hook(patch_pre, with_kwargs=True))
                else:
                    def patch_post(mod, args, output, i=i, where=where):
                        y = _output_tensor(output).clone()
                        y[where] = stored[i][where]
                        return _with_output(output, y)
                    handles.append(m.register_forward_hook(patch_post))
            with torch.no_grad():
                out[layer, col] = score(hf(corrupt).logits)
            for h in handles:
                h.remove()
    return out


@pytest.mark.parametrize("site", ["resid_pre", "resid_post", "attn_out", "mlp_out", "heads", "kv_heads"])
def test_sweeps_equal_transformers_patched_with_plain_forward_hooks(setup, site):
    kind, hf, model, clean, corrupt, answer, wrong = setup

    def score(logits):  # the raw logit difference: compared in logit units
        return logit_diff(logits, answer, wrong)

    ours = patch_sweep(model, clean, corrupt, score, site=site)
    theirs = _hf_sweep(hf, clean, corrupt, site, score)
    assert (ours - theirs).abs().max() <= ATOL, (kind, site, (ours - theirs).abs().max())
    # The patches really do something (random tiny models' MLPs matter little, but measurably).
    assert (theirs - theirs[0, 0]).abs().max() > (1e-3 if site == "mlp_out" else 0.05)


def test_patched_logits_is_one_cell_of_the_sweep(setup):
    _, _, model, clean, corrupt, answer, wrong = setup
    metric = logit_diff_metric(model, clean, corrupt, answer, wrong)
    sweep = patching(model, clean, corrupt, metric, site="heads")
    one = patched_logits(model, clean, corrupt, "heads", layer=1, head=-1)
    assert metric(one) == pytest.approx(sweep.cell(1, -1), abs=ATOL)
    sweep = patching(model, clean, corrupt, metric, site="attn_out")
    one = patched_logits(model, clean, corrupt, "attn_out", layer=0, position=CHANGED[1])
    assert metric(one) == pytest.approx(sweep.cell(0, CHANGED[1]), abs=ATOL)
    assert sweep.top(1)[0][2] == pytest.approx(float(sweep.scores.max()))
    assert isinstance(metric, LogitDiffMetric)
