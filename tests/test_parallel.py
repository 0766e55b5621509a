"""Tensor parallelism under torchrun equals one process, number for number.

Tiny random checkpoints are written in Meta's 2-shard and 4-shard layouts and as a
Hugging Face folder; `torchrun --nproc-per-node N tests/parallel_worker.py` loads each
with weights.load_model(path, parallel="tensor") on N = 2 and 4 CPU processes (gloo) and
saves what every rank computed; the same computation (parallel_worker.compute) runs here
in one process on load_model(path), and the two are compared:

    logits, full and token by token through the KV cache    max |diff| <= 1e-5 (float32)
    greedy generation                                        identical tokens
    captures (layers.0.attention.probs and other split ones) on rank 0, gathered: <= 1e-5
    an intervention (ablate_heads(1) on layers.0.attention.heads)    <= 1e-5
    gradients at tok_embeddings and at layers.0.attention.heads      <= 1e-5 relative

The test models' output matrices are scaled so the logits are of order 10 (|logit| < 16):
a float32 ulp there is ~1e-6, so 1e-5 leaves room for the all-reduce's different order of
summation and nothing more.

LLAMA_FS_TP_DEVICE=cuda runs the same on GPUs with NCCL (skipped unless the machine has
as many GPUs as processes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from checkpoint_writers import LLAMA2_PARAMS, LLAMA32_PARAMS, write_meta
from parallel_worker import CAPTURED, DEVICE, compute, needs_devices, tokens_for, torchrun
from tiny_models import tiny_hf_model
from weights import load_model

ATOL = 1e-5

# (name, processes, checkpoints): one torchrun launch each, results shared by the tests.
RUNS = {
    "2 ranks": (2, ["meta2", "hf"]),  # Meta's 2 shards, one per rank; HF sliced (odd vocab)
    "4 ranks": (4, ["meta4", "meta2"]),  # Meta's 4 shards, one per rank; 2 shards re-sliced
}
CASES = [(run, k, name) for run, (_, names) in RUNS.items() for k, name in enumerate(names)]
CASE_IDS = [f"{name}-{RUNS[run][0]}ranks" for run, _, name in CASES]


def small_logits_(hf) -> None:
    """Scale the output matrix so logits are O(10) (see the module docstring)."""
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(0.12)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tp_checkpoints")
    # Llama-2 style: multi-head, untied, embedding split by width in Meta's files.
    llama2 = tiny_hf_model("llama2")
    small_logits_(llama2)
    # Llama-3 style: grouped-query (8 heads, 4 kv heads), tied output, vocabulary-split
    # embedding, no output.weight in the files.
    llama3 = tiny_hf_model("llama32", num_key_value_heads=4)
    small_logits_(llama3)
    # Qwen2 style HF folder: q/k/v biases, 6 heads over 2 kv heads, a vocabulary of 353 that
    # 2 ranks split unevenly (177 + 176 rows).
    qwen = tiny_hf_model("qwen2", vocab_size=353)
    small_logits_(qwen)
    paths = {
        "meta2": write_meta(llama2, root / "meta2", LLAMA2_PARAMS, n_shards=2, rope_freqs=True),
        "meta4": write_meta(llama3, root / "meta4", dict(LLAMA32_PARAMS, n_kv_heads=4), n_shards=4,
                            llama3=True, drop_output=True),
        "hf": root / "hf",
    }
    qwen.save_pretrained(paths["hf"])
    return paths


@pytest.fixture(scope="module")
def reference(checkpoints) -> dict[str, dict]:
    """The same computation in this one process, on the same device type."""
    device = "cuda" if DEVICE == "cuda" else "cpu"
    return {name: compute(load_model(path, device=device)) for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def runs(checkpoints, tmp_path_factory) -> dict[str, list[list[dict]]]:
    """{run: [checkpoint k: [rank r: results]]}, one torchrun launch per run."""
    results = {}
    for run, (n, names) in RUNS.items():
        if DEVICE == "cuda" and torch.cuda.device_count() < n:
            continue
        out = tmp_path_factory.mktemp(f"tp_{n}")
        proc = torchrun(n, str(out), *[str(checkpoints[name]) for name in names])
        assert proc.returncode == 0, f"torchrun with {n} ranks failed:\n{proc.stderr[-6000:]}"
        results[run] = [
            [torch.load(out / f"rank{r}-{k}.pt", weights_only=False) for r in range(n)]
            for k in range(len(names))
        ]
    return results


def ranks_of(runs, run: str, k: int) -> list[dict]:
    needs_devices(RUNS[run][0])
    return runs[run][k]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_logits_equal_one_process_on_every_rank(runs, reference, run, k, name):
    ref = reference[name]
    assert ref["logits"].abs().max() < 16  # the scale the tolerance was chosen for
    for r, got in enumerate(ranks_of(runs, run, k)):
        assert got["rank"] == r and got["world"] == RUNS[run][0]
        assert max_diff(got["logits"], ref["logits"]) <= ATOL, f"rank {r}"
    # Every rank holds the same logits (the all-gather hands out one result).
    first = ranks_of(runs, run, k)[0]["logits"]
    assert all(torch.equal(g["logits"], first) for g in ranks_of(runs, run, k))


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_token_by_token_through_the_cache(runs, reference, run, k, name):
    ref = reference[name]
    world = RUNS[run][0]
    B, T = ref["logits"].shape[:2]
    for r, got in enumerate(ranks_of(runs, run, k)):
        assert max_diff(got["incremental"], ref["incremental"]) <= ATOL, f"rank {r}"
        assert max_diff(got["incremental"], ref["logits"]) <= 4 * ATOL  # what one process shows too
        # Each rank caches only its own kv heads.
        b, kv, _, hd = ref["cache_k_shape"]
        assert got["cache_k_shape"] == (b, kv // world, got["cache_k_shape"][2], hd)
        H, KV = ref["local_heads"]
        assert got["local_heads"] == (H // world, KV // world)
    assert max_diff(ref["incremental"], ref["logits"]) > 0 or T == 1  # the two paths differ


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_greedy_generation_identical(runs, reference, run, k, name):
    ref = reference[name]["generated"]
    assert len(ref) == 10
    for got in ranks_of(runs, run, k):
        assert got["generated"] == ref


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_captures_are_gathered_full_tensors(runs, reference, run, k, name):
    ref = reference[name]["capture"]
    got = ranks_of(runs, run, k)[0]["capture"]  # rank 0
    assert set(got) == set(CAPTURED)
    probs = "layers.0.attention.probs"
    assert got[probs].shape == ref[probs].shape  # (B, H, T, S): all H heads
    assert max_diff(got[probs], ref[probs]) <= ATOL
    for hook in CAPTURED:
        assert max_diff(got[hook], ref[hook]) <= ATOL, hook
    # The other ranks see the same full tensors.
    for other in ranks_of(runs, run, k)[1:]:
        assert torch.equal(other["capture"][probs], got[probs])


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_intervention_on_one_head(runs, reference, run, k, name):
    ref = reference[name]
    assert max_diff(ref["ablated"], ref["logits"]) > 0.01  # the ablation changes the logits
    for got in ranks_of(runs, run, k):
        assert max_diff(got["ablated"], ref["ablated"]) <= ATOL


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_gradients(runs, reference, run, k, name):
    ref = reference[name]["grads"]
    for got in ranks_of(runs, run, k):
        for hook, g in ref.items():
            scale = g.abs().max().item()
            assert scale > 1e-3, hook  # a real gradient, not a saturated one
            assert max_diff(got["grads"][hook], g) <= ATOL * scale, hook


def test_each_rank_reads_only_its_own_shard(runs):
    for run, k in (("2 ranks", 0), ("4 ranks", 0)):
        for r, got in enumerate(ranks_of(runs, run, k)):
            assert got["opened"] == [f"consolidated.{r:02d}.pth"]
    # 2 shards on 4 ranks: each rank maps both files and cuts out its quarter.
    for got in ranks_of(runs, "4 ranks", 1):
        assert got["opened"] == ["consolidated.00.pth", "consolidated.01.pth"]


def test_each_rank_holds_its_slice(runs, reference):
    got = ranks_of(runs, "4 ranks", 0)
    # meta4: 8 heads of 8 (dim 64) -> 2 query heads of 8 rows each per rank.
    assert [g["wq_local_shape"] for g in got] == [(16, 64)] * 4
    # num_params counts the full model (DTensors know their global shape).
    assert {g["num_params"] for g in got} == {reference["meta4"]["num_params"]}


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_parallelize_a_model_in_memory(runs, reference, run, k, name):
    """llama.parallel.parallelize on a model every rank loaded in full: the same logits."""
    for got in ranks_of(runs, run, k):
        assert max_diff(got["parallelize_logits"], reference[name]["logits"]) <= ATOL


def test_ranks_given_different_tokens_all_refuse(runs):
    for got in ranks_of(runs, "2 ranks", 0):
        assert got["skew_error"] is not None
        assert f"rank {got['rank']}: the ranks called the model with different inputs (rank 1 differs" in got["skew_error"]


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_rank0_decides_and_sampling_follows(runs, reference, checkpoints, run, k, name):
    """InputChannel.share hands rank 0's value to every rank; sampling with that seed gives
    every rank the same tokens, the ones one process samples with it."""
    from llama.generate import generate_ids

    got = ranks_of(runs, run, k)
    assert [g["shared"] for g in got] == [{"seed": 1234}] * len(got)
    model = load_model(checkpoints[name])
    tokens = tokens_for(model.args.vocab_size)
    expected = generate_ids(model, tokens[0, :4].tolist(), 8, temperature=3.0, seed=1234)
    assert expected != reference[name]["generated"][:8]  # sampled, not greedy
    assert all(g["sampled"] == expected for g in got)


@pytest.mark.parametrize("run,k,name", CASES, ids=CASE_IDS)
def test_weight_views_gather_the_full_weights(runs, reference, run, k, name):
    """params (weight statistics) and summary read DTensor weights: the same numbers as one
    process; the summary says what this rank holds."""
    ref = reference[name]
    for got in ranks_of(runs, run, k):
        assert got["summary"] == ref["summary"]
        a, b = got["param_stats"], ref["param_stats"]
        assert a["others"].keys() == b["others"].keys()
        for part, st in b["others"].items():
            assert a["others"][part] == pytest.approx(st, rel=1e-6, abs=1e-9), part
        for kind, stats in b["stats"].items():
            for stat, value in stats.items():
                assert torch.allclose(a["stats"][kind][stat], value, rtol=1e-6, atol=1e-9), (kind, stat)
        for field in ("hist", "rows"):
            for kind, value in b[field].items():
                assert torch.allclose(a[field][kind], value, rtol=1e-6, atol=1e-6), (field, kind)
        assert "on this rank" in got["loaded"] and "on this rank" not in ref["loaded"]
        assert got["loaded"].startswith(ref["loaded"])


def test_fast_kernels_leave_a_parallel_model_alone(runs):
    for got in ranks_of(runs, "2 ranks", 0):
        assert got["is_parallel"] and got["fast_linear_modules"] == 0
        assert "cannot change a tensor-parallel model" in got["optimize_quantize_error"]
        # (and every result above was computed after that call: the model still works)

