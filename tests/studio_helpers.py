"""Shared by the studio's tests: a byte tokenizer for tiny random models, an HTTP client
for the server, and finding a headless browser."""

from __future__ import annotations

import codecs
import http.client
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path


class ByteTokenizer:
    """Enough of a tokenizer for the engine: id = byte + 1, id 0 = the stop token."""

    stop_ids = {0}
    has_chat_template = False

    def encode(self, text: str, bos: bool = True, eos: bool = False, allow_special: bool = False) -> list[int]:
        return [b + 1 for b in text.encode("utf-8")]

    def decode(self, ids, skip_special: bool = False) -> str:
        raw = bytes(int(i) - 1 for i in ids if 1 <= int(i) <= 256)
        return raw.decode("utf-8", errors="replace")

    def id_to_piece(self, i: int) -> str:
        i = int(i)
        if i == 0:
            return "<eos>"
        if i <= 256:
            return bytes([i - 1]).decode("latin-1")
        return f"<extra_{i}>"

    def pieces(self, ids):
        return [self.id_to_piece(i) for i in ids]

    def stream_decoder(self, skip_special: bool = False):
        tok = self

        class Dec:
            def __init__(self):
                self.u = codecs.getincrementaldecoder("utf-8")(errors="replace")

            def push(self, i):
                return "" if not 1 <= int(i) <= 256 else self.u.decode(bytes([int(i) - 1]))

            def flush(self):
                return self.u.decode(b"", final=True)

        return Dec()


def tiny_model(kind: str = "llama32", seed: int = 0):
    """Our Transformer with random weights in one of tests/tiny_models.py's layouts."""
    from tiny_models import ours_from_hf, tiny_hf_model

    return ours_from_hf(tiny_hf_model(kind, seed=seed))


class Client:
    """JSON over HTTP to a StudioServer on this machine (loopback only)."""

    def __init__(self, port: int, client: str = "test") -> None:
        self.port = port
        self.client = client

    def request(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        if ctype.startswith("application/json"):
            return resp.status, json.loads(payload)
        return resp.status, payload.decode("utf-8", errors="replace")

    def post(self, path: str, body=None, **kw):
        body = dict(body or {})
        body.setdefault("client", self.client)
        return self.request("POST", "/api/" + path, body, **kw)

    def ok(self, path: str, body=None):
        status, data = self.post(path, body)
        assert status == 200, (path, status, data)
        return data

    def get(self, path: str):
        return self.request("GET", path)

    def stream(self, body, on_event=None):
        """POST /api/generate and read the Server-Sent Events; returns the events."""
        body = dict(body)
        body.setdefault("client", self.client)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("POST", "/api/generate", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            data = json.loads(resp.read())
            conn.close()
            return resp.status, data
        events = []
        for line in resp:
            line = line.decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                events.append(ev)
                if on_event is not None:
                    on_event(ev)
        conn.close()
        return 200, events


def raw_generate_socket(port: int, body: dict) -> socket.socket:
    """A raw connection that asked for a stream (to be closed mid-stream by the test)."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /api/generate HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (port, len(data)) + data)
    return sock


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = ("no headless browser: install Debian's chromium and chromium-driver "
              "(apt-get install -y chromium chromium-driver; .ci/run does) and selenium")


def browser_missing() -> bool:
    if not (CHROMIUM and CHROMEDRIVER):
        return True
    try:
        import selenium  # noqa: F401
    except ImportError:
        return True
    return False


def start_browser(download_dir: Path, width: int = 1500, height: int = 1000):
    """Headless Chromium driven by Selenium, with the flags that keep it off the network
    (no sync, no component updates, no background requests, no QUIC), a fresh profile,
    the performance log on (every request it makes is recorded there), and downloads
    going to download_dir."""
    os.environ.setdefault("SE_AVOID_STATS", "true")  # never let Selenium report usage
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="studio-chromium-")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
              "--disable-client-side-phishing-detection", "--metrics-recording-only",
              f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False,
                                           "safebrowsing.enabled": False})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver, profile


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls
