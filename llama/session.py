"""Session: a text, its tokens and KV cache, and what a user does to them. No I/O.

The REPL (scripts/repl.py), the studio and notebooks drive a Session and render what its
methods return: plain dataclasses (Change, Table, Row, Token, LensReport, ...), never text
printed somewhere.

    from llama.session import Session
    s = Session(model, tokenizer)
    change = s.set_text("The capital of France is")
    change.table.rows[0]            # Row(rank=1, id=7042, piece=' Paris', prob=0.7725, ...)
    s.pick(1)                       # append the top candidate: one decode step
    for step in s.generate(20):     # a Generation: GeneratedToken by GeneratedToken
        print(step.text, end="")
    s.back(3); s.lens(); s.verify(); s.view("attention", layer=3)
    s.ablate([(3, 1)]); s.patch("The capital of Italy is"); s.dla()   # llama.session_interp

Invariant: `logits` are the next-token logits after exactly `ids`, and the two change
together, only once the model has produced the logits; a step that fails or is
interrupted (KeyboardInterrupt) leaves both as they were. The KV cache's own record
(`ctx.ids`) is kept truthful by llama.generate.CachedContext.

Sharing one model: every model call holds the model's lock (llama.generate.model_lock),
and a Session whose cache was overwritten by another one (or by any other run of the
model) prefills its own tokens again, so Sessions on one model never see each other's
keys and values. A generation takes the lock per token, so other Sessions run between
its steps; `Generation.stop()` (or a `stop` event) ends it from another thread.
"""

from __future__ import annotations

import dataclasses

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .analysis import LogitLens, View, ViewSource, compute_view, logit_lens, run_and_capture
from .family import family_of
from .session_interp import (AblationReport, DLAReport, Experiments, PatchCell, PatchedRun,  # noqa: F401
                             PatchReport, SteeringReport)
from .generate import (
    CachedContext,
    GeneratedToken,
    GenerationError,
    check_sampling_args,
    common_prefix_length,
    generate,
    make_generator,
    top_candidates,
)

DEFAULT_SHOW = 10  # candidates in the next-token table
DEFAULT_GEN = 20  # tokens generated when no number is given


class SessionError(ValueError):
    """Something a session cannot do as asked (no text yet, a bad setting, ...)."""


class TextTooLong(SessionError):
    """A text that does not fit the model's context; `truncate()` keeps its end."""

    def __init__(self, n_tokens: int, limit: int) -> None:
        super().__init__(
            f"the text is {n_tokens} tokens, but the model's context holds {limit}: shorten "
            f"it, or keep only its last {limit} tokens (truncate)"
        )
        self.n_tokens, self.limit = n_tokens, limit


# ----------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------

SETTING_NAMES = ("temperature", "top_k", "top_p", "seed", "show", "gen")
SETTING_ALIASES = {"temp": "temperature", "t": "temperature", "k": "top_k", "p": "top_p"}


