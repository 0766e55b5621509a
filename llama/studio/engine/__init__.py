"""The studio's one adapter to the engine: every other studio module calls only this.

    from llama.studio.engine import Engine
    engine = Engine(model, tokenizer, name="SmolLM2-135M-Instruct")
    engine.set_text("tab-1", "The capital of France is")     # -> "state" payload
    engine.view("tab-1", "lens", {"k": 10})                  # -> "lens" payload
    for event in engine.generate("tab-1", 20): ...           # streamed tokens

Everything it returns is a JSON-able dict whose schema docs/STUDIO.md gives per view;
everything it raises for a bad request is an `EngineError` whose message is for the user.

What is underneath changes, the surface does not. Today (before issues 13 and 14 land)
the engine is built from what main has: llama.generate (CachedContext, sampling),
llama.hooks (captures, interventions), llama.plots' compute functions, llama.explain's
walkthrough and SourceMap. Each stopgap sits in one private module, marked STOPGAP:

    _state.py     client text / ids / KV cache / generation   -> llama.session.Session
    _registry.py  view kinds, options, hooks read              -> llama.analysis' registry
    _views.py     attention, lens, residual, saliency, model   -> llama.analysis
    _interp.py    DLA, ablation, steering, patching            -> llama.interp
    _source.py    hook name -> model.py line                   -> the public source locator

Clients: one `TextState` per client id (a browser tab, a notebook), at most
`max_clients` (the least recently used is dropped), all sharing one model through one
lock and one record of what the KV cache holds (see _state.py).
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from ._json import token_list
from ._registry import VIEWS, EngineError, parse_options
from ._source import locate_all, source_file
from ._state import ModelHandle, Sampling, TextState
from . import _interp, _views

_TEXT_VIEWS = {"attention": _views.attention, "lens": _views.lens, "residual": _views.residual,
               "saliency": _views.saliency, "dla": _interp.dla, "intervene": _interp.intervene}
_MODEL_VIEWS = {"summary": _views.summary, "architecture": _views.architecture,
                "params": _views.params, "rope": _views.rope}

SAMPLING_OPTIONS = ("show", "temperature", "top_k", "top_p")


def check_client_id(client) -> str:
    if not isinstance(client, str) or not 1 <= len(client) <= 64 or not all(
            c.isalnum() or c in "-_." for c in client):
        raise EngineError(f"client must be 1-64 letters, digits, '-', '_' or '.', got {client!r}")
    return client


class Engine:
    """A loaded model and tokenizer, served to many clients."""

    def __init__(self, model, tokenizer, name: str = "model", path: str | None = None,
                 max_clients: int = 32) -> None:
        self.handle = ModelHandle(model, tokenizer, name, path)
        self.max_clients = max_clients
        self._clients: dict[str, TextState] = {}
        self._clients_lock = threading.Lock()

    @property
    def model(self):
        return self.handle.model

    @property
    def tokenizer(self):
        return self.handle.tok

    # -- clients -----------------------------------------------------------------------
    def client(self, client: str) -> TextState:
        client = check_client_id(client)
        with self._clients_lock:
            st = self._clients.get(client)
            if st is None:
                if len(self._clients) >= self.max_clients:
                    idle = [s for s in self._clients.values() if s._idle.is_set()]
                    oldest = min(idle or self._clients.values(), key=lambda s: s.last_used)
                    oldest.stop_generation(wait=False)
                    del self._clients[oldest.client]
                st = self._clients[client] = TextState(self.handle, client)
            st.last_used = time.monotonic()
            return st

    def clients(self) -> list[str]:
        with self._clients_lock:
            return list(self._clients)

    # -- the model -------------------------------------------------------------------------
    def info(self) -> dict:
        m, a = self.handle.model, self.handle.model.args
        w = m.tok_embeddings.weight
        return {
            "kind": "info", "name": self.handle.name, "path": self.handle.path,
            "family": type(m).__name__, "args": a.to_dict(),
            "n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads,
            "dim": a.dim, "head_dim": a.head_dim, "vocab_size": a.vocab_size,
            "max_seq_len": a.max_seq_len, "n_params": m.num_params(),
            "dtype": str(w.dtype).replace("torch.", ""), "device": str(w.device),
            "has_chat_template": bool(getattr(self.handle.tok, "has_chat_template", False)),
            "hook_names": len(m.hook_names()),
            "views": [dict(v.describe(), sources=[] if v.name == "tour" else locate_all(m, v.hooks))
                      for v in VIEWS.values()],
            "default_prompt": "The capital of France is",
        }

    # -- the text ----------------------------------------------------------------------------
    @staticmethod
    def sampling(raw: dict | None) -> tuple[Sampling, int]:
        """(Sampling, rows to show) from a request's temperature/top_k/top_p/show."""
        raw = {k: v for k, v in (raw or {}).items() if k in SAMPLING_OPTIONS}
        o = parse_options("topk", raw, label="sampling")
        return Sampling(o["temperature"], o["top_k"], o["top_p"]), o["show"]

    def state(self, client: str, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        return self.client(client).payload(s, show)

    def set_text(self, client: str, text: str, chat: bool = False, truncate: bool = False,
                 sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        if not isinstance(chat, bool) or not isinstance(truncate, bool):
            raise EngineError("chat and truncate must be true or false")
        st = self.client(client)
        st.set_text(text, chat=chat, truncate=truncate)
        return st.payload(s, show)

    def pick(self, client: str, token_id: int, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        st = self.client(client)
        st.pick(token_id)
        return st.payload(s, show)

    def back(self, client: str, n: int = 1, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        st = self.client(client)
        st.back(n)
        return st.payload(s, show)

    def step(self, client: str, seed: int | None = None, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        _check_seed(seed)
        st = self.client(client)
        chosen = st.step(s, seed)
        out = st.payload(s, show)
        out["chosen"] = chosen
        return out

    def reset(self, client: str) -> dict:
        st = self.client(client)
        st.reset()
        return st.payload()

    def generate(self, client: str, n: int = 20, seed: int | None = None,
                 sampling: dict | None = None) -> Iterator[dict]:
        """Token events, then a "done" event carrying the final state payload. Checks run
        at the first next() (EngineError there means nothing was generated)."""
        s, show = self.sampling(sampling)
        _check_seed(seed)
        st = self.client(client)
        for event in st.generate(n, s, seed):
            if event["type"] == "done":
                event["state"] = st.payload(s, show)
            yield event

    def stop(self, client: str) -> bool:
        return self.client(client).stop_generation(wait=False)

    # -- views -------------------------------------------------------------------------------
    def view(self, client: str | None, kind: str, options: dict | None = None) -> dict:
        """The payload of one view (docs/STUDIO.md); text views use the client's tokens."""
        if kind not in VIEWS:
            raise EngineError(f"unknown view {kind!r}; views: {', '.join(VIEWS)}")
        spec = VIEWS[kind]
        opts = parse_options(kind, options)
        h = self.handle
        ids: list[int] = []
        version = None
        if kind in _MODEL_VIEWS:
            payload = _MODEL_VIEWS[kind](h, opts)
        else:
            st = self.client(client)
            ids, logits, version = st.snapshot()
            if kind == "topk":
                payload = st.payload(Sampling(opts["temperature"], opts["top_k"], opts["top_p"]), opts["show"])
                payload["kind"] = "topk"
            elif kind == "tour":
                payload = _views.tour(h, ids, opts, st.memo, text=st.text if not st.chat and st.text
                                      and list(h.tok.encode(st.text)) == ids else "")
            else:
                payload = _TEXT_VIEWS[kind](h, ids, opts, st.memo)
        payload.setdefault("warnings", [])
        reads = payload.pop("reads", None) or spec.hooks  # what this payload really read
        payload.update({
            "title": spec.title, "help": spec.help, "model": h.name, "options": opts,
            "hooks": list(reads), "sources": [] if kind == "tour" else locate_all(h.model, reads),
            "version": version,
        })
        if spec.needs == "text":
            payload.setdefault("tokens", token_list(h.tok, ids))
        return payload

    def view_text(self, text: str, kind: str, options: dict | None = None, client: str = "notebook") -> dict:
        """For notebooks and scripts: set a text and return one view of it."""
        self.set_text(client, text)
        return self.view(client, kind, options)

    def source(self, path: str) -> dict:
        try:
            return source_file(self.handle.model, path)
        except KeyError as e:
            raise EngineError(str(e.args[0])) from None


def _check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise EngineError(f"seed must be a non-negative integer (or none), got {seed!r}")


__all__ = ["Engine", "EngineError", "VIEWS", "SAMPLING_OPTIONS", "check_client_id"]
