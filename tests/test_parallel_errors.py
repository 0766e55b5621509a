"""Tensor parallelism's errors: world sizes that cannot work, launches outside torchrun,
and a rank that hangs or dies (the others must stop with a message, not wait forever).

The world-size rules are checked in this process; the failures run under torchrun on CPU
(gloo) with tests/parallel_worker.py, like tests/test_parallel.py.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from checkpoint_writers import LLAMA2_PARAMS, write_meta
from llama.config import ModelArgs
from llama.parallel import (
    TensorParallelError,
    check_world_size,
    local_range,
    shard_plan,
    valid_world_sizes,
)
from parallel_worker import needs_devices, torchrun
from tiny_models import tiny_hf_model
from weights import CheckpointError, load_model


def args(**kw) -> ModelArgs:
    base = dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=384, ffn_hidden_dim=256)
    base.update(kw)
    return ModelArgs(**base)


# ----------------------------------------------------------------------------------
# World sizes (no processes needed)
# ----------------------------------------------------------------------------------


def test_world_size_must_divide_kv_heads_and_says_what_works():
    with pytest.raises(TensorParallelError) as e:
        check_world_size(args(), 4)
    msg = str(e.value)
    assert "cannot be split over 4 processes" in msg
    assert "4 does not divide n_kv_heads = 2 (key/value heads)." in msg
    assert "n_heads" not in msg  # 8 heads divide by 4: only the culprit is named
    assert "World sizes that work for this model: 1, 2." in msg
    assert "torchrun --nproc-per-node" in msg
    check_world_size(args(), 2)  # fine


def test_world_size_must_divide_heads_and_ffn():
    with pytest.raises(TensorParallelError, match=r"4 does not divide n_heads = 6 \(query heads\), n_kv_heads = 6 \(key/value heads\), hidden_dim = 102 \(feed-forward width\)\."):
        check_world_size(args(n_heads=6, n_kv_heads=6, dim=96, ffn_hidden_dim=102), 4)


def test_shards_of_another_size_are_named():
    with pytest.raises(TensorParallelError) as e:
        check_world_size(args(n_heads=4, n_kv_heads=4), 3, shards=2)
    msg = str(e.value)
    assert "stored as 2 model-parallel shard(s)" in msg and "with 2 processes each rank" in msg
    assert "World sizes that work for this model: 1, 2, 4." in msg


def test_valid_world_sizes_of_real_configurations():
    llama2_7b = ModelArgs(dim=4096, n_layers=1, n_heads=32, vocab_size=32000, multiple_of=256)
    assert llama2_7b.hidden_dim == 11008
    assert valid_world_sizes(llama2_7b) == [1, 2, 4, 8, 16, 32]
    llama3_70b = ModelArgs(dim=8192, n_layers=1, n_heads=64, n_kv_heads=8, vocab_size=128256,
                           ffn_dim_multiplier=1.3, multiple_of=4096)
    assert llama3_70b.hidden_dim == 28672
    assert valid_world_sizes(llama3_70b) == [1, 2, 4, 8]
    # A width-split embedding (Llama 2's files) also needs D to divide.
    assert valid_world_sizes(args(dim=96, n_heads=6, n_kv_heads=6, ffn_hidden_dim=96), embedding_dim=1) == [1, 2, 3, 6]


@pytest.mark.parametrize("size,world", [(11, 2), (353, 2), (10, 4), (320, 4), (7, 8)])
def test_local_range_is_torch_chunk(size, world):
    """The loader's slices must be the ones DTensor's Shard placement expects (torch.chunk)."""
    chunks = torch.arange(size).chunk(world)
    for rank in range(world):
        lo, hi = local_range(size, world, rank)
        expected = chunks[rank].tolist() if rank < len(chunks) else []
        assert list(range(lo, hi)) == expected


def test_shard_plan():
    plan = shard_plan(args(tie_embeddings=True))
    assert plan["tok_embeddings.weight"] == 0 and "output.weight" not in plan  # tied: one matrix
    assert plan["layers.1.attention.wq.weight"] == 0 and plan["layers.1.attention.wo.weight"] == 1
    assert plan["layers.0.feed_forward.w2.weight"] == 1 and plan["layers.0.ffn_norm.weight"] is None
    with pytest.raises(TensorParallelError, match="tied embedding"):
        shard_plan(args(tie_embeddings=True), embedding_dim=1)


def test_parallel_outside_torchrun(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    hf = tiny_hf_model("llama2")
    hf.save_pretrained(tmp_path)
    with pytest.raises(TensorParallelError, match=r"started by torchrun: e\.g\. `torchrun --nproc-per-node 2"):
        load_model(tmp_path, parallel="tensor")
    with pytest.raises(CheckpointError, match="parallel='pipeline' is not supported: use None or 'tensor'"):
        load_model(tmp_path, parallel="pipeline")


# ----------------------------------------------------------------------------------
# Under torchrun
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta2(tmp_path_factory):
    return write_meta(tiny_hf_model("llama2"), tmp_path_factory.mktemp("tp_err") / "meta2", LLAMA2_PARAMS, n_shards=2)


def test_three_ranks_for_two_shards(meta2, tmp_path):
    """4 heads over 3 ranks: every rank refuses, naming the shard count and what works."""
    needs_devices(3)
    # (A slower torchrun monitor, so that the first rank to exit does not get the others
    # ended before they print.)
    proc = torchrun(3, str(tmp_path), str(meta2), timeout=120, extra=["--monitor-interval=3"])
    assert proc.returncode != 0
    # (Split at each rank's prefix, not at newlines: ranks writing at once can run together.)
    chunks = re.split(r"(?=\[rank \d+\] )", proc.stderr)
    for rank in range(3):
        line = next((c for c in chunks if c.startswith(f"[rank {rank}] TensorParallelError")), "")
        assert "cannot be split over 3 processes" in line, proc.stderr[-3000:]
        assert "3 does not divide n_heads = 4 (query heads), n_kv_heads = 4" in line
        assert "stored as 2 model-parallel shard(s)" in line
        assert "World sizes that work for this model: 1, 2, 4." in line


def test_a_hung_rank_makes_the_others_stop(meta2, tmp_path):
    """Rank 1 stops taking part after loading; rank 0 gives up after LLAMA_TP_TIMEOUT."""
    needs_devices(2)
    start = time.monotonic()
    proc = torchrun(2, str(tmp_path), str(meta2), env={"TP_WORKER_STALL": "1", "LLAMA_TP_TIMEOUT": "3"}, timeout=100)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "[rank 0] RankFailureError: rank 0 of 2: the forward pass needs all ranks" in proc.stderr, proc.stderr[-3000:]
    assert "Timed out" in proc.stderr
    assert "Another rank has probably died, hung or been interrupted" in proc.stderr
    assert "at most 3 s; set LLAMA_TP_TIMEOUT" in proc.stderr
    assert elapsed < 90  # rank 1 sleeps 120 s: nobody waited for it


def test_a_dead_rank_makes_the_others_stop(meta2, tmp_path):
    """Rank 1 exits at the end of loading; rank 0 learns it when the ranks compare their
    loading results, at once and with a message. (torchrun's monitor is slowed down so
    that it does not end rank 0 first.)"""
    needs_devices(2)
    proc = torchrun(2, str(tmp_path), str(meta2), env={"TP_WORKER_DIE": "1"}, timeout=100,
                    extra=["--monitor-interval=2"])
    assert proc.returncode != 0
    assert "[rank 0] RankFailureError: rank 0 of 2: loading the model needs all ranks" in proc.stderr, proc.stderr[-3000:]
    assert "Another rank has probably died, hung or been interrupted" in proc.stderr