@dataclass
class Settings:
    temperature: float = 0.0  # 0 = greedy
    top_k: int | None = None  # sampling filter (None = off); not the table size
    top_p: float | None = None  # sampling filter (None = off)
    seed: int | None = None  # None = a fresh random seed for every generation
    show: int = DEFAULT_SHOW  # rows of the next-token table
    max_new_tokens: int = DEFAULT_GEN  # tokens a generation without a number makes
    chat: bool = False  # wrap typed text in the tokenizer's chat template

    def describe(self) -> str:
        mode = "greedy" if self.temperature == 0 else f"sampling at temperature {self.temperature:g}"
        return (
            f"temperature={self.temperature:g} ({mode}), top_k={self.top_k or 'off'}, "
            f"top_p={self.top_p or 'off'}, seed={'random' if self.seed is None else self.seed}, "
            f"show={self.show}, gen={self.max_new_tokens}, chat={'on' if self.chat else 'off'}"
        )

    def set(self, name: str, value: Any) -> str:
        """Set one setting (SETTING_NAMES or an alias) from text or a number; its name.

        Text as a user types it is accepted: "off"/"none" switches a filter off, and so do
        top_k 0 and top_p 1 (they filter nothing); seed "random" draws a new seed each time.
        """
        name = str(name).lower().replace("-", "_")
        name = SETTING_ALIASES.get(name, name)
        if name not in SETTING_NAMES:
            raise SessionError(f"unknown setting {name!r}; settings: {', '.join(SETTING_NAMES)}")
        v = value.strip().lower() if isinstance(value, str) else value
        off = v is None or v in ("off", "none") or (name == "top_k" and v in ("0", 0)) or (
            name == "seed" and v == "random")
        try:
            if name == "temperature":
                check_sampling_args(temperature=float(v))
                self.temperature = float(v)
            elif name == "top_k":
                k = None if off else _whole(v)
                check_sampling_args(top_k=k)
                self.top_k = k
            elif name == "top_p":
                p = None if off else float(v)
                p = None if p == 1 else p
                check_sampling_args(top_p=p)
                self.top_p = p
            elif name == "seed":
                s = None if off else _whole(v)
                if s is not None and s < 0:
                    raise SessionError(f"seed must be a non-negative integer or 'random', got {value!r}")
                self.seed = s
            else:  # show, gen: counts
                n = _whole(v)
                if n < 1:
                    raise SessionError(f"{name} must be an integer >= 1, got {value!r}")
                if name == "show":
                    self.show = n
                else:
                    self.max_new_tokens = n
        except SessionError:
            raise
        except GenerationError as e:
            raise SessionError(str(e)) from None
        except (TypeError, ValueError):  # int()/float() of a non-number
            raise SessionError(f"{name} needs a number, got {value!r}") from None
        return name


def _whole(v: Any) -> int:
    """int(v) for text or an integral number; ValueError for 2.5 or "2.5"."""
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(v)
    return int(v)


# ----------------------------------------------------------------------------------
# What the methods return
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    id: int
    piece: str  # the tokenizer's piece: ' Paris', '\n', '<|im_end|>'


@dataclass(frozen=True)
class Row:
    """One candidate of the next-token table."""

    rank: int  # 1 = most probable
    id: int
    piece: str
    prob: float  # softmax of the logits: temperature 1, no filters
    logit: float
    sample_prob: float | None  # its chance of being drawn under the sampling settings


@dataclass(frozen=True)
class Table:
    """The next-token candidates after the current text."""

    rows: tuple[Row, ...]
    position: int  # the last token's position: the candidates are for the one after it
    temperature: float  # the sampling settings `sample_prob` is computed for
    top_k: int | None
    top_p: float | None


@dataclass(frozen=True)
class Change:
    """What an edit did to the text."""

    kept: int  # leading tokens that were there before; the new ones start here
    added: tuple[Token, ...]  # the tokens from `kept` on
    n_tokens: int  # tokens in the text now
    table: Table  # the next-token candidates after it


@dataclass(frozen=True)
class GenerationResult:
    new_ids: tuple[int, ...]  # the tokens generated (stop token included)
    reason: str  # "max tokens", "context full", "stop token", "stopped", "interrupted", "closed"
    stop_token: int | None  # the stop token's id when reason == "stop token"
    seed: int | None  # the seed sampling used (None: greedy)
    elapsed_s: float  # generating, without adding the tokens to the text afterwards
    change: Change | None  # the tokens added to the text (None: nothing added)


@dataclass(frozen=True)
class LensStage:
    label: str  # "embeddings", "layers.0", ...
    hook: str  # the hook name it decodes: tok_embeddings (GPT-2: embeddings), layers.0.resid_post, ...
    candidates: tuple[Row, ...]  # the best next tokens at this depth


@dataclass(frozen=True)
class LensReport:
    position: int
    token: Token  # the token whose next-token guesses these are
    stages: tuple[LensStage, ...]
    lens: LogitLens  # the arrays (one position)


