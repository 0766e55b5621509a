"""Run under torchrun by tests/test_parallel*.py (no tests in this file).

    torchrun --standalone --nproc-per-node N tests/parallel_worker.py OUT CKPT [CKPT ...]

Every rank loads each checkpoint with weights.load_model(path, parallel="tensor") and
writes what it computed to OUT/rank{r}-{k}.pt: full logits, logits token by token through
the KV cache, greedy generation, captures, an intervention, gradients, local shapes and
the checkpoint files it opened. The test process compares them with one process.

Options (environment): LLAMA_FS_TP_DEVICE=cuda runs on each rank's GPU (NCCL);
TP_WORKER_STALL=R makes rank R stop taking part after loading (it sleeps: a hung rank);
TP_WORKER_DIE=R makes rank R exit while loading (a dead rank).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import weights.parallel as wp
from llama.generate import generate_ids
from llama.hooks import ablate_heads, gradients, intervene, run_with_cache
from llama.parallel import InputChannel, RankFailureError, TensorParallelError, parallelize, shutdown
from weights import CheckpointError, load_model

WORKER = Path(__file__).resolve()
DEVICE = os.environ.get("LLAMA_FS_TP_DEVICE", "cpu")  # "cuda": one GPU per rank, NCCL

CAPTURED = ["layers.0.attention.probs", "layers.1.attention.q", "layers.0.attention.k_rot",
            "layers.0.attention.heads", "layers.1.feed_forward.act", "layers.0.resid_post",
            # whole on every rank, but handed on by the plans as collectives still in flight
            "tok_embeddings", "layers.0.attention.out", "layers.1.feed_forward.out"]


def tokens_for(vocab: int) -> torch.Tensor:  # the same ids as the test's reference run
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(7))


def torchrun(n: int, *args: str, env: dict | None = None, timeout: float = 240, extra=()) -> subprocess.CompletedProcess:
    """Run this file under `torchrun --standalone` (its rendezvous finds a free port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           *extra, str(WORKER), *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", LLAMA_FS_TP_DEVICE=DEVICE, **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def needs_devices(n: int) -> None:
    """Skip a test whose n ranks need n GPUs that this machine does not have."""
    import pytest

    if DEVICE == "cuda" and torch.cuda.device_count() < n:
        pytest.skip(f"an NCCL run with {n} ranks needs {n} GPUs; this machine has {torch.cuda.device_count()}")


def compute(model) -> dict:
    """Everything the tests compare, computed the same way in one process and under TP."""
    device = model.tok_embeddings.weight.device
    tokens = tokens_for(model.args.vocab_size).to(device)
    out: dict = {}
    with torch.no_grad():
        out["logits"] = model(tokens).cpu()
        # Token by token through the cache: a 5-token prefill, then single tokens.
        model.reset_cache()
        steps = [model(tokens[:, :5]).cpu()]
        for t in range(5, tokens.shape[1]):
            steps.append(model(tokens[:, t : t + 1], start_pos=t).cpu())
        out["incremental"] = torch.cat(steps, dim=1)
        out["cache_k_shape"] = tuple(model.layers[0].attention.cache.k.shape)
    out["local_heads"] = (model.layers[0].attention.n_heads, model.layers[0].attention.n_kv_heads)
    out["num_params"] = model.num_params()
    out["generated"] = generate_ids(model, tokens[0, :4].tolist(), 10)
    _, cache = run_with_cache(model, tokens, CAPTURED)
    out["capture"] = dict(cache)
    with torch.no_grad(), intervene(model, {"layers.0.attention.heads": ablate_heads(1)}):
        out["ablated"] = model(tokens).cpu()
    target = int(tokens[0, -1])
    grads = gradients(model, tokens[:1], lambda lg: lg[0, -1, target],
                      ["tok_embeddings", "layers.0.attention.heads"])
    out["grads"] = {k: v.cpu() for k, v in grads.items()}
    out.update(weight_views(model))
    return out


def weight_views(model) -> dict:
    """The analysis views that read the weights themselves (llama-plot params / summary)."""
    from llama.analysis import model_summary, param_stats

    ps = param_stats(model)
    as_t = lambda d: {k: torch.as_tensor(v) for k, v in d.items()}  # noqa: E731
    s = model_summary(model)
    return {
        "param_stats": {
            "stats": {kind: as_t(st) for kind, st in ps.stats.items()},
            "hist": as_t(ps.hist), "rows": as_t(ps.rows),
            "others": {k: vars(v) for k, v in ps.others.items()},
        },
        "summary": (s.params, s.total_params, s.tied, s.kv_bytes_full, s.weight_bytes),
        "loaded": s.loaded,
    }


def run_one(path: str, device: str) -> dict:
    opened: list[str] = []
    real_load = wp.load_pth

    def recording_load(p):
        opened.append(Path(p).name)
        return real_load(p)

    wp.load_pth = recording_load  # which consolidated.NN.pth files does this rank open?
    real_finish = wp.rebuild_rope
    die = os.environ.get("TP_WORKER_DIE")
    if die is not None and int(os.environ["RANK"]) == int(die):
        def dying_finish(*args, **kwargs):
            os._exit(3)  # dies at the end of loading, as a rank killed for memory would

        wp.rebuild_rope = dying_finish
    try:
        model = load_model(path, parallel="tensor", device=device)
    finally:
        wp.load_pth, wp.rebuild_rope = real_load, real_finish
    rank = model.tp.rank
    stall = os.environ.get("TP_WORKER_STALL")
    if stall is not None and rank == int(stall):
        time.sleep(120)  # never joins the next collective
    # The fast CPU kernels have no DTensor rules: use_fast_kernels leaves the model alone
    # (and everything below runs after it).
    from llama.parallel import is_parallel
    from llama.speed import FastLinear, use_fast_kernels

    use_fast_kernels(model)
    out = compute(model)
    out["fast_linear_modules"] = sum(type(m) is FastLinear for m in model.modules())
    out["is_parallel"] = is_parallel(model)
    from llama.speed import optimize

    try:  # weights as stored cannot be made of split weights: refused, not half-done
        optimize(model, quantize="int8")
        out["optimize_quantize_error"] = None
    except ValueError as e:
        out["optimize_quantize_error"] = str(e)
    out.update(opened=opened, rank=rank, world=model.tp.world_size,
               wq_local_shape=tuple(model.layers[0].attention.wq.weight.to_local().shape))
    tokens = tokens_for(model.args.vocab_size).to(model.tp.device)
    # Ranks that disagree about the input must all refuse (none may hang or mix results).
    try:
        model(tokens[:, :3] if rank == 0 else tokens[:, 3:6])
        out["skew_error"] = None
    except TensorParallelError as e:
        out["skew_error"] = str(e)
    # Rank 0 decides (a seed, as a front end would share a line), every rank follows:
    # sampling with the shared seed gives the same tokens everywhere.
    channel = InputChannel()
    shared = channel.share({"seed": 1234} if rank == 0 else {"seed": rank})
    out["shared"] = shared
    out["sampled"] = generate_ids(model, tokens[0, :4].tolist(), 8, temperature=3.0, seed=shared["seed"])
    # parallelize() on a model that every rank loaded in full gives the same logits.
    full = load_model(path, device=model.tp.device)
    with torch.no_grad():
        out["parallelize_logits"] = parallelize(full, model.tp)(tokens).cpu()
    return out


def main() -> int:
    out_dir, paths = Path(sys.argv[1]), sys.argv[2:]
    device = os.environ.get("LLAMA_FS_TP_DEVICE", "cpu")
    rank = int(os.environ.get("RANK", "0"))
    try:
        for k, path in enumerate(paths):
            result = run_one(path, device)
            torch.save(result, out_dir / f"rank{rank}-{k}.pt")
    except (TensorParallelError, RankFailureError, CheckpointError) as e:
        sys.stderr.write(f"[rank {rank}] {type(e).__name__}: {e}\n")  # one write: one line
        sys.stderr.flush()
        return 1
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
