"""The REPL's experiments on a model split over 2 ranks (torchrun, gloo on CPU) print what
one process prints, line by line to the printed precision: :patch (a sweep and one
place), :ablate, :dla by head (the weights it reads are DTensors there, gathered) and
:steer with a steered continuation. The tiny Llama-2 checkpoint of
tests/test_repl_parallel.py (two Meta shards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_repl_parallel import TIMEOUT, _env, assert_same_lines, checkpoint  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent
LINES = [
    "The capital of France is",
    ':patch "The capital of Grance is" answer=#5 wrong=#6',  # (the same 8 tokens but one)
    ':patch "The capital of Grance is" heads 1 2 answer=#5 wrong=#6',
    ":ablate 0 1 1.3",
    ":dla 4 heads",
    ':steer "happy" "sad" 1 2 5',
    ":verify",
]


def test_experiments_on_two_ranks_print_what_one_process_prints(checkpoint, tmp_path):
    text = "\n".join(LINES) + "\n"
    runs = {}
    for name, launcher in [
        ("one", [sys.executable, "-m", "scripts.repl", "--threads", "1"]),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                 "-m", "scripts.repl"]),
    ]:
        runs[name] = subprocess.run(launcher + ["--model", str(checkpoint)], input=text, cwd=ROOT,
                                    env=_env(tmp_path), capture_output=True, text=True,
                                    encoding="utf-8", timeout=TIMEOUT)
    one, two = runs["one"], runs["two"]
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    assert "error" not in one.stdout and "Traceback" not in two.stderr, (one.stdout, two.stderr[-3000:])
    assert_same_lines(one.stdout.splitlines(), two.stdout.splitlines())
    out = one.stdout
    for what in ("patching resid_post (", "patched heads of layers.1, head 2", "zero-ablated L0.H1, L1.H3",
                 "direct logit attribution of", "steering: 2 x ('happy' - 'sad'",
                 "[steered continuation: 5 tokens, greedy]", "KV cache OK: 8 tokens"):
        assert what in out, what
