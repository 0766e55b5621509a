"""The studio's local web server: the standard library's ThreadingHTTPServer, JSON in and
out, generation streamed as Server-Sent Events.

Why the standard library: the studio must install with the package and run offline, and
it serves one person (or a few tabs) on their own machine. http.server does that with no
dependency at all; a thread per request is plenty for a model that runs one forward pass
at a time anyway (every use of it holds llama.generate.model_lock). No framework, nothing
that can call the network, nothing to build.

Routes (docs/STUDIO.md has the payloads):

    GET  /                        the page (static/index.html)
    GET  /static/NAME             views.js, app.js, studio.css
    GET  /api/info                the model and the view registry
    GET  /api/source?path=P       a model source file, for the side panel
    POST /api/state               the client's state, re-tabled for new sampling settings
    POST /api/text                set the text            {"text", "chat", "truncate"}
    POST /api/pick                append a token id       {"id"}
    POST /api/back                remove tokens           {"n"}
    POST /api/step                append one sampled token {"seed"}
    POST /api/reset               forget the text
    POST /api/generate            stream tokens (text/event-stream), {"n", "seed"}
    POST /api/stop                stop the client's generation
    POST /api/view/KIND           one view's payload      {"options": {...}}
    POST /api/export              a view as a standalone HTML file {"payload"}

Every POST body is a JSON object with "client" (the browser tab's id) and, where a table
is returned, the sampling settings "temperature", "top_k", "top_p", "show". A bad
request gets HTTP 400 and {"error": message}; an unexpected failure 500 and a one-line
message (the traceback goes to the server's stderr, never to the page).

Only the page's own origin may call the API: a request whose Host header is not the
address the server listens on, or whose Origin is another site, is refused (403), so a
web page in another tab cannot drive the model (nor a DNS-rebinding trick).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .engine import KINDS, Engine, EngineError
from .export import STATIC_FILES, standalone_html, static_text

MAX_BODY = 1 << 20  # 1 MiB for ordinary requests
MAX_EXPORT_BODY = 64 << 20  # a payload to export can be large (attention of a long text)
LOOPBACK = ("127.0.0.1", "localhost", "::1")

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
# The page may load only what this server sends: a second line of defence behind the
# tests that check no other host is ever asked for anything.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'none'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _no_constant(name: str):
    """json.loads accepts NaN and Infinity, which JSON does not have (and the answers,
    written with allow_nan=False, could not carry): refuse them as bad input."""
    raise BadRequest(f"the request body is not valid JSON: {name} is not a JSON number")


class StudioHandler(BaseHTTPRequestHandler):
    server_version = "llama-studio/1"
    protocol_version = "HTTP/1.0"  # one request per connection: simple, and streams end by closing
    timeout = 60  # seconds a silent client may hold a connection (a stalled read or write)
    # TCP_NODELAY: each streamed token is a small write; with Nagle's algorithm on, it waits
    # for the client's delayed ACK of the previous one (bench_studio, two quiet runs on the
    # AMD box: 13.8 tokens/s streamed before, 19.1 after).
    disable_nagle_algorithm = True

    # -- plumbing ------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        return self.server.engine  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if getattr(self.server, "verbose", False):
            sys.stderr.write("llama-studio: " + (format % args) + "\n")

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        body = json.dumps(obj, allow_nan=False, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        try:
            self._json(status, {"error": message})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _check_origin(self) -> None:
        """Host must name this server (on loopback: no DNS rebinding); a browser's Origin
        must be this server's own page. Listening on every interface (0.0.0.0, ::), any
        Host is accepted, but still only same-origin pages."""
        allowed = self.server.allowed_hosts  # type: ignore[attr-defined]
        host = (self.headers.get("Host") or "").lower()
        if allowed is not None and host not in allowed:
            raise BadRequest(f"this server answers only requests addressed to it "
                             f"({sorted(allowed)[0]}), not {host!r}", 403)
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            o = (urlsplit(origin).netloc or "").lower()
            if o != host and (allowed is None or o not in allowed):
                raise BadRequest(f"requests from {origin} are not allowed", 403)

    def _body(self, limit: int = MAX_BODY) -> dict:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if n > limit:
            raise BadRequest(f"the request body is {n} bytes; at most {limit} are accepted", 413)
        raw = self.rfile.read(n) if n else b"{}"
        try:
            data = json.loads(raw.decode("utf-8") or "{}", parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object, e.g. {\"client\": \"tab-1\"}")
        return data

    @staticmethod
    def _client(data: dict) -> str:
        if "client" not in data:
            raise BadRequest("missing \"client\": every request names its client (the page sends a "
                             "random id per browser tab)")
        return data["client"]

    @staticmethod
    def _sampling(data: dict) -> dict:
        return {k: data[k] for k in ("temperature", "top_k", "top_p", "show") if k in data}

    def _dispatch(self, fn) -> None:
        try:
            self._check_origin()
            fn()
        except BadRequest as e:
            self._error(e.status, str(e))
        except EngineError as e:
            self._error(400, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to answer
        except Exception as e:  # noqa: BLE001 - one line for the page, the traceback for the log
            traceback.print_exc(file=sys.stderr)
            self._error(500, f"internal error ({type(e).__name__}: {e}); the server log has the details")

    # -- GET --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def _get(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/api/info":
            return self._json(200, self.engine.info())
        if path == "/api/source":
            q = parse_qs(url.query)
            if "path" not in q:
                raise BadRequest("source needs ?path=llama/model.py")
            return self._json(200, self.engine.source(q["path"][0]))
        if path.startswith("/api/"):
            raise BadRequest(f"{path} is not a GET endpoint (views and text changes are POST)", 405
                             if path[5:].split("/")[0] in _POST_ROUTES else 404)
        raise BadRequest(f"no such page: {path}", 404)

    def _static(self, name: str) -> None:
        if name not in STATIC_FILES:
            raise BadRequest(f"no such file: /static/{name}", 404)
        body = static_text(name).encode("utf-8")
        ext = name[name.rindex("."):]
        extra = {"Content-Security-Policy": CSP} if ext == ".html" else {}
        self._send(200, body, CONTENT_TYPES[ext], extra)

    # -- POST -------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        m = re.fullmatch(r"/api/([a-z_]+)(?:/([a-z_]+))?", path)
        if not m:
            raise BadRequest(f"no such endpoint: {path}", 404)
        route, arg = m.group(1), m.group(2)
        if route == "view":
            if not arg:
                raise BadRequest("POST /api/view/KIND, e.g. /api/view/lens")
            data = self._body()
            options = data.get("options", {})
            if not isinstance(options, dict):
                raise BadRequest("\"options\" must be a JSON object")
            spec = KINDS.get(arg)
            client = self._client(data) if spec is None or spec.needs == "text" else data.get("client")
            return self._json(200, self.engine.view(client, arg, options))
        if route not in _POST_ROUTES or arg:
            raise BadRequest(f"no such endpoint: {path}", 404)
        if route == "export":
            data = self._body(MAX_EXPORT_BODY)
            payload = data.get("payload")
            if not isinstance(payload, dict) or "kind" not in payload:
                raise BadRequest("export needs {\"payload\": a view's payload (with its \"kind\")}")
            body = standalone_html(payload).encode("utf-8")
            name = re.sub(r"[^a-z0-9_-]", "", str(payload.get("kind"))) or "view"
            return self._send(200, body, "text/html; charset=utf-8",
                              {"Content-Disposition": f'attachment; filename="{name}.html"'})
        data = self._body()
        client = self._client(data)
        e, sampling = self.engine, self._sampling(data)
        if route == "state":
            return self._json(200, e.state(client, sampling))
        if route == "text":
            if "text" not in data:
                raise BadRequest("text needs {\"text\": \"...\"}")
            return self._json(200, e.set_text(client, data["text"], data.get("chat", False),
                                              data.get("truncate", False), sampling))
        if route == "pick":
            if "id" not in data:
                raise BadRequest("pick needs {\"id\": token id}")
            return self._json(200, e.pick(client, data["id"], sampling))
        if route == "back":
            return self._json(200, e.back(client, data.get("n", 1), sampling))
        if route == "step":
            return self._json(200, e.step(client, data.get("seed"), sampling))
        if route == "reset":
            return self._json(200, e.reset(client))
        if route == "stop":
            return self._json(200, {"stopped": e.stop(client)})
        if route == "generate":
            return self._stream(e.generate(client, data.get("n", 20), data.get("seed"), sampling))
        raise AssertionError(route)  # pragma: no cover

    def _stream(self, events) -> None:
        """Server-Sent Events: "data: {json}\\n\\n" per event, the connection closed at the
        end. The first event is computed before the headers go out, so a bad request
        still gets a plain 400. A client that disconnects ends the generation (the
        generator is closed; the state keeps every token already sent)."""
        try:
            first = next(events)
        except StopIteration:  # pragma: no cover - generate always yields "done"
            first = None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        try:
            event = first
            while event is not None:
                line = "data: " + json.dumps(event, allow_nan=False, ensure_ascii=False) + "\n\n"
                self.wfile.write(line.encode("utf-8"))
                self.wfile.flush()
                event = next(events, None)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.server.disconnects += 1  # type: ignore[attr-defined]
        except Exception as err:  # noqa: BLE001 - the headers are out: say it in the stream
            if not isinstance(err, EngineError):
                traceback.print_exc(file=sys.stderr)
            message = str(err) if isinstance(err, EngineError) else f"internal error ({type(err).__name__}: {err})"
            try:
                self.wfile.write(("data: " + json.dumps({"type": "error", "message": message}) + "\n\n").encode())
            except OSError:
                pass
        finally:
            events.close()


_POST_ROUTES = ("state", "text", "pick", "back", "step", "reset", "generate", "stop", "export", "view")


class StudioServer(ThreadingHTTPServer):
    """The HTTP server with its engine. `start()` serves in a background thread (tests,
    notebooks); `serve_forever()` in the calling one (the command)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the page fires a few requests at once; never reset one

    def __init__(self, engine: Engine | None, host: str = "127.0.0.1", port: int = 8765,
                 verbose: bool = False) -> None:
        # engine may be set after construction (the command listens before it loads).
        self.engine = engine
        self.verbose = verbose
        self.disconnects = 0
        if ":" in host and not host.startswith("["):
            import socket

            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), StudioHandler)
        self.host = host
        self.port = self.server_address[1]
        bare = host.strip("[]").lower()
        if bare in ("0.0.0.0", "::"):
            self.allowed_hosts = None  # every interface: the user asked for remote access
        else:
            names = {bare} | (set(LOOPBACK) if is_loopback(bare) else set())
            self.allowed_hosts = {f"[{n}]:{self.port}" if ":" in n else f"{n}:{self.port}" for n in names}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.host.strip("[]")
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def start(self) -> "StudioServer":
        self._thread = threading.Thread(target=self.serve_forever, name="llama-studio", daemon=True)
        self._thread.start()
        return self

    def stop_generations(self) -> None:
        """Ask every client's generation to stop (before shutting down)."""
        if self.engine is not None:
            for client in self.engine.clients():
                self.engine.stop(client)

    def stop(self) -> None:
        self.stop_generations()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    return h in LOOPBACK or h.startswith("127.")


__all__ = ["StudioServer", "StudioHandler", "is_loopback", "CSP"]
