"""The tensor-parallel loader's slicing, in one process (no process group needed).

weights/parallel.py is given a ParallelContext for rank r of a pretend world, and each
slice it reads must be exactly rank r's chunk (torch.chunk, as DTensor's Shard lays it
out) of the tensor the single-process loader builds, for every shard count / world size
pair and every format; which files it opens, and the memory check per rank, too.
"""

from __future__ import annotations

import pytest
import torch

from checkpoint_writers import LLAMA2_PARAMS, LLAMA32_PARAMS, write_meta
from llama.parallel import ParallelContext, shard_plan
from tiny_models import tiny_hf_model
from weights import InsufficientMemoryError, load_model, open_checkpoint
import weights.parallel as wp


def ctx(rank: int, world: int) -> ParallelContext:
    return ParallelContext(mesh=None, rank=rank, world_size=world, device=torch.device("cpu"), timeout_s=60)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_slicing")
    llama2, llama3 = tiny_hf_model("llama2"), tiny_hf_model("llama32", num_key_value_heads=4)
    out = {}
    for n in (1, 2, 4):
        out[f"llama2-{n}"] = write_meta(llama2, root / f"llama2-{n}", LLAMA2_PARAMS, n_shards=n)
    out["llama3-4"] = write_meta(llama3, root / "llama3-4", dict(LLAMA32_PARAMS, n_kv_heads=4),
                                 n_shards=4, llama3=True, drop_output=True)
    # Llama 2-style files (embedding split by width) of a tied model: the tied embedding
    # must be split by vocabulary rows instead, taken from every file.
    out["tied-width-2"] = write_meta(tiny_hf_model("llama2", tie_word_embeddings=True), root / "tied-width-2",
                                     LLAMA2_PARAMS, n_shards=2, drop_output=True)
    qwen = tiny_hf_model("qwen2", vocab_size=353)
    qwen.save_pretrained(root / "hf")
    out["hf"] = root / "hf"
    return out


def check_slices(source, path, world, rank):
    full = load_model(path).state_dict()
    args = source.checkpoint.args
    plan = shard_plan(args, source.embedding_dim)
    for name, d in plan.items():
        got = source.read_slice(name, torch.float32, d)
        want = full[name] if d is None else full[name].chunk(world, dim=d)[rank]
        assert torch.equal(got, want), (name, d)
        assert got.is_contiguous(), name


@pytest.mark.parametrize("shards,world", [(1, 2), (2, 2), (2, 4), (4, 4), (4, 2), (1, 4)])
def test_meta_slices_are_the_chunks_of_the_merged_tensors(folders, shards, world):
    path = folders[f"llama2-{shards}"]
    for rank in range(world):
        opened = []
        real = wp.load_pth
        wp.load_pth = lambda p: opened.append(p.name) or real(p)
        try:
            source = wp.open_meta_sliced(path, ctx(rank, world))
        finally:
            wp.load_pth = real
        # Meta's own layout: only this rank's file; otherwise every file is mapped.
        if shards == world:
            assert opened == [f"consolidated.{rank:02d}.pth"] and source.reads_own_shard_only
        else:
            assert opened == [f"consolidated.{i:02d}.pth" for i in range(shards)]
        # Llama 2's files split the embedding by width; one file tells nothing: vocabulary.
        assert source.embedding_dim == (1 if shards > 1 else 0)
        assert source.checkpoint.shapes["layers.0.attention.wq.weight"] == (64, 64)  # full shapes
        check_slices(source, path, world, rank)


def test_llama3_shards_and_tied_output(folders):
    for rank in range(4):
        source = wp.open_meta_sliced(folders["llama3-4"], ctx(rank, 4))
        assert source.embedding_dim == 0 and source.checkpoint.args.tie_embeddings
        check_slices(source, folders["llama3-4"], 4, rank)


def test_tied_embedding_in_width_split_files_is_split_by_rows(folders):
    for rank in range(2):
        source = wp.open_meta_sliced(folders["tied-width-2"], ctx(rank, 2))
        assert source.embedding_dim == 0 and not source.reads_own_shard_only
        check_slices(source, folders["tied-width-2"], 2, rank)


