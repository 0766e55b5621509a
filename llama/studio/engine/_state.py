"""One model shared by many clients; each client's text, tokens and next-token logits.

STOPGAP (issue 13): `TextState` does for the studio what `llama.session.Session` will do
for every front end (text <-> ids <-> KV cache <-> next-token table, pick, a generation
stream that another thread can stop, back, reset). When Session lands, TextState becomes
a thin wrapper over it and `ModelHandle.lock` becomes the per-model lock Session uses.

How several clients share one model (and its one KV cache) without corrupting each
other: every use of the model happens under `ModelHandle.lock`, and one
`llama.generate.CachedContext` records which token ids the cache holds. A client whose
ids differ from what is cached simply gets the cache rewound to the common prefix and
the rest recomputed (that is what CachedContext does for an edited prompt anyway), so
switching between two clients costs a prefill of their differing suffix, and never a
wrong logit. Runs that leave something else in the cache (interventions, gradients, the
walkthrough) go through `dirty_run`, which forgets the record afterwards.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from llama.generate import (
    CachedContext,
    GenerationError,
    check_sampling_args,
    choose_token,
    make_generator,
    next_token_probs,
    top_k_top_p_filter,
)

from ._json import Vocab, finite_or_none, token_list
from ._registry import EngineError


class ModelHandle:
    """A model, its tokenizer, the lock every use of the model takes, and the record of
    what the model's KV cache holds."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str = "model", path: str | None = None) -> None:
        self.model = model
        self.tok = tokenizer
        self.name = name
        self.path = path
        self.lock = threading.RLock()
        self.ctx = CachedContext(model)
        self.memo: dict = {}  # model-only results (parameter statistics), computed once

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @property
    def max_len(self) -> int:
        return int(self.model.args.max_seq_len)

    def logits_for(self, ids: Sequence[int]) -> torch.Tensor:
        """Next-token logits (V,) after ids, running only what the cache lacks."""
        with self.lock:
            if getattr(self.model, "cache_length", 0) < len(self.ctx.ids):
                # Someone reset or reran the model behind our back (a notebook cell, a
                # test): the record overstates the cache; start afresh rather than fail.
                self.ctx.forget()
            return self.ctx.logits_for(ids).detach().float().cpu()

    @contextmanager
    def full_run(self, ids: Sequence[int]) -> Iterator[None]:
        """For code that runs the model on all of `ids` from position 0 (a capture)."""
        with self.lock, self.ctx.full_run(ids), torch.no_grad():
            yield

    @contextmanager
    def dirty_run(self) -> Iterator[None]:
        """For runs whose keys and values must not be reused (edited or differentiated)."""
        with self.lock:
            try:
                yield
            finally:
                self.ctx.forget()

    def tensor(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # (1, T)


class Sampling:
    """temperature / top_k / top_p, checked once (llama.generate's own checks)."""

    def __init__(self, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None) -> None:
        if top_p is not None and top_p >= 1:
            top_p = None
        try:
            check_sampling_args(temperature, top_k, top_p)
        except GenerationError as e:
            raise EngineError(str(e)) from None
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution a sample is drawn from: (V,) summing to 1."""
        if self.temperature == 0:
            return next_token_probs(logits, 0.0)  # one-hot on the arg-max
        return top_k_top_p_filter(next_token_probs(logits, self.temperature), self.top_k, self.top_p)

    def describe(self) -> dict:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p or 1.0,
                "greedy": self.temperature == 0}


class TextState:
    """One client's text: its ids, the logits after them, and its generation."""

    def __init__(self, handle: ModelHandle, client: str = "") -> None:
        self.h = handle
        self.client = client
        self.ids: list[int] = []
        self.logits: torch.Tensor | None = None  # (V,) float32 CPU, after exactly self.ids
        self.text = ""  # what the user typed last (before picks and generations)
        self.chat = False
        self.too_long: dict | None = None
        self.version = 0  # bumped by every change of ids
        self.last_used = time.monotonic()
        self._lock = threading.RLock()  # one change of this state at a time
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.memo: dict = {}  # per-ids results (captures), dropped when ids change

    # -- changing the text -------------------------------------------------------------
    def _commit(self, ids: list[int], logits: torch.Tensor | None) -> None:
        self.ids, self.logits = list(ids), logits
        self.version += 1
        self.memo.clear()

    def _move_to(self, ids: list[int]) -> None:
        limit = self.h.max_len
        if len(ids) > limit:
            self.too_long = {
                "n_tokens": len(ids), "max_seq_len": limit,
                "message": f"The text is {len(ids)} tokens, but the model's context holds "
                           f"{limit}. Shorten it, or keep only its last {limit} tokens "
                           "(\"keep the end\").",
            }
            return
        self.too_long = None
        if not ids:
            self._commit([], None)
            return
        logits = self.h.logits_for(ids)
        self._commit(ids, logits)

    def stop_generation(self, wait: bool = True) -> bool:
        """Ask a running generation to stop; True if one was running."""
        running = not self._idle.is_set()
        if running:
            self._stop.set()
            if wait:
                self._idle.wait(timeout=120)
        return running

    def encode(self, text: str, chat: bool) -> list[int]:
        if chat:
            if not self.h.tok.has_chat_template:
                raise EngineError("this tokenizer has no chat template: switch chat off")
            return list(self.h.tok.encode_chat([{"role": "user", "content": text}], add_generation_prompt=True))
        return list(self.h.tok.encode(text)) if text else []

    def set_text(self, text: str, chat: bool = False, truncate: bool = False) -> None:
        if not isinstance(text, str):
            raise EngineError(f"text must be a string, got {type(text).__name__}")
        self.stop_generation()
        with self._lock:
            ids = self.encode(text, chat)
            if truncate and len(ids) > self.h.max_len:
                ids = ids[-self.h.max_len:]
            self.text, self.chat = text, chat
            self._move_to(ids)

    def pick(self, token_id: int) -> None:
        V = self.h.model.args.vocab_size
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < V:
            raise EngineError(f"token id must be an integer in 0..{V - 1}, got {token_id!r}")
        self.stop_generation()
        with self._lock:
            if not self.ids:
                raise EngineError("there is no text yet: type some first")
            self._move_to(self.ids + [token_id])

    def back(self, n: int = 1) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EngineError(f"back: n must be an integer >= 1, got {n!r}")
        self.stop_generation()
        with self._lock:
            if not self.ids:
                raise EngineError("there are no tokens to remove")
            self._move_to(self.ids[: max(0, len(self.ids) - n)])

    def reset(self) -> None:
        self.stop_generation()
        with self._lock:
            self.text, self.too_long = "", None
            self._commit([], None)

    def _check_logits(self) -> torch.Tensor:
        if self.logits is None:
            raise EngineError("there is no text yet: type some first")
        if not torch.isfinite(self.logits).all():
            raise EngineError("the model's logits contain NaN or infinite values (a damaged "
                              "checkpoint, or an overflow in 16-bit): nothing can be sampled")
        return self.logits

    def step(self, sampling: Sampling, seed: int | None = None) -> dict:
        """Append one token chosen as generation would choose it."""
        self.stop_generation()
        with self._lock:
            logits = self._check_logits()
            if len(self.ids) >= self.h.max_len:
                raise EngineError(f"the context is full ({self.h.max_len} tokens): step back first")
            gen = make_generator(seed) if sampling.temperature > 0 else None
            token = choose_token(logits, sampling.temperature, sampling.top_k, sampling.top_p, gen)
            prob = float(torch.softmax(logits, -1)[token])
            self._move_to(self.ids + [token])
            return {"id": token, "prob": finite_or_none(prob)}

    def generate(self, n: int, sampling: Sampling, seed: int | None = None) -> Iterator[dict]:
        """Events {"type": "token", ...} as tokens come, then {"type": "done", ...}.

        A generator: the checks run at the first next() (a bad request raises
        EngineError there, before anything was generated). Each token is committed to the
        state as soon as it is generated (with the logits after it), so a stop, a failure
        or a client that goes away leaves a consistent state holding every token sent so
        far. The model lock is taken per step, so other clients are served between two
        tokens. `stop_generation()` from another thread ends it after the current step.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096:
            raise EngineError(f"n must be an integer between 1 and 4096, got {n!r}")
        self.stop_generation()
        with self._lock:
            self._check_logits()
            if not self._idle.is_set():
                raise EngineError("a generation is already running for this client: stop it first")
            self._idle.clear()
            self._stop.clear()
        try:
            tok = self.h.tok
            if sampling.temperature > 0 and seed is None:
                seed = int(torch.randint(0, 2**31 - 1, ()).item())
            gen = make_generator(seed) if sampling.temperature > 0 else None
            stop_ids = set(int(i) for i in getattr(tok, "stop_ids", ()))
            decoder = tok.stream_decoder(skip_special=True)
            reason, count, t0 = "max tokens", 0, time.perf_counter()
            for _ in range(n):
                if self._stop.is_set():
                    reason = "stopped"
                    break
                with self._lock:
                    if len(self.ids) >= self.h.max_len:
                        reason = "context full"
                        break
                    logits = self._check_logits()
                    token = choose_token(logits, sampling.temperature, sampling.top_k, sampling.top_p, gen)
                    prob = float(torch.softmax(logits, -1)[token])
                    self._move_to(self.ids + [token])
                count += 1
                event = {"type": "token", "id": token, "text": decoder.push(token),
                         "prob": finite_or_none(prob), "n": count, "n_tokens": len(self.ids)}
                yield event
                if token in stop_ids:
                    reason = f"stop token {tok.id_to_piece(token)!r}"
                    break
            else:
                reason = "max tokens"
            rest = decoder.flush()
            elapsed = time.perf_counter() - t0
            self._idle.set()  # before "done": its state must not say "generating"
            yield {"type": "done", "reason": reason, "count": count, "seed": seed,
                   "tail": rest, "seconds": round(elapsed, 3),
                   "tokens_per_s": round(count / elapsed, 2) if count and elapsed > 0 else None}
        finally:
            self._idle.set()

    # -- reading the state ---------------------------------------------------------------
    def snapshot(self) -> tuple[list[int], torch.Tensor | None, int]:
        with self._lock:
            return list(self.ids), self.logits, self.version

    def payload(self, sampling: Sampling | None = None, show: int = 10) -> dict:
        """The "state" payload: tokens, the next-token table, and what is wrong if
        anything (too long, non-finite logits). See docs/STUDIO.md."""
        sampling = sampling or Sampling()
        ids, logits, version = self.snapshot()
        tok = self.h.tok
        out = {
            "kind": "state", "version": version, "client": self.client,
            "text": self.text, "chat": self.chat,
            "decoded": tok.decode(ids, skip_special=True) if ids else "",
            "tokens": token_list(tok, ids), "n_tokens": len(ids), "max_seq_len": self.h.max_len,
            "too_long": self.too_long, "non_finite": None, "sampling": sampling.describe(),
            "candidates": [], "kept": None, "generating": not self._idle.is_set(),
        }
        if logits is None:
            return out
        out.update(topk_table(tok, logits, sampling, show))
        return out


def topk_table(tok, logits: torch.Tensor, sampling: Sampling, show: int) -> dict:
    """{"candidates": [...], "kept", "non_finite"} for logits (V,)."""
    bad = ~torch.isfinite(logits)
    if bad.any():
        n_nan = int(torch.isnan(logits).sum())
        return {"candidates": [], "kept": None, "non_finite": {
            "count": int(bad.sum()), "nan": n_nan, "inf": int(bad.sum()) - n_nan,
            "message": f"{int(bad.sum())} of {logits.numel()} logits are not finite ({n_nan} NaN): "
                       "the checkpoint may be damaged, or 16-bit arithmetic overflowed; "
                       "nothing is drawn. Try --dtype float32."}}
    probs = torch.softmax(logits.float(), -1)
    sample = sampling.probs(logits)
    p, order = torch.sort(probs, descending=True, stable=True)
    vocab = Vocab(tok)
    rows = []
    for r in range(min(show, probs.numel())):
        i = int(order[r])
        rows.append({"rank": r + 1, "id": i, "text": vocab.text(i), "prob": finite_or_none(float(p[r])),
                     "logit": finite_or_none(float(logits[i]), 4),
                     "sample_prob": finite_or_none(float(sample[i]))})
    return {"candidates": rows, "kept": int((sample > 0).sum()), "non_finite": None}
