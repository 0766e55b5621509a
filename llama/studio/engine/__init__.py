"""The studio's one adapter to the library: every other studio module calls only this.

    from llama.studio.engine import Engine
    engine = Engine(model, tokenizer, name="SmolLM2-135M-Instruct")
    engine.set_text("tab-1", "The capital of France is")     # -> "state" payload
    engine.view("tab-1", "lens", {"k": 10})                  # -> "lens" payload
    for event in engine.generate("tab-1", 20): ...           # streamed tokens

Everything it returns is a JSON-able dict whose schema docs/STUDIO.md gives per view;
everything it raises for a bad request is an `EngineError` whose message is for the user.

Underneath, all of it is the library:

    _clients.py   one llama.session.Session per client, one call at a time per client
    _kinds.py     the studio's view kinds and their options (library options where they are the library's)
    _views.py     llama.analysis.compute_view (and llama.explain, llama.hooks.hook_shapes)
    _interp.py    llama.interp: attribution, ablation, steering, patching, head scores
    _source.py    llama.source.hook_source, with context lines for the side panel
    _json.py      rounding, non-finite -> None, uint16 packing, token texts

Clients: one `Client` per client id (a browser tab, a notebook), at most `max_clients`
(the least recently used idle one is dropped), all sharing one model; every use of the
model holds its lock (llama.generate.model_lock).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Iterator

from llama.analysis import VIEW_KINDS, AnalysisError, ViewSource, compute_view
from llama.family import family_of
from llama.generate import GenerationError, model_lock
from llama.interp import InterpError
from llama.session import SessionError

from ._clients import Client, Sampling
from ._interp import BUILDERS as INTERP_BUILDERS
from ._json import token_list
from ._kinds import KINDS, EngineError, parse_options
from ._source import locate_all, source_file
from ._views import MODEL_BUILDERS, TEXT_BUILDERS, Job

SAMPLING_OPTIONS = ("show", "temperature", "top_k", "top_p")
VIEWS = KINDS  # the view kinds (name -> StudioKind), in the page's order
_LIBRARY_ERRORS = (AnalysisError, InterpError, SessionError, GenerationError)


def check_client_id(client) -> str:
    if not isinstance(client, str) or not 1 <= len(client) <= 64 or not all(
            c.isalnum() or c in "-_." for c in client):
        raise EngineError(f"client must be 1-64 letters, digits, '-', '_' or '.', got {client!r}")
    return client


def hook_patterns(names) -> list[str]:
    """Hook names as read (layers.0.resid_post ... layers.29.resid_post) shortened to the
    patterns a reader scans (layers.*.resid_post): a name that occurs in several layers
    becomes one pattern; a single layer stays as it is."""
    names = list(dict.fromkeys(names))
    generic = [re.sub(r"^layers\.\d+\.", "layers.*.", n) for n in names]
    counts = {g: generic.count(g) for g in generic}
    return list(dict.fromkeys(g if counts[g] > 1 else n for n, g in zip(names, generic)))


class Engine:
    """A loaded model and tokenizer, served to many clients."""

    def __init__(self, model, tokenizer, name: str = "model", path: str | None = None,
                 max_clients: int = 32, speed: str | None = None) -> None:
        self.model, self.tokenizer, self.name, self.path = model, tokenizer, name, path
        self.speed = speed  # how the model runs (the command's banner), for info()
        self.family = family_of(model)
        self.max_clients = max_clients
        self.lock = model_lock(model)  # the library's lock: every use of the model holds it
        self._clients: dict[str, Client] = {}
        self._clients_lock = threading.Lock()
        # The model alone as llama.analysis sees it (parameter statistics are kept on it).
        self._model_source = ViewSource(model.args, model, tokenizer, name=name)
        self._why_not = {k.name: self._unavailable(k) for k in KINDS.values()}

    # -- clients -----------------------------------------------------------------------
    def client(self, client: str) -> Client:
        client = check_client_id(client)
        with self._clients_lock:
            c = self._clients.get(client)
            if c is None:
                if len(self._clients) >= self.max_clients:
                    idle = [x for x in self._clients.values() if not x.generating]
                    oldest = min(idle or self._clients.values(), key=lambda x: x.last_used)
                    oldest.stop_generation(wait=False)
                    del self._clients[oldest.client]
                c = self._clients[client] = Client(self.model, self.tokenizer, self.name, client)
            c.last_used = time.monotonic()
            return c

    def clients(self) -> list[str]:
        with self._clients_lock:
            return list(self._clients)

    # -- the model -------------------------------------------------------------------------
    def _unavailable(self, kind) -> str | None:
        """Why a view kind shows nothing for this model (None: it does): the library's own
        message for the first library kind that does not apply to the family."""
        for lib in kind.library:
            if not VIEW_KINDS[lib].applies_to(self.model):
                try:
                    compute_view(lib, self._model_source)
                except AnalysisError as e:
                    return str(e)
                return f"the {lib} view does not apply to {self.family.title} models"
        return None

    def available(self, kind: str) -> bool:
        return self._why_not.get(kind) is None

    def info(self) -> dict:
        m, a = self.model, self.model.args
        w = m.tok_embeddings.weight
        views = []
        for k in KINDS.values():
            d = k.describe(self.family.residual_input)
            d["sources"] = [] if k.name == "tour" else locate_all(m, d["hooks"])
            d["available"], d["why_not"] = self._why_not[k.name] is None, self._why_not[k.name]
            views.append(d)
        return {
            "kind": "info", "name": self.name, "path": self.path,
            "family": self.family.title, "family_name": self.family.name,
            "model_class": type(m).__name__, "source": self.family.source, "args": a.to_dict(),
            "n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads,
            "dim": a.dim, "head_dim": a.head_dim, "vocab_size": a.vocab_size,
            "max_seq_len": a.max_seq_len, "n_params": m.num_params(),
            "dtype": str(w.dtype).replace("torch.", ""), "device": str(w.device), "speed": self.speed,
            "has_chat_template": bool(getattr(self.tokenizer, "has_chat_template", False)),
            "hook_names": len(m.hook_names()), "views": views,
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
        c = self.client(client)
        c.set_text(text, chat=chat, truncate=truncate)
        return c.payload(s, show)

    def pick(self, client: str, token_id: int, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        c = self.client(client)
        c.pick(token_id)
        return c.payload(s, show)

    def back(self, client: str, n: int = 1, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        c = self.client(client)
        c.back(n)
        return c.payload(s, show)

    def step(self, client: str, seed: int | None = None, sampling: dict | None = None) -> dict:
        s, show = self.sampling(sampling)
        _check_seed(seed)
        c = self.client(client)
        chosen = c.step(s, seed)
        out = c.payload(s, show)
        out["chosen"] = chosen
        return out

    def reset(self, client: str) -> dict:
        c = self.client(client)
        c.reset()
        return c.payload()

    def generate(self, client: str, n: int = 20, seed: int | None = None,
                 sampling: dict | None = None) -> Iterator[dict]:
        """Token events, then a "done" event carrying the final state payload. Checks run
        at the first next() (EngineError there means nothing was generated)."""
        s, show = self.sampling(sampling)
        _check_seed(seed)
        c = self.client(client)
        for event in c.generate(n, s, seed):
            if event["type"] == "done":
                event["state"] = c.payload(s, show)
            yield event

    def stop(self, client: str) -> bool:
        return self.client(client).stop_generation(wait=False)

    # -- views -------------------------------------------------------------------------------
    def view(self, client: str | None, kind: str, options: dict | None = None) -> dict:
        """The payload of one view (docs/STUDIO.md); text views use the client's tokens."""
        if kind not in KINDS:
            raise EngineError(f"unknown view {kind!r}; views: {', '.join(KINDS)}")
        spec = KINDS[kind]
        opts = parse_options(kind, options)
        if self._why_not[kind] is not None:
            raise EngineError(self._why_not[kind])
        version, ids = None, []
        try:
            if spec.needs == "model":
                with self.lock:
                    payload = MODEL_BUILDERS[kind](Job(self.model, self.tokenizer, self.name,
                                                       self._model_source, opts))
            else:
                c = self.client(client)
                with c.lock:
                    if kind == "topk":
                        s = Sampling(opts["temperature"], opts["top_k"], opts["top_p"])
                        payload = dict(c.payload(s, opts["show"]), kind="topk")
                    else:
                        c.check_idle()
                        if not c.session.ids:
                            raise EngineError("there is no text yet: type some first")
                        build = TEXT_BUILDERS.get(kind) or INTERP_BUILDERS[kind]
                        with self.lock:
                            payload = build(Job(self.model, self.tokenizer, self.name,
                                                c.view_source(), opts, c))
                        c.trim_cache()
                    version, ids = c.version, c.session.ids
        except _LIBRARY_ERRORS as e:
            raise EngineError(str(e)) from None
        payload.setdefault("warnings", [])
        reads = hook_patterns(payload.pop("reads", None) or spec.hook_patterns(self.family.residual_input))
        payload.update({
            "title": spec.title, "help": spec.help, "model": self.name, "family": self.family.title,
            "options": opts, "hooks": reads,
            "sources": [] if kind == "tour" else locate_all(self.model, reads), "version": version,
        })
        if spec.needs == "text":
            payload.setdefault("tokens", token_list(self.tokenizer, ids))
        return payload

    def source(self, path: str) -> dict:
        try:
            return source_file(self.model, path)
        except KeyError as e:
            raise EngineError(str(e.args[0])) from None


def _check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise EngineError(f"seed must be a non-negative integer (or none), got {seed!r}")


__all__ = ["Engine", "EngineError", "VIEWS", "KINDS", "SAMPLING_OPTIONS", "check_client_id", "hook_patterns"]
