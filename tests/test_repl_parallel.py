"""llama-repl on 2 ranks (tensor parallelism, gloo) against llama-repl in one process.

A tiny random Llama-2-style checkpoint in Meta's 2-shard layout, with a small byte-level
BPE tokenizer (tests/parity_checkpoints.py), is driven three ways:

* piped input, one process (`python -m scripts.repl`) and 2 ranks under a plain
  `torchrun --nproc-per-node 2 -m scripts.repl` (both started at once): stdout compared
  line by line -- tokens, the next-token table, :add, :gen greedy, :gen with a seed at
  temperature 2.5, :lens, :verify, :back, :pick, :tokens -- text exactly, and each decimal
  number within 1.5 units of its last printed digit (the parallel logits differ from one
  process's by ~1e-6: another order of summation). Only the tokens/s rate and :verify's
  difference are left out. :export's file equals one process's; :pca and :attn files are
  written (by rank 0); a generation with a random seed runs without the ranks disagreeing
  (they would stop with "different inputs"); the end of input ends every rank (status 0).
* a terminal (pexpect) through `llama-repl --nproc-per-node 2`, the launcher that forwards
  Ctrl-C to rank 0: Ctrl-C stops a long generation on every rank after the same token
  (:verify then finds the cache and text agreeing on both ranks; a rank left generating
  would hang or make the next call fail), Ctrl-C at the prompt gives a fresh prompt, a text
  too long for the context asks rank 0's question and every rank follows the answer, :quit
  ends all ranks with status 0.
* in this process: FollowerRepl writes no files and prints nothing; the Ctrl-C flag
  (Interrupts) and the Repl's stop callable; the torchrun command the launcher runs.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from checkpoint_writers import LLAMA2_PARAMS, write_meta
from parity_checkpoints import vocab, write_tokenizer_files
from tiny_models import tiny_hf_model

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds for a whole REPL run on the busy shared box
PROMPT = "The capital of France is"

# The commands both runs get; the files go to a folder of each run's own ({out}).
PIPED = [
    PROMPT,
    ":add  Paris",
    ":gen 8",
    ":set temperature 2.5",
    ":set seed 5",
    ":gen 8",
    ":lens",
    ":verify",
    ":back 2",
    ":pick 2",
    ":tokens",
    ":export {out}/act.safetensors layers.*.resid_post tok_embeddings",
    ":pca {out}/pca.png",
    ":attn 1 {out}/attn.png",
    ":set seed random",  # from here on the two runs differ (each draws its own seed)
    ":gen 4",
]
RANDOM_FROM = PIPED.index(":set seed random")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    hf = tiny_hf_model("llama2")
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(0.12)  # logits O(10), as in test_parallel.py
    folder = tmp_path_factory.mktemp("repl_tp") / "meta2"
    write_meta(hf, folder, LLAMA2_PARAMS, n_shards=2, rope_freqs=True)
    write_tokenizer_files(folder, vocab(hf.config.vocab_size))
    return folder


def _env(tmp: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", LLAMA_REPL_HISTORY=str(tmp / "history"), NO_COLOR="1")


@pytest.fixture(scope="module")
def piped(checkpoint, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """{"one": ..., "two": ...}: (finished process, its output folder), run side by side."""
    procs = {}
    for name, launcher in [
        ("one", [sys.executable, "-m", "scripts.repl", "--threads", "1"]),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                 "-m", "scripts.repl"]),
    ]:
        tmp = tmp_path_factory.mktemp(f"piped_{name}")
        text = "\n".join(PIPED).replace("{out}", str(tmp)) + "\n"
        proc = subprocess.Popen(launcher + ["--model", str(checkpoint)], cwd=ROOT, env=_env(tmp),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, encoding="utf-8")
        procs[name] = (proc, text, tmp)
    done = {}
    for name, (proc, text, tmp) in procs.items():
        try:
            out, err = proc.communicate(text, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the {name}-process REPL did not finish:\n{err[-3000:]}")
        done[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), tmp)
    return done


NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?")
MASKS = [
    (re.compile(r", [\d.]+ tokens/s\]"), "]"),  # speed
    (re.compile(r"differ by at most \S+;"), "differ by at most X;"),  # :verify's difference
]


def comparable(line: str) -> tuple[str, list[tuple[float, float]]]:
    """The line's text with its decimal numbers taken out, and each number with the
    tolerance its printed precision allows (1.5 units of the last digit)."""
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    numbers = []
    for m in NUMBER.finditer(line):
        text = m.group(0)
        mantissa, _, exponent = text.partition("e")
        ulp = 10.0 ** -len(mantissa.partition(".")[2]) * 10.0 ** int(exponent or 0)
        numbers.append((float(text), 1.5 * ulp))
    return NUMBER.sub("#", line), numbers


def assert_same_lines(one: list[str], two: list[str]) -> None:
    assert len(one) == len(two), f"{len(one)} lines in one process, {len(two)} on 2 ranks"
    for i, (a, b) in enumerate(zip(one, two)):
        text_a, nums_a = comparable(a)
        text_b, nums_b = comparable(b)
        assert text_a == text_b, f"line {i + 1} differs:\n  one process: {a}\n  2 ranks:     {b}"
        for (x, tol), (y, _) in zip(nums_a, nums_b):
            assert abs(x - y) <= tol, f"line {i + 1}: {x} vs {y}:\n  {a}\n  {b}"


def output_until_random_seed(out: str) -> list[str]:
    """stdout up to ':set seed random' (its settings line, the last to say so, included)."""
    lines = out.splitlines()
    marker = max(i for i, line in enumerate(lines) if "seed=random" in line)
    return lines[: marker + 1]


def test_piped_two_ranks_print_what_one_process_prints(piped):
    (one, dir_one), (two, dir_two) = piped["one"], piped["two"]
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]  # end of input ended both ranks
    a = output_until_random_seed(one.stdout.replace(str(dir_one), "{out}"))
    b = output_until_random_seed(two.stdout.replace(str(dir_two), "{out}"))
    assert_same_lines(a, b)
    # What was compared is what the REPL does: a table, generations greedy and sampled,
    # the lens, the cache check.
    text = "\n".join(a)
    assert text.startswith("tokens (8): 'The' 294 | ' capital' 295")
    assert "[8 tokens, greedy, stopped: max tokens]" in "\n".join(comparable(l)[0] for l in a)
    assert "[8 tokens, sampled, seed 5, stopped: max tokens" in text
    assert "logit lens after" in text and "layers.1" in text
    assert "KV cache OK: 29 tokens" in text
    assert "error" not in text and "error" not in two.stdout
    # Only rank 0 printed: one banner (on stderr, as in one process), saying how it runs.
    assert two.stderr.count("meta2: 2 layers") == 1
    assert "float32 on 2 ranks (cpu, plain kernels)" in two.stderr
    assert "Traceback" not in two.stderr


def test_piped_random_seed_agrees_across_ranks(piped):
    """':set seed random': every rank draws the same seed (rank 0's shared torch seed), or
    the ranks' next calls would differ and stop with an error."""
    out = piped["two"][0].stdout
    tail = "\n".join(out.splitlines()[len(output_until_random_seed(out)):])
    assert re.search(r"^\[4 tokens, sampled, seed \d+, stopped: max tokens", tail, re.M), tail
    assert re.search(r"^\+4 tokens \(32\)", tail, re.M), tail
    assert "error" not in tail


def test_files_written_once_by_rank0_equal_one_process(piped):
    from llama.hooks import load_capture

    (one, dir_one), (two, dir_two) = piped["one"], piped["two"]
    assert "saved 3 tensors" in one.stdout and "saved 3 tensors" in two.stdout
    a, b = load_capture(dir_one / "act.safetensors"), load_capture(dir_two / "act.safetensors")
    assert list(a.tensors) == list(b.tensors) == ["tok_embeddings", "layers.0.resid_post", "layers.1.resid_post"]
    for name, t in a.tensors.items():
        assert t.shape == b.tensors[name].shape == (1, 28, 64)
        assert (t - b.tensors[name]).abs().max().item() <= 1e-5, name
    for png in ("pca.png", "attn.png"):
        assert (dir_two / png).stat().st_size > 1000
        assert f"saved {dir_two / png}" in two.stdout


# ----------------------------------------------------------------------------------
# A terminal: Ctrl-C through the launcher
# ----------------------------------------------------------------------------------


def test_terminal_ctrl_c_stops_every_rank(checkpoint, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    env = dict(_env(tmp_path), TERM="xterm")
    env.pop("NO_COLOR")
    child = pexpect.spawn(
        sys.executable, ["-m", "scripts.repl", "--nproc-per-node", "2", "--model", str(checkpoint),
                         "--max-seq-len", "700"],
        cwd=str(ROOT), env=env, encoding="utf-8", timeout=TIMEOUT, dimensions=(60, 250),
    )
    try:
        child.expect("2 ranks")
        child.expect("Type text to see the next-token candidates")
        child.expect("> ")
        child.timeout = 120
        child.sendline(PROMPT)
        child.expect(r"tokens \(8\)")
        child.expect("> ")

        child.sendline(":gen 650")  # ~10 s on 2 ranks here: stopped long before the end
        child.expect_exact(":gen 650")
        child.expect(r"\x1b\[33m.")  # generated (yellow) text is arriving
        time.sleep(0.3)
        child.sendintr()
        child.expect(r"\[(\d+) tokens, greedy, stopped: stopped")
        made = int(child.match.group(1))
        assert 1 <= made < 650
        child.expect(rf"\+{made} tokens \({8 + made}\)")
        child.expect("> ")
        # Every rank stopped after the same token: the cache (on both ranks) holds the
        # text that rank 0 shows, and the ranks still work together.
        child.sendline(":verify")
        child.expect(rf"KV cache OK: {8 + made} tokens")
        child.expect("> ")

        child.sendintr()  # at the prompt: a fresh line
        child.expect(r"\^C")
        child.expect("> ")

        # Rank 0 asks, every rank follows the answer.
        child.sendline("word " * 600)
        child.expect(r"The text is (\d+) tokens, but the model's context holds 700")
        child.expect(r"Keep the last 700 tokens\? \[y/N\] ")
        child.sendline("y")
        child.expect(r"\[kept the last 700 tokens\]")
        child.expect("> ")
        child.sendline(":verify")  # (a rank that had answered otherwise holds other tokens)
        child.expect("KV cache OK: 700 tokens")
        child.expect("> ")

        child.sendline(":quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert "error" not in child.before and "Traceback" not in child.before


# ----------------------------------------------------------------------------------
# In this process
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_tokenizer(checkpoint):
    from tokenizer import load_tokenizer
    from weights import load_model

    return load_model(checkpoint), load_tokenizer(checkpoint)


def test_follower_writes_no_files_and_prints_nothing(model_and_tokenizer, tmp_path, monkeypatch):
    from scripts.repl import Repl
    from scripts.repl_parallel import FollowerRepl

    model, tok = model_and_tokenizer
    monkeypatch.chdir(tmp_path)
    lines = [PROMPT, ":export act.safetensors", ":pca pca.png", ":attn 0 attn.png", ":gen 2"]
    follower = FollowerRepl(model, tok, out=io.StringIO())
    for line in lines:
        assert follower.handle(line)
    assert list(tmp_path.iterdir()) == []
    # It did compute what rank 0 writes (the same model calls): the capture of :export.
    e = follower.session.export("act.safetensors", ["layers.*.resid_post"])
    assert e.n_tensors == 2 and e.n_bytes == 0 and not (tmp_path / "act.safetensors").exists()
    # Rank 0's Repl, the same lines: the files.
    leader = Repl(model, tok, out=io.StringIO())
    for line in lines:
        assert leader.handle(line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["act.safetensors", "attn.png", "pca.png"]


def test_the_stop_callable_ends_a_generation_after_that_token(model_and_tokenizer):
    """What the ranks share after each token: True ends the generation right there."""
    from scripts.repl import Repl

    model, tok = model_and_tokenizer
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) == 3

    out = io.StringIO()
    repl = Repl(model, tok, out=out, stop=stop)
    repl.handle(PROMPT)
    repl.handle(":gen 20")
    assert len(asked) == 3
    assert "[3 tokens, greedy, stopped: stopped" in out.getvalue()
    assert len(repl.session.ids) == 8 + 3


def test_rank0_ctrl_c_is_a_flag_while_the_ranks_work(monkeypatch, tmp_path):
    """Interrupts on rank 0 under the launcher: inside `deferred` SIGINT only sets the flag
    that the next stop check hands to every rank; outside it (at the prompt) it is the
    usual KeyboardInterrupt. Elsewhere (a follower, a plain torchrun launch) it exits."""
    from scripts.repl_parallel import INTERRUPT_FILE_ENV, Interrupts

    before = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setenv(INTERRUPT_FILE_ENV, str(tmp_path / "pid"))
        irq = Interrupts(is_main=True)
        irq.announce()
        assert int((tmp_path / "pid").read_text()) == os.getpid()  # where the launcher sends Ctrl-C
        with irq.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # (the handler runs at the next bytecode)
            assert irq.take() is True
            assert irq.take() is False  # taken once
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)

        monkeypatch.delenv(INTERRUPT_FILE_ENV)
        plain = Interrupts(is_main=True)  # plain torchrun: SIGINT means the job is ending
        with pytest.raises(SystemExit) as exit_info:
            with plain.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert exit_info.value.code == 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGINT, before)


def test_launcher_runs_torchrun_without_its_sigint_handling():
    from scripts.repl_parallel import torchrun_command

    cmd = torchrun_command(2, ["--model", "x"])
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node=2", "--signals-to-handle=SIGTERM,SIGHUP,SIGQUIT"]
    assert cmd[-4:] == ["-m", "scripts.repl", "--model", "x"]


def test_is_parallel_and_world_size(model_and_tokenizer, monkeypatch):
    from llama.parallel import is_parallel, torchrun_world_size

    model, _ = model_and_tokenizer
    assert not is_parallel(model)  # (test_parallel.py checks a parallel one, on 2 ranks)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert torchrun_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert torchrun_world_size() == 4


def test_llama_plot_under_torchrun(checkpoint, tmp_path, capsys):
    """llama-plot's model-only views on 2 ranks: rank 0 prints the summary one process
    prints (plus what each rank holds) and writes the figure; the other rank is silent."""
    from scripts.plot import main

    assert main(["summary", "--text", "--model", str(checkpoint)]) == 0
    alone = capsys.readouterr().out
    figure = tmp_path / "summary.png"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "scripts.plot", "summary", "--text", "--model", str(checkpoint), "-o", str(figure)],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = proc.stdout
    assert two.count("Configuration") == 1 and two.count(f"wrote {figure}") == 1
    assert figure.stat().st_size > 1000
    loaded = [line for line in two.splitlines() if "as loaded" in line]
    assert loaded == ["  as loaded           float32, 547.25 KiB (274.25 KiB on this rank)"]
    assert [l for l in two.splitlines() if "as loaded" not in l and not l.startswith("wrote")] == [
        l for l in alone.splitlines() if "as loaded" not in l]
