"""llama-studio on the command line: its errors, and a real run that serves the page and
stops on Ctrl-C (loopback only; another host is a warning, never a default)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from real_models import needs_smollm2

ROOT = Path(__file__).resolve().parent.parent


def run_main(argv, capsys):
    from scripts.studio import main

    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_names_the_options(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for flag in ("--model", "--dtype", "--device", "--host", "--port", "--no-browser"):
        assert flag in out


def test_command_line_mistakes_exit_2_with_a_message(capsys, tmp_path):
    code, _, err = run_main(["--port", "70000"], capsys)
    assert code == 2 and "--port must be between 0 and 65535" in err
    code, _, err = run_main(["--dtype", "float8"], capsys)
    assert code == 2 and "invalid choice" in err
    code, _, err = run_main(["--model", str(tmp_path / "missing.gguf"), "--no-browser", "--port", "0"], capsys)
    assert code == 2 and "no such file or folder" in err
    code, _, err = run_main(["--device", "tpu", "--no-browser", "--port", "0"], capsys)
    assert code == 2 and "is not a device" in err
    code, _, err = run_main(["--device", "meta", "--no-browser", "--port", "0"], capsys)
    assert code == 2 and "only cpu, cuda and mps" in err


def test_a_port_in_use_is_said_before_loading(capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        t0 = time.monotonic()
        code, _, err = run_main(["--port", str(port), "--no-browser"], capsys)
    finally:
        taken.close()
    assert code == 2 and f"port {port} is already in use" in err and "--port 0" in err
    assert time.monotonic() - t0 < 5  # no model was loaded first


def start(*args, cache=None):
    env = dict(os.environ, **({"XDG_CACHE_HOME": str(cache)} if cache else {}))
    proc = subprocess.Popen([sys.executable, "-m", "scripts.studio", "--no-browser", "--port", "0", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"serving on (http://\S+)", line)
        if m:
            return proc, m.group(1), lines
    proc.kill()
    raise AssertionError("llama-studio never said where it serves: " + "".join(lines) + proc.stderr.read())


def get(url: str):
    m = re.match(r"http://([^:/]+):(\d+)/", url)
    conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=30)
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, body


@needs_smollm2
def test_serves_the_page_on_loopback_and_stops_on_ctrl_c(tmp_path):
    proc, url, lines = start(cache=tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        status, body = get(url)
        assert status == 200 and "llama studio" in body
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert code == 0, err
        assert "WARNING" not in err and "stopped" in err
        assert "30 layers" in "".join(lines)
        assert "kernels measured on this CPU by llama.speed.optimize" in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()


@needs_smollm2
def test_another_host_needs_asking_and_is_warned_about():
    proc, url, lines = start("--host", "0.0.0.0", "--plain-kernels")
    try:
        status, _ = get(url)  # the printed URL is a loopback one the browser can open
        assert status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    err = proc.stderr.read()
    assert "WARNING: listening on 0.0.0.0" in err and "--host 127.0.0.1" in err
    assert "plain kernels (F.linear everywhere; --plain-kernels)" in "".join(lines)


def test_the_model_runs_through_llama_speed_optimize(tmp_path, monkeypatch):
    """llama-studio loads like llama-repl and then applies llama.speed.optimize(model,
    cache=True) (kernel choices kept in the cache file); --plain-kernels leaves F.linear."""
    from gpt2_models import write_gpt2_with_tokenizer
    from llama.speed import FastLinear
    from scripts.studio import build_parser, load

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = write_gpt2_with_tokenizer(tmp_path / "gpt2")
    model, tok, path, speed = load(build_parser().parse_args(["--model", str(folder)]))
    assert any(isinstance(m, FastLinear) for m in model.modules())
    assert "llama.speed.optimize" in speed and str(tmp_path / "cache") in speed
    with torch.no_grad():  # the first real input calibrates, and the choice is kept on disk
        model(torch.tensor([tok.encode("The capital of France is")]))
    assert (tmp_path / "cache" / "llama-from-scratch" / "kernels.json").exists()
    model, _, _, speed = load(build_parser().parse_args(["--model", str(folder), "--plain-kernels"]))
    assert not any(isinstance(m, FastLinear) for m in model.modules()) and "--plain-kernels" in speed