def test_hf_slices_and_an_uneven_vocabulary(folders):
    ckpt = open_checkpoint(folders["hf"])
    for rank in range(2):
        check_slices(wp.open_other_sliced(ckpt, ctx(rank, 2)), folders["hf"], 2, rank)
    # 353 rows over 3 ranks: 118, 118, 117 (torch.chunk), as DTensor expects them.
    rows = [wp.open_other_sliced(ckpt, ctx(r, 3)).read_slice("tok_embeddings.weight", torch.float32, 0).shape[0]
            for r in range(3)]
    assert rows == [118, 118, 117]


def test_memory_check_counts_this_ranks_share(folders, monkeypatch):
    from llama.model import Transformer
    from weights.checkpoint import weights_on_meta

    source = wp.open_meta_sliced(folders["llama2-2"], ctx(0, 2))
    with weights_on_meta():
        model = Transformer(source.checkpoint.args)
    plan = shard_plan(source.checkpoint.args, source.embedding_dim)
    a = source.checkpoint.args
    full = 4 * sum(t.numel() for t in model.state_dict().values())  # the whole model, float32
    fixed = 64 * 2**20 + a.max_seq_len * a.head_dim // 2 * 8  # the margin and the RoPE table
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    # Two ranks on this machine, each needing fixed + its share (about half the model):
    # room for 2 * fixed + half the model is too little (a share counted as nothing would pass),
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", str(2 * fixed + full // 2))
    with pytest.raises(InsufficientMemoryError, match=r"rank 0: its share of the model needs about 0\.06 GiB in "
                                                      r"float32 on cpu, times 2 ranks on this machine"):
        wp._check_rank_memory(model, plan, torch.float32, ctx(0, 2))
    # and room for 2 * fixed + 1.5 models is enough (counting the whole model per rank is not).
    monkeypatch.setenv("LLAMA_AVAILABLE_MEMORY", str(2 * fixed + 3 * full // 2))
    wp._check_rank_memory(model, plan, torch.float32, ctx(0, 2))


def test_tap_hooks_tells_the_parallel_taps_what_to_gather(folders):
    """llama.hooks.tap_hooks: (observed, edited) for one tap of one module. The parallel
    taps all-gather a head-split value only when this says someone reads or edits it."""
    from llama.hooks import capture, intervene, tap_hooks

    model = load_model(folders["llama2-1"])
    attention = model.layers[0].attention
    assert tap_hooks(attention, "probs") == (False, False)  # nothing installed
    with capture(model, "layers.0.attention.probs"):
        assert tap_hooks(attention, "probs") == (True, False)
        assert tap_hooks(attention, "q") == (False, False)  # another tap of the same module
        assert tap_hooks(model.layers[1].attention, "probs") == (False, False)
        with intervene(model, {"layers.0.attention.q": lambda v: v}):
            assert tap_hooks(attention, "q") == (False, True)
            assert tap_hooks(attention, "probs") == (True, False)
    assert tap_hooks(attention, "probs") == (False, False)  # removed on exit
    attention._tap_fn = lambda name, value: value  # someone else's function: assume both
    try:
        assert tap_hooks(attention, "probs") == (True, True)
    finally:
        attention._tap_fn = None


def test_gpt2_is_refused_clearly(tmp_path):
    """Tensor parallelism splits Llama-family models; a GPT-2 checkpoint gets told so before
    anything is read (every rank raises the same; this is rank 0 of a pretend 2)."""
    from gpt2_models import tiny_gpt2, write_hf
    from llama.parallel import TensorParallelError

    folder = write_hf(tiny_gpt2("small"), tmp_path / "gpt2")
    with pytest.raises(TensorParallelError, match="tensor parallelism splits Llama-family models.*gpt2 checkpoint"):
        wp._load_local(folder, None, ctx(0, 2), False, {})
