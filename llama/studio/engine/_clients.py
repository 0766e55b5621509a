"""One client of the studio (a browser tab, a notebook): a llama.session.Session and a lock.

Several clients share one model. Each has its own Session (its text, token ids, logits
and KV-cache record); every forward pass of any of them holds the model's lock
(llama.generate.model_lock), and a Session whose cache another one overwrote prefills its
own tokens again (the library's change counter), so clients never see each other's keys
and values. What the studio adds here:

- one call at a time per client (`Client.lock`): a Session is not meant for concurrent
  calls, and two requests of one tab (a keystroke and a slider) may arrive together;
- the sampling settings of each request, applied to the Session before it tables;
- a generation streamed from one request while others (stop, the table) are served: the
  client lock is held per generated token, not for the whole generation, and
  `Generation.stop()` (safe from any thread) ends it after the current token;
- a version number that changes with the token ids, and one llama.analysis ViewSource
  per version, so a second view of the same text reuses the first one's capture.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import torch

from llama.generate import GenerationError, check_sampling_args
from llama.session import Session, SessionError, TextTooLong

from ._json import Vocab, finite_or_none, token_list
from ._kinds import EngineError

# Captured intermediates a client keeps for its next view, at most (a long text's
# residual stream at every layer is large; beyond this it is captured again per view).
CACHE_BUDGET = 256 << 20
GENERATION_TIMEOUT = 120  # seconds to wait for a running generation to stop


class Sampling:
    """temperature / top_k / top_p of one request, checked by llama.generate."""

    def __init__(self, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None) -> None:
        if top_p is not None and top_p >= 1:
            top_p = None
        try:
            check_sampling_args(temperature, top_k, top_p)
        except GenerationError as e:
            raise EngineError(str(e)) from None
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p

    def describe(self) -> dict:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p or 1.0,
                "greedy": self.temperature == 0}


def non_finite_report(logits: torch.Tensor) -> dict | None:
    bad = ~torch.isfinite(logits)
    if not bad.any():
        return None
    n_nan, n_bad = int(torch.isnan(logits).sum()), int(bad.sum())
    return {"count": n_bad, "nan": n_nan, "inf": n_bad - n_nan,
            "message": f"{n_bad} of {logits.numel()} logits are not finite ({n_nan} NaN): "
                       "the checkpoint may be damaged, or 16-bit arithmetic overflowed; "
                       "nothing is drawn. Try --dtype float32."}


def candidate_rows(tok, rows) -> list[dict]:
    """Next-token rows (llama.session.Row or llama.generate.Candidate) as payload dicts."""
    vocab = Vocab(tok)
    return [{"rank": r.rank, "id": r.id, "text": vocab.text(r.id), "prob": finite_or_none(r.prob),
             "logit": finite_or_none(r.logit, 4),
             **({} if r.sample_prob is None else {"sample_prob": finite_or_none(r.sample_prob)})}
            for r in rows]


class Client:
    """One client's Session, serialised, with its generation and its views' capture."""

    def __init__(self, model, tokenizer, name: str, client: str) -> None:
        self.session = Session(model, tokenizer, name=name)
        self.client = client
        self.lock = threading.RLock()  # one call on this session at a time
        self.generation = None  # the llama.session.Generation being streamed, if any
        self._idle = threading.Event()
        self._idle.set()
        self.text = ""  # what the user typed last (before picks and generations)
        self.too_long: dict | None = None
        self.version = 0  # bumped whenever the token ids change
        self._ids: list[int] = []
        self._source = None  # llama.analysis ViewSource of this version
        self.last_used = time.monotonic()

    @property
    def tok(self):
        return self.session.tokenizer

    @property
    def generating(self) -> bool:
        return not self._idle.is_set()

    # -- bookkeeping ----------------------------------------------------------------------
    def _changed(self) -> None:
        ids = self.session.ids
        if ids != self._ids:
            self._ids = ids
            self.version += 1
            self._source = None

    def _apply(self, sampling: Sampling, seed: int | None = None) -> None:
        st = self.session.settings
        st.temperature, st.top_k, st.top_p, st.seed = (sampling.temperature, sampling.top_k,
                                                       sampling.top_p, seed)

    def view_source(self):
        """The text as llama.analysis sees it; its captures are kept for the next view of
        the same tokens (within CACHE_BUDGET)."""
        if self._source is None:
            self._source = self.session.view_source()
        return self._source

    def trim_cache(self) -> None:
        src = self._source
        if src is not None and src.cache:
            size = sum(t.numel() * t.element_size() for t in src.cache.values())
            if size > CACHE_BUDGET:
                self._source = None

    def stop_generation(self, wait: bool = True) -> bool:
        """Ask a running generation to stop; True if one was running."""
        gen = self.generation
        if gen is None and self._idle.is_set():
            return False
        if gen is not None:
            gen.stop()
        if wait:
            self._idle.wait(timeout=GENERATION_TIMEOUT)
        return True

    def check_idle(self) -> None:
        if self.generating:
            raise EngineError("a generation is running for this client: stop it (or let it "
                              "finish) first")

    def _logits(self) -> torch.Tensor:
        logits = self.session.logits
        if logits is None:
            raise EngineError("there is no text yet: type some first")
        if not torch.isfinite(logits).all():
            raise EngineError("the model's logits contain NaN or infinite values (a damaged "
                              "checkpoint, or an overflow in 16-bit): nothing can be sampled")
        return logits

    # -- changing the text ----------------------------------------------------------------
    def set_text(self, text: str, chat: bool = False, truncate: bool = False) -> None:
        if not isinstance(text, str):
            raise EngineError(f"text must be a string, got {type(text).__name__}")
        self.stop_generation()
        with self.lock:
            s = self.session
            try:
                s.set_chat(chat)
                self.text, self.too_long = text, None
                if not text and not chat:
                    s.reset()
                else:
                    try:
                        s.set_text(text)
                    except TextTooLong as e:
                        if truncate:
                            s.truncate()
                        else:
                            self.too_long = {"n_tokens": e.n_tokens, "max_seq_len": e.limit,
                                             "message": _sentence(str(e)) + " (\"keep the end\" does that)."}
            except SessionError as e:
                raise EngineError(str(e)) from None
            finally:
                self._changed()

    def set_ids(self, ids: list[int]) -> None:
        with self.lock:
            self.check_idle()
            try:
                self.session.set_ids(ids)
            except TextTooLong as e:
                raise EngineError(f"the context is full ({e.limit} tokens): step back first") from None
            except SessionError as e:
                raise EngineError(str(e)) from None
            finally:
                self._changed()

    def pick(self, token_id: int) -> None:
        V = self.session.model.args.vocab_size
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < V:
            raise EngineError(f"token id must be an integer in 0..{V - 1}, got {token_id!r}")
        self.stop_generation()
        with self.lock:
            if not self.session.ids:
                raise EngineError("there is no text yet: type some first")
            self.set_ids(self.session.ids + [token_id])

    def back(self, n: int = 1) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EngineError(f"back: n must be an integer >= 1, got {n!r}")
        self.stop_generation()
        with self.lock:
            try:
                self.session.back(n)
            except SessionError as e:
                raise EngineError(str(e)) from None
            finally:
                self._changed()

    def reset(self) -> None:
        self.stop_generation()
        with self.lock:
            self.session.reset()
            self.text, self.too_long = "", None
            self._changed()

    # -- generating -------------------------------------------------------------------------
    def _start(self, n: int, sampling: Sampling, seed: int | None):
        """A new llama.session Generation (not started), under the client lock."""
        self._logits()
        self._apply(sampling, seed)
        try:
            return self.session.generate(n)
        except SessionError as e:
            raise EngineError(str(e)) from None

    def step(self, sampling: Sampling, seed: int | None = None) -> dict:
        """Append one token chosen as generation would choose it."""
        self.stop_generation()
        with self.lock:
            gen = self._start(1, sampling, seed)
            try:
                made = [t for t in gen if t.id >= 0]
            finally:
                self._changed()
            return {"id": made[0].id, "prob": finite_or_none(made[0].prob)}

    def generate(self, n: int, sampling: Sampling, seed: int | None = None) -> Iterator[dict]:
        """Events {"type": "token", ...} as tokens come, then {"type": "done", ...}.

        A generator: the checks run at the first next() (a bad request raises EngineError
        there, before anything was generated). The client lock is taken per token, so the
        client's other requests (its table, stop) are answered in between. Whenever it
        ends (all tokens, a stop token, stop(), an error, or a client that went away and
        closed this generator), the Session adds every token made so far to the text.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096:
            raise EngineError(f"n must be an integer between 1 and 4096, got {n!r}")
        self.stop_generation()
        with self.lock:
            if self.generating:
                raise EngineError("a generation is already running for this client: stop it first")
            gen = self._start(n, sampling, seed)
            self.generation = gen
            self._idle.clear()
        start, count, tail = len(self.session.ids), 0, ""
        try:
            while True:
                with self.lock:
                    step = next(gen, None)
                if step is None:
                    break
                if step.id < 0:  # an incomplete character flushed at the very end
                    tail += step.text
                    continue
                count += 1
                yield {"type": "token", "id": step.id, "text": step.text,
                       "prob": finite_or_none(step.prob), "n": count, "n_tokens": start + count}
        finally:
            with self.lock:
                gen.close()  # a client that left: the Session keeps what was made
                self.generation = None
                self._changed()
                self._idle.set()  # before "done": its state must not say "generating"
        r = gen.result
        reason = r.reason
        if reason == "stop token" and r.stop_token is not None:
            reason = f"stop token {self.tok.id_to_piece(r.stop_token)!r}"
        yield {"type": "done", "reason": reason, "count": count, "seed": r.seed, "tail": tail,
               "seconds": round(r.elapsed_s, 3),
               "tokens_per_s": round(count / r.elapsed_s, 2) if count and r.elapsed_s > 0 else None}

    # -- reading the state --------------------------------------------------------------------
    def payload(self, sampling: Sampling | None = None, show: int = 10) -> dict:
        """The "state" payload: tokens, the next-token table, and what is wrong if
        anything (too long, non-finite logits). See docs/STUDIO.md."""
        sampling = sampling or Sampling()
        with self.lock:
            s = self.session
            ids = s.ids
            out = {
                "kind": "state", "version": self.version, "client": self.client,
                "text": self.text, "chat": s.settings.chat,
                "decoded": self.tok.decode(ids, skip_special=True) if ids else "",
                "tokens": token_list(self.tok, ids), "n_tokens": len(ids), "max_seq_len": s.max_len,
                "too_long": self.too_long, "non_finite": None, "sampling": sampling.describe(),
                "candidates": [], "kept": None, "generating": self.generating,
            }
            if s.logits is None:
                return out
            out["non_finite"] = non_finite_report(s.logits)
            if out["non_finite"] is None:
                self._apply(sampling, s.settings.seed)
                out["candidates"] = candidate_rows(self.tok, s.next_token_table(show).rows)
                out["kept"] = _kept(s.logits, sampling)
            return out


def _kept(logits: torch.Tensor, sampling: Sampling) -> int:
    """How many tokens sampling can draw under the settings (1 when greedy)."""
    from llama.generate import sampling_probs

    return int((sampling_probs(logits, sampling.temperature, sampling.top_k, sampling.top_p) > 0).sum())


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


__all__ = ["Client", "Sampling", "candidate_rows", "non_finite_report", "CACHE_BUDGET"]