@dataclass(frozen=True)
class Verification:
    n_tokens: int
    max_abs_diff: float  # cached vs from-scratch logits
    ok: bool  # within 1e-3 of the logits' scale
    same_top1: bool


@dataclass(frozen=True)
class Export:
    path: Path
    n_tensors: int
    n_bytes: int
    n_tokens: int


# ----------------------------------------------------------------------------------
# The session
# ----------------------------------------------------------------------------------


class Session(Experiments):
    """A model, its tokenizer, the current text with its token ids, logits and KV cache."""

    # False: export() computes everything (the same model calls) but writes no file, as on
    # a tensor-parallel rank other than 0, which must run each step with rank 0.
    writes_files = True

    def __init__(self, model: torch.nn.Module, tokenizer, settings: Settings | None = None, *,
                 name: str = "model", checkpoint: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or Settings()
        self.name = name  # for titles of views
        self.checkpoint = checkpoint  # recorded in exports
        self.ctx = CachedContext(model)
        self._ids: list[int] = []
        self._logits: torch.Tensor | None = None  # (V,) after self._ids
        self.text: str | None = None  # what the text was set to last (for exports)
        self.pending: list[int] | None = None  # a text that did not fit, for truncate()
        self.table: Table | None = None  # the candidates after the text, as last computed
        self._generation: Generation | None = None

    # -- state ------------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    @property
    def logits(self) -> torch.Tensor | None:
        return self._logits

    @property
    def max_len(self) -> int:
        return self.ctx.max_len

    def tokens(self, start: int = 0) -> list[Token]:
        """The tokens from `start` on, with their pieces."""
        ids = self._ids[start:]
        return [Token(i, p) for i, p in zip(ids, self.tokenizer.pieces(ids))]

    def require_text(self) -> None:
        """SessionError unless there is a text."""
        if not self._ids:
            raise SessionError("there is no text yet: type some first")

    def _idle(self) -> None:
        if self._generation is not None:
            raise SessionError("a generation is running: stop it (or let it finish) first")

    # -- changing the text ----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids for `text` (inside the chat template when chat is on)."""
        if self.settings.chat:
            if not self.tokenizer.has_chat_template:
                raise SessionError("this tokenizer has no chat template; turn chat off")
            return self.tokenizer.encode_chat([{"role": "user", "content": text}],
                                              add_generation_prompt=True)
        return self.tokenizer.encode(text)

    def set_text(self, text: str) -> Change:
        """Replace the text (the cache keeps what the new tokens share with the old)."""
        self._idle()
        ids = self.encode(text)
        if not ids:
            raise SessionError("the text encodes to no tokens")
        self.text = text
        return self._move_to(ids)

    def extend(self, text: str) -> Change:
        """Append `text`. The whole text is encoded again, so its tokens are the ones the
        tokenizer gives it; the cache still reuses every token up to where they differ."""
        self._idle()
        if not self._ids:
            return self.set_text(text)
        tok = self.tokenizer
        base = tok.decode(self._ids)
        ids = tok.encode(base + text, bos=False, allow_special=self.settings.chat)
        if self._ids[0] == tok.bos_id and (not ids or ids[0] != tok.bos_id):
            ids = [tok.bos_id] + ids
        self.text = base + text
        return self._move_to(ids)

    def set_ids(self, ids: Sequence[int]) -> Change:
        """Make `ids` the text's tokens."""
        self._idle()
        ids = [int(i) for i in ids]
        if not ids:
            raise SessionError("no token ids given")
        return self._move_to(ids)

    def pick(self, rank: int) -> Change:
        """Append the candidate of that rank (1 = best) in the last table: one decode step."""
        self._idle()
        self.require_text()
        rows = self.table.rows
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(rows):
            raise SessionError(f"the table has {len(rows)} candidates; pick 1..{len(rows)}")
        return self._move_to(self._ids + [rows[rank - 1].id])

    def back(self, n: int = 1) -> Change:
        """Remove the last n tokens (the cache is rewound, the last kept token rerun)."""
        self._idle()
        self.require_text()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SessionError(f"the number of tokens to remove must be >= 1, got {n!r}")
        if n >= len(self._ids):
            raise SessionError(f"the text has {len(self._ids)} tokens: at most "
                               f"{len(self._ids) - 1} can be removed (or reset)")
        return self._move_to(self._ids[:-n])

    def truncate(self) -> Change:
        """Keep the last tokens of the text that did not fit the context (TextTooLong)."""
        self._idle()
        if self.pending is None:
            raise SessionError("nothing to truncate: truncate applies to the last text that "
                               "did not fit the context")
        ids, self.pending = self.pending[-self.max_len :], None
        return self._move_to(ids)

    def reset(self) -> None:
        """Forget the text and empty the KV cache."""
        self._idle()
        self.ctx.forget()
        self._ids, self._logits, self.text, self.pending, self.table = [], None, None, None, None

    def _move_to(self, ids: list[int]) -> Change:
        """Make `ids` the current tokens, running only what the cache lacks."""
        if len(ids) > self.max_len:
            self.pending = list(ids)
            raise TextTooLong(len(ids), self.max_len)
        self.pending = None
        logits = self.ctx.logits_for(ids)  # may raise KeyboardInterrupt: then nothing changed
        kept = common_prefix_length(self._ids, ids)
        self._ids, self._logits = list(ids), logits
        self.table = self.next_token_table()
        return Change(kept, tuple(self.tokens(kept)), len(ids), self.table)

    # -- the next token ----------------------------------------------------------------
    def next_token_table(self, k: int | None = None, logits: torch.Tensor | None = None) -> Table:
        """The k (default: settings.show) best next tokens, raw and as sampling sees them.
        logits: other next-token logits (V,) after the text (an experiment's) instead."""
        self.require_text()
        st = self.settings
        logits = self._logits if logits is None else logits
        cands = top_candidates(logits, k or st.show, temperature=st.temperature,
                               top_k=st.top_k, top_p=st.top_p)
        pieces = self.tokenizer.pieces([c.id for c in cands])
        rows = tuple(Row(c.rank, c.id, p, c.prob, c.logit, c.sample_prob) for c, p in zip(cands, pieces))
        return Table(rows, len(self._ids) - 1, st.temperature, st.top_k, st.top_p)

    def set(self, name: str, value: Any) -> str:
        """Change a sampling or display setting (validated); the table follows it."""
        name = self.settings.set(name, value)
        if self._ids:
            self.table = self.next_token_table()
        return name

    def set_chat(self, on: bool | None = None) -> bool:
        """Chat template on, off, or (None) toggled; the new state."""
        want = (not self.settings.chat) if on is None else bool(on)
        if want and not self.tokenizer.has_chat_template:
            raise SessionError("this tokenizer has no chat template (not an instruct model?)")
        self.settings.chat = want
        return want

    def generate(self, max_new_tokens: int | None = None, *,
                 stop: threading.Event | Callable[[], bool] | None = None) -> "Generation":
        """Start generating (settings.max_new_tokens by default): iterate the Generation."""
        self._idle()
        self.require_text()
        n = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SessionError(f"the number of tokens to generate must be >= 1, got {n!r}")
        if len(self._ids) >= self.max_len:
            raise SessionError(f"the context is full ({self.max_len} tokens): remove tokens "
                               "to make room")
        return Generation(self, n, stop)

    # -- looking inside ----------------------------------------------------------------
    def lens(self, k: int = 3) -> LensReport:
        """Logit lens at the last position: each layer's best k guesses for the next token.

        Only the last token runs again (the cache is rewound by one), with a capture;
        where the cache no longer holds this text (an experiment or another session ran
        the model) the whole text runs, and the capture's last position is the one read.
        """
        from .analysis.capture import stage_names
        from .hooks import capture

        self.require_text()
        self._idle()
        first = family_of(self.model).residual_input  # what enters layers.0: tok_embeddings, ...
        with self.ctx.lock:
            self.ctx.rewind(len(self._ids) - 1)
            with capture(self.model, [first, "layers.*.resid_post"]) as cache:
                self.ctx.logits_for(self._ids)
            lens = logit_lens(self.model, cache, k=k)
        last_only = slice(-1, None)  # (stages, T', ...) -> (stages, 1, ...): T' is 1 or T
        lens = dataclasses.replace(
            lens, top_ids=lens.top_ids[:, last_only], top_probs=lens.top_probs[:, last_only],
            final_ids=lens.final_ids[last_only], final_token_probs=lens.final_token_probs[:, last_only],
            ranked_ids=lens.ranked_ids[:, last_only], ranked_probs=lens.ranked_probs[:, last_only])
        hooks = stage_names(self.model.args.n_layers, first)
        stages = []
        for s, ids, probs in zip(lens.stages, lens.ranked_ids[:, 0], lens.ranked_probs[:, 0]):
            hook = hooks[s]
            label = "embeddings" if s == 0 else f"layers.{s - 1}"
            pieces = self.tokenizer.pieces([int(i) for i in ids])
            rows = tuple(Row(r + 1, int(i), pc, float(p), float("nan"), None)
                         for r, (i, p, pc) in enumerate(zip(ids, probs, pieces)))
            stages.append(LensStage(label, hook, rows))
        last = len(self._ids) - 1
        return LensReport(last, self.tokens(last)[0], tuple(stages), lens)

    def verify(self) -> Verification:
        """Recompute the whole text without the cache and compare with the cached logits."""
        self.require_text()
        self._idle()
        with self.ctx.full_run(self._ids), torch.no_grad():
            full = self.model(self._token_tensor())[0, -1]  # (V,)
        diff = (full - self._logits).abs().max().item()
        ok = diff <= 1e-3 * max(1.0, full.abs().max().item())
        return Verification(len(self._ids), diff, ok, int(full.argmax()) == int(self._logits.argmax()))

    def capture(self, names=None) -> dict[str, torch.Tensor]:
        """The named intermediates (llama.hooks names or globs; None = all) of the whole
        text, float32 on the CPU. One full run; the cache holds the text again after it."""
        from .hooks import run_with_cache

        self.require_text()
        self._idle()
        with self.ctx.full_run(self._ids):
            _, cache = run_with_cache(self.model, self._token_tensor(), names=names)
        return dict(cache)

    def export(self, path: str | Path = "activations.safetensors", names=None) -> Export:
        """Save the intermediates of the text (llama.hooks.save_capture) with its context."""
        from .hooks import save_capture

        self.require_text()
        if not str(path).endswith(".safetensors"):
            raise SessionError(f"the export file must end in .safetensors, got {str(path)!r}")
        cache = self.capture(names)
        if not self.writes_files:
            return Export(Path(path), len(cache), 0, len(self._ids))
        out = save_capture(path, cache, tokens=self._ids, tokenizer=self.tokenizer,
                           prompt=self.tokenizer.decode(self._ids), model=self.model,
                           checkpoint=self.checkpoint)
        return Export(Path(out), len(cache), Path(out).stat().st_size, len(self._ids))

    def view_source(self) -> ViewSource:
        """The text as llama.analysis views see it; captures run through this session."""
        self.require_text()
        ids = list(self._ids)

        def run(names: list[str]) -> dict[str, torch.Tensor]:
            with self.ctx.full_run(ids):
                return run_and_capture(self.model, self._token_tensor(), names)

        return ViewSource.from_model(self.model, self.tokenizer, ids, self.tokenizer.decode(ids),
                                     self.name, run=run)

    def view(self, kind: str, **options: Any) -> View:
        """One registered view (llama.analysis.VIEW_KINDS) of the current text."""
        self._idle()
        with self.ctx.lock:  # saliency and the like run the model outside the context
            return compute_view(kind, self.view_source() if self._ids else _config_source(self),
                                options)

    def _token_tensor(self) -> torch.Tensor:
        return torch.tensor([self._ids], device=self.model.tok_embeddings.weight.device)  # (1, T)


def _config_source(s: Session) -> ViewSource:
    """Views of the model alone (summary, params, rope, ...) before any text is set."""
    return ViewSource(s.model.args, s.model, s.tokenizer, name=s.name)


# ----------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------


class Generation:
    """A generation in progress: iterate it for llama.generate.GeneratedToken items.

    The session's text stays as it was while tokens stream; when the iteration ends (all
    tokens made, a stop token, `stop()`, an interrupt, or `close()`), the generated tokens
    are added to the text with one decode step, and `result` says what happened. Closing
    it at any point, or dropping it, leaves text, ids and cache consistent.
    """

    def __init__(self, session: Session, n: int, stop=None) -> None:
        self.session = session
        self.ids: list[int] = []  # generated so far
        self.result: GenerationResult | None = None
        self._stop = threading.Event()
        self._external = stop.is_set if isinstance(stop, threading.Event) else stop
        self._closed_as = "closed"
        self._steps = self._run(n)

    def __iter__(self) -> Iterator[GeneratedToken]:
        return self

    def __next__(self) -> GeneratedToken:
        return next(self._steps)

    def stop(self) -> None:
        """End after the current token (safe from any thread)."""
        self._stop.set()

    def close(self, reason: str = "closed") -> None:
        """End now, from the thread iterating it; `reason` goes into the result."""
        self._closed_as = reason
        self._steps.close()

    def _stopped(self) -> bool:
        return self._stop.is_set() or bool(self._external and self._external())

    def _run(self, n: int) -> Iterator[GeneratedToken]:
        s, st = self.session, self.session.settings
        s._idle()  # checked again here: the session is busy from the first token on
        start = list(s._ids)
        room = s.max_len - len(start)
        reason, stop_token = ("max tokens" if n <= room else "context full"), None
        seed = st.seed if st.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        device = s.model.tok_embeddings.weight.device
        stream = generate(s.model, start, min(n, room), tokenizer=s.tokenizer,
                          temperature=st.temperature, top_k=st.top_k, top_p=st.top_p,
                          generator=make_generator(seed, device) if st.temperature > 0 else None,
                          context=s.ctx)
        t0 = time.perf_counter()
        s._generation = self
        try:
            for step in stream:
                if step.id >= 0:
                    self.ids.append(step.id)
                if step.is_stop:
                    reason, stop_token = "stop token", step.id
                yield step
                if self._stopped() and not step.is_stop:
                    reason = "stopped"
                    break
        except KeyboardInterrupt:  # Ctrl-C in a forward pass: stop, keep what was made
            reason = "interrupted"
        except GeneratorExit:
            reason = self._closed_as
        finally:
            stream.close()
            elapsed = time.perf_counter() - t0
            change = None
            try:
                if self.ids:  # the cache holds all but the last: one decode step
                    change = s._move_to(start + self.ids)
            except KeyboardInterrupt:
                change = None  # the text stays as it was before the generation
            finally:
                s._generation = None
                self.result = GenerationResult(tuple(self.ids), reason, stop_token,
                                               seed if st.temperature > 0 else None, elapsed, change)


__all__ = [
    "DEFAULT_SHOW", "DEFAULT_GEN", "SETTING_NAMES", "SETTING_ALIASES",
    "SessionError", "TextTooLong", "Settings", "Token", "Row", "Table", "Change",
    "GenerationResult", "Generation", "LensStage", "LensReport", "Verification", "Export",
    "Session", "AblationReport", "PatchCell", "PatchReport", "PatchedRun", "DLAReport",
    "SteeringReport",
]
