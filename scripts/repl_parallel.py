"""llama-repl on several processes: rank 0 reads and prints, every rank follows.

    llama-repl --nproc-per-node 2 --model PATH                 # one machine: starts torchrun
    torchrun --nproc-per-node 2 -m scripts.repl --model PATH   # any torchrun launch (nodes...)

Under torchrun every rank loads its part of the model (scripts/loading.py asks for
load_model(path, parallel="tensor") when WORLD_SIZE > 1) and builds the same Repl over it.
Every rank must make the same model calls in the same order (each forward pass is a
series of collectives), so rank 0 decides and shares, through llama.parallel.InputChannel:

    each line       rank 0 reads it (terminal with line editing, or a pipe) and shares it
                    with a fresh seed; every rank seeds torch with it (so a ':set seed
                    random' generation draws the same seed everywhere) and handles the line.
                    Rank 0's Repl prints; the others' write to os.devnull, and write no
                    files (:export, :attn, :pca): FollowerRepl.
    a yes/no question   (keep the end of a text that is too long) rank 0 asks, shares the answer
    each generated token    rank 0 shares whether Ctrl-C was pressed: every rank stops
                    after the same token, and the text and KV cache agree everywhere
    EOF, :quit      every rank leaves the loop, then the process group (parallel.shutdown)
    a rank that dies    the others stop with llama.parallel.RankFailureError's message

Ctrl-C. torchrun starts each worker in a session of its own, so a Ctrl-C typed in the
terminal reaches torchrun alone, and torchrun ends the whole job. `llama-repl
--nproc-per-node N` (launch) therefore runs torchrun with SIGINT ignored and not handled
(--signals-to-handle without SIGINT) and forwards each Ctrl-C to rank 0, whose process id
rank 0 writes to a file the launcher names (INTERRUPT_FILE_ENV). Rank 0 then behaves like
the single-process REPL: at the prompt Ctrl-C clears the line; during a generation the
ranks stop after the next token. Other commands run to their end on every rank (stopping
one rank halfway would leave the others waiting in a collective). Under a plain torchrun
launch Ctrl-C ends the job, as torchrun always does; every rank exits.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .repl import COMMANDS, WELCOME, Repl, prompt_for, start
from .terminal import ask_yes_no, run_interactive, run_piped

INTERRUPT_FILE_ENV = "LLAMA_REPL_INTERRUPT_FILE"  # set by launch(): where rank 0 writes its pid


def under_torchrun() -> bool:
    """Is this process one of several ranks that torchrun started?"""
    from llama.parallel import torchrun_world_size

    return torchrun_world_size() > 1


# ----------------------------------------------------------------------------------
# The launcher: torchrun on this machine, with Ctrl-C for rank 0
# ----------------------------------------------------------------------------------


def _torchrun_handles_signals_option() -> bool:
    """Does this torch's torchrun have --signals-to-handle (added in torch 2.6)?"""
    from torch.distributed.launcher.api import LaunchConfig

    return "signals_to_handle" in getattr(LaunchConfig, "__dataclass_fields__", {})


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line launch() runs (the REPL's own arguments passed on)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    if _torchrun_handles_signals_option():
        cmd.append("--signals-to-handle=SIGTERM,SIGHUP,SIGQUIT")  # not SIGINT: rank 0's
    return cmd + ["-m", "scripts.repl", *argv]


def launch(nproc: int, argv: list[str]) -> int:
    """Run the REPL on `nproc` processes of this machine; torchrun's exit status.

    The ranks see the same arguments (--nproc-per-node included: under torchrun it only
    has to agree with the world size). OMP_NUM_THREADS, unless set, shares the cores out.
    """
    with tempfile.TemporaryDirectory(prefix="llama-repl-") as tmp:
        pid_file = Path(tmp) / "rank0.pid"
        env = dict(os.environ, **{INTERRUPT_FILE_ENV: str(pid_file)})
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        # Children inherit an ignored SIGINT (torchrun and the workers); rank 0 installs
        # its own handler, and gets each Ctrl-C from forward() below.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc = subprocess.Popen(torchrun_command(nproc, argv), env=env)
        except BaseException:
            signal.signal(signal.SIGINT, previous_int)
            raise

        def forward(signum, frame) -> None:
            pid = _read_pid(pid_file)
            if pid is None:  # still loading: nobody to stop, so end the job
                proc.terminate()
                return
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

        previous_term = signal.signal(signal.SIGTERM, lambda s, f: proc.terminate())
        signal.signal(signal.SIGINT, forward)
        try:
            return proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------
# One rank
# ----------------------------------------------------------------------------------


class FollowerRepl(Repl):
    """The Repl of a rank other than 0: the same Session calls as rank 0 (each is a series
    of collectives that needs every rank), no output (its `out` is os.devnull) and no
    files: :export computes the capture and rank 0 writes it; :attn and :pca compute the
    view and rank 0 draws and saves it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.session.writes_files = False

    def _draw(self, view, path: Path) -> None:
        pass


class Interrupts:
    """Ctrl-C on rank 0 (see the module docstring): KeyboardInterrupt at the prompt, a
    flag while the ranks work; on any other rank, or under a plain torchrun launch (where
    SIGINT means torchrun is ending the job), an exit."""

    def __init__(self, is_main: bool) -> None:
        self.forwarded = is_main and bool(os.environ.get(INTERRUPT_FILE_ENV))
        self.pressed = threading.Event()
        if self.forwarded:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        else:
            signal.signal(signal.SIGINT, _exit_on_signal)

    def announce(self) -> None:
        """Tell the launcher where to send Ctrl-C (once the model is loaded)."""
        if self.forwarded:
            Path(os.environ[INTERRUPT_FILE_ENV]).write_text(str(os.getpid()))

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """While every rank handles a line: Ctrl-C sets a flag that `take` hands on."""
        if not self.forwarded:
            yield
            return
        self.pressed.clear()
        previous = signal.signal(signal.SIGINT, lambda s, f: self.pressed.set())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def take(self) -> bool:
        """Was Ctrl-C pressed since the last call? (Asked after each generated token.)"""
        pressed = self.pressed.is_set()
        self.pressed.clear()
        return pressed

    def quiet(self) -> None:
        """No more Ctrl-C handling (leaving the process group must not be interrupted)."""
        if self.forwarded:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _handle(repl: Repl, line: str, seed: int) -> bool:
    torch.manual_seed(seed)  # the same on every rank: a generation's random seed agrees
    return repl.handle(line)


def run_rank(args: argparse.Namespace) -> int:
    """This rank's REPL under torchrun (rank 0 reads and prints); its exit status."""
    from llama.parallel import InputChannel, RankFailureError, TensorParallelError, init_distributed

    from .loading import LoadError, check_device

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    err = sys.stderr if rank == 0 else open(os.devnull, "w")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if args.nproc_per_node is not None and args.nproc_per_node != local:
        print(f"llama-repl: --nproc-per-node {args.nproc_per_node} disagrees with the "
              f"{local} processes per node torchrun started", file=err)
        return 2
    try:
        init_distributed(check_device(args.device))  # the group loading will use
    except (LoadError, TensorParallelError) as e:
        print(f"llama-repl: {e}", file=err)
        return 2
    channel = InputChannel()
    is_main = channel.is_main
    interrupts = Interrupts(is_main)
    # Rank 0's terminal decides for everyone: the same questions get asked everywhere.
    interactive, color = channel.share(
        (sys.stdin.isatty(), sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR"))
        if is_main else None)
    if is_main:
        def confirm(question: str) -> bool:
            return channel.share(ask_yes_no(question))
    else:
        def confirm(question: str) -> bool:
            return channel.share(None)

    def stop() -> bool:
        return bool(channel.share(interrupts.take() if is_main else None))

    out = sys.stdout if is_main else open(os.devnull, "w")
    made = start(args, out, err, interactive, color, confirm if interactive else None,
                 repl_class=Repl if is_main else FollowerRepl, stop=stop, fatal=(RankFailureError,))
    if isinstance(made, int):
        return made  # every rank failed alike (the loader makes sure); rank 0 said why
    repl, info = made
    try:
        code = _lead(repl, channel, interrupts, interactive, info) if is_main else _follow(repl, channel)
    except RankFailureError as e:
        print(f"llama-repl: {e}", file=sys.stderr)
        return 1  # the group is broken: no barrier to leave it by
    interrupts.quiet()
    from llama.parallel import shutdown

    shutdown()
    return code


def _lead(repl: Repl, channel, interrupts: Interrupts, interactive: bool, info: str) -> int:
    """Rank 0: the usual terminal loop, each line shared before it is handled."""
    done = False

    def handle(line: str) -> bool:
        nonlocal done
        # From before the line is shared until every rank has handled it, Ctrl-C is a flag:
        # a KeyboardInterrupt in between would leave the other ranks waiting.
        with interrupts.deferred():
            seed = secrets.randbits(63)
            channel.share((line, seed))
            go_on = _handle(repl, line, seed)
            stray = interrupts.take()
        if stray:  # Ctrl-C during a command that could not stop halfway
            repl.write(repl.style("dim", "[Ctrl-C: only a generation stops early on several ranks; "
                                  "this command ran to its end]"))
        done = not go_on
        return go_on

    interrupts.announce()
    try:
        if interactive:
            print(info)
            print(WELCOME)
            while True:
                try:
                    code = run_interactive(handle, prompt_for(repl), COMMANDS)
                    break
                except KeyboardInterrupt:  # between two lines, where every rank is too
                    print("^C")
        else:
            print(info, file=sys.stderr)  # stdout keeps to the tables, as in one process
            code = run_piped(handle, sys.stdin)
    except KeyboardInterrupt:  # Ctrl-C while a pipe was being read: stop reading
        code = 130
    if not done:
        channel.share(None)  # end of input: the others leave their loops too
    return code


def _follow(repl: Repl, channel) -> int:
    """Every other rank: handle what rank 0 shares, until it shares None or :quit."""
    while True:
        message = channel.share()
        if message is None:
            return 0
        line, seed = message
        if not _handle(repl, line, seed):
            return 0


__all__ = ["INTERRUPT_FILE_ENV", "under_torchrun", "torchrun_command", "launch", "run_rank",
           "FollowerRepl", "Interrupts"]
