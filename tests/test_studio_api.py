"""The studio's JSON API over real HTTP, on the default model (loaded once): every
endpoint, bad parameters, concurrent clients, a client that disconnects mid-stream, stop.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

from real_models import SMOLLM2_GGUF, needs_smollm2
from studio_helpers import Client, raw_generate_socket

pytestmark = needs_smollm2
PROMPT = "The capital of France is"
PROMPT_IDS = [504, 3575, 282, 4649, 314]
CONTEXT = 96  # a short context, so "too long" is cheap to test; Paris does not depend on it


@pytest.fixture(scope="module")
def served():
    from llama.studio.engine import Engine
    from llama.studio.server import StudioServer
    from tokenizer import load_tokenizer
    from weights import load_model

    model = load_model(SMOLLM2_GGUF, max_seq_len=CONTEXT)
    tok = load_tokenizer(SMOLLM2_GGUF)
    server = StudioServer(Engine(model, tok, name="SmolLM2"), "127.0.0.1", 0).start()
    yield server, model, tok
    server.stop()


@pytest.fixture()
def api(served):
    return Client(served[0].port, client=f"t{time.monotonic_ns()}")


def fresh_logits(model, ids):
    """Logits of ids from scratch, on a copy of nothing: the server's cache record is
    told to start afresh, as the engine does when the model was used behind its back."""
    with torch.no_grad():
        model.reset_cache()
        out = model(torch.tensor([ids]))[0, -1].float()
        model.reset_cache()
    return out


def ids_of(state):
    return [t["id"] for t in state["tokens"]]


# -- the page ---------------------------------------------------------------------------


def test_page_and_static_files(api):
    status, html = api.get("/")
    assert status == 200 and "views.js" in html and "app.js" in html
    for name in ("views.js", "app.js", "studio.css"):
        status, text = api.get(f"/static/{name}")
        assert status == 200 and len(text) > 1000
    status, data = api.get("/static/../server.py")
    assert status == 404 and "no such file" in data["error"]
    status, data = api.get("/nowhere")
    assert status == 404


def test_the_page_forbids_other_hosts(served):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served[0].port)
    conn.request("GET", "/")
    resp = conn.getresponse()
    csp = resp.getheader("Content-Security-Policy")
    resp.read()
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "font-src 'none'" in csp


def test_requests_for_another_host_or_origin_are_refused(api, served):
    status, data = api.request("GET", "/api/info", headers={"Host": f"evil.example:{served[0].port}"})
    assert status == 403 and "only requests addressed to it" in data["error"]
    status, data = api.post("text", {"text": "x"}, headers={"Origin": "http://evil.example"})
    assert status == 403 and "not allowed" in data["error"]


def test_info_lists_the_model_and_every_view(api, served):
    status, info = api.get("/api/info")
    assert status == 200
    m = served[1]
    assert info["n_layers"] == m.args.n_layers == 30 and info["n_params"] == m.num_params()
    names = [v["name"] for v in info["views"]]
    assert names == ["topk", "attention", "head_scores", "lens", "residual", "embeddings", "saliency",
                     "dla", "intervene", "patching", "ablation", "summary", "architecture", "params",
                     "rope", "positions", "tour"]
    views = {v["name"]: v for v in info["views"]}
    assert "layers.*.attention.probs" in views["attention"]["hooks"]
    assert views["attention"]["sources"][0]["path"] == "llama/model.py"
    assert not views["positions"]["available"] and "RoPE" in views["positions"]["why_not"]
    assert all(v["available"] for n, v in views.items() if n != "positions")
    assert info["family"] == "Llama" and info["source"] == "llama/model.py"


# -- the text -----------------------------------------------------------------------------


def test_typing_the_prompt_ranks_paris_first(api, served):
    st = api.ok("text", {"text": PROMPT})
    assert ids_of(st) == PROMPT_IDS
    top = st["candidates"][0]
    assert top["text"] == " Paris" and top["id"] == 7042 and abs(top["prob"] - 0.7725) < 1e-4
    want = torch.softmax(fresh_logits(served[1], PROMPT_IDS), -1)
    got = [c["prob"] for c in st["candidates"]]
    assert np.allclose(got, torch.topk(want, 10).values.numpy(), atol=1e-5)


def test_sampling_controls_retable_without_running_the_model(api, served):
    from llama.generate import next_token_probs, top_k_top_p_filter

    api.ok("text", {"text": PROMPT})
    st = api.ok("state", {"temperature": 1.3, "top_p": 0.9, "show": 20})
    logits = fresh_logits(served[1], PROMPT_IDS)
    want = top_k_top_p_filter(next_token_probs(logits, 1.3), None, 0.9)
    got = np.array([c["sample_prob"] for c in st["candidates"]])
    assert np.allclose(got, want[[c["id"] for c in st["candidates"]]].numpy(), atol=1e-5)
    assert st["kept"] == int((want > 0).sum()) and st["sampling"]["top_p"] == 0.9


def test_pick_step_back_reset(api, served):
    api.ok("text", {"text": PROMPT})
    st = api.ok("pick", {"id": 7042})
    assert ids_of(st) == PROMPT_IDS + [7042] and st["decoded"] == PROMPT + " Paris"
    want = torch.softmax(fresh_logits(served[1], PROMPT_IDS + [7042]), -1)
    assert abs(st["candidates"][0]["prob"] - float(want.max())) < 1e-4
    st = api.ok("step", {})  # greedy
    assert st["chosen"]["id"] == int(want.argmax()) == ids_of(st)[-1]
    st = api.ok("back", {"n": 2})
    assert ids_of(st) == PROMPT_IDS and st["candidates"][0]["text"] == " Paris"
    st = api.ok("reset", {})
    assert st["n_tokens"] == 0 and st["candidates"] == []


def test_generate_streams_greedy_tokens(api, served):
    from llama.generate import generate_ids

    api.ok("text", {"text": PROMPT})
    status, events = api.stream({"n": 6})
    assert status == 200
    toks = [e["id"] for e in events if e["type"] == "token"]
    assert len(toks) == 6 and events[-1]["type"] == "done" and events[-1]["reason"] == "max tokens"
    served[1].reset_cache()
    assert toks == generate_ids(served[1], PROMPT_IDS, 6, stop_ids=served[2].stop_ids)
    assert ids_of(events[-1]["state"]) == PROMPT_IDS + toks
    assert "".join(e["text"] for e in events if e["type"] == "token").startswith(" Paris")


def test_stop_ends_a_generation_and_keeps_a_consistent_state(api, served):
    api.ok("text", {"text": PROMPT})
    stopper = Client(api.port, api.client)
    seen = []

    def on_event(ev):
        seen.append(ev)
        if ev["type"] == "token" and ev["n"] == 3:
            stopper.ok("stop", {})

    status, events = api.stream({"n": 80}, on_event=on_event)
    done = events[-1]
    assert done["type"] == "done" and done["reason"] == "stopped" and 3 <= done["count"] < 80
    st = api.ok("state", {})
    assert st["n_tokens"] == 5 + done["count"] and not st["generating"]
    want = torch.softmax(fresh_logits(served[1], ids_of(st)), -1)
    assert abs(st["candidates"][0]["prob"] - float(want.max())) < 1e-4


def test_a_client_that_disconnects_mid_stream_does_not_stop_the_server(api, served):
    server = served[0]
    before = server.disconnects
    api.ok("text", {"text": PROMPT})
    sock = raw_generate_socket(api.port, {"client": api.client, "n": 60})
    got = b""
    while got.count(b"data: ") < 3:
        chunk = sock.recv(4096)
        assert chunk, "the stream ended early"
        got += chunk
    sock.close()  # gone, mid-stream
    deadline = time.monotonic() + 60
    while api.ok("state", {})["generating"]:
        assert time.monotonic() < deadline, "the generation never noticed the client left"
        time.sleep(0.05)
    st = api.ok("state", {})
    assert 5 + 3 <= st["n_tokens"] < 5 + 60, "the generation should stop when its client goes"
    assert server.disconnects > before
    # The server goes on: the same client and others are served, the state is usable.
    status, events = api.stream({"n": 2})
    assert status == 200 and events[-1]["count"] == 2
    assert Client(api.port, "someone-else").ok("text", {"text": PROMPT})["candidates"][0]["text"] == " Paris"


def test_two_clients_at_once_do_not_corrupt_each_other(served):
    """Two clients type, pick and generate at the same time; each ends where a lone client
    doing the same ends, with the logits a from-scratch pass gives."""
    port = served[0].port
    scripts = {
        "alice": ["The capital of France", "The capital of France is", 7042, ("gen", 4), "The capital"],
        "bob": ["Once upon a", "Once upon a time", ("gen", 5), 13, ("back", 2), ("gen", 3)],
    }

    def run(client, script):
        c = Client(port, client)
        for step in script:
            if isinstance(step, str):
                c.ok("text", {"text": step})
            elif isinstance(step, int):
                c.ok("pick", {"id": step})
            elif step[0] == "gen":
                status, events = c.stream({"n": step[1]})
                assert status == 200 and events[-1]["type"] == "done"
            else:
                c.ok("back", {"n": step[1]})
        return c.ok("state", {})

    for rnd in range(1):
        results, errors = {}, []

        def worker(name):
            try:
                results[name] = run(f"{name}-{rnd}", scripts[name])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in scripts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        for name, script in scripts.items():
            lone = run(f"{name}-alone-{rnd}", script)
            assert ids_of(results[name]) == ids_of(lone), name
            assert [c["id"] for c in results[name]["candidates"]] == [c["id"] for c in lone["candidates"]]
            want = torch.softmax(fresh_logits(served[1], ids_of(lone)), -1)
            assert abs(results[name]["candidates"][0]["prob"] - float(want.max())) < 1e-4


def test_a_burst_of_requests_is_served_not_reset(api):
    api.ok("text", {"text": PROMPT})
    results = []

    def one(i):
        try:
            results.append(api.post("state", {"temperature": 0.5 * (i % 3)})[0])
        except OSError as e:  # a reset connection
            results.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [200] * 48


def test_a_text_longer_than_the_context_says_so(api):
    long_text = "one two three four five six seven eight nine ten " * 12  # > 96 tokens
    st = api.ok("text", {"text": long_text})
    assert st["too_long"] and st["too_long"]["max_seq_len"] == CONTEXT
    assert f"context holds {CONTEXT}" in st["too_long"]["message"]
    st = api.ok("text", {"text": long_text, "truncate": True})
    assert st["too_long"] is None and st["n_tokens"] == CONTEXT and st["candidates"]


# -- views ----------------------------------------------------------------------------------


def view(api, kind, **options):
    return api.ok(f"view/{kind}", {"options": options})


def test_every_view_endpoint_answers_with_its_payload(api):
    """Every view but the two maps of many runs (patching, ablation: tests/test_studio_engine.py
    checks them cell by cell, tests/test_studio_browser.py draws them from this model)."""
    api.ok("text", {"text": PROMPT})
    from llama.studio.engine import VIEWS

    for kind in VIEWS:
        if kind in ("patching", "ablation", "positions"):
            continue
        p = view(api, kind)
        assert p["kind"] == kind and p["model"] == "SmolLM2"
        for src in p["sources"]:
            assert src["path"] == "llama/model.py" and src["line"] > 0, (kind, src)
        if VIEWS[kind].needs == "text":
            assert ids_of(p) == PROMPT_IDS


def test_lens_attention_residual_agree_with_a_capture(api, served):
    from llama.hooks import run_with_cache
    from llama.studio.engine._json import unpack_unit_u16

    api.ok("text", {"text": PROMPT})
    model = served[1]
    model.reset_cache()
    _, cache = run_with_cache(model, torch.tensor([PROMPT_IDS]),
                              names=["layers.*.attention.probs", "layers.*.resid_post", "logits"])
    model.reset_cache()
    lens = view(api, "lens")
    assert lens["top_ids"][-1] == cache["logits"][0].argmax(-1).tolist()
    assert lens["vocab"][str(lens["top_ids"][-1][-1])] == " Paris"
    att = view(api, "attention")
    maps = unpack_unit_u16(att["probs"])
    assert np.abs(maps[17] - cache["layers.17.attention.probs"][0].numpy()).max() < 1e-4
    res = view(api, "residual", skip_first=True)
    norms = cache["layers.29.resid_post"][0].norm(dim=-1).numpy()
    assert np.allclose(res["resid_norm"][-1], norms, rtol=1e-3)
    assert [g["stage"] for g in res["grid"]] == res["pca_stages"] and res["positions"] == [1, 2, 3, 4]


def test_dla_and_interventions(api, served):
    api.ok("text", {"text": PROMPT})
    dla = view(api, "dla")
    assert dla["target"] == 7042 and abs(dla["total"] - dla["logit"]) < 1e-3
    abl = view(api, "intervene", edit="ablate_attn", layer=0)
    assert abl["clean"][0]["text"] == " Paris" and abl["kl"] > 1e-3
    same = view(api, "intervene", edit="patch", source=PROMPT, layer=5)
    assert same["kl"] < 1e-6
    steer = view(api, "intervene", edit="steer", prompt_a=" Berlin Germany", prompt_b=" Paris France",
                 layer=20, scale=8)
    assert steer["max_abs_logit_change"] > 0.5
    # After edited runs the text's own table is still the clean one.
    assert api.ok("state", {})["candidates"][0]["text"] == " Paris"


def test_source_file_endpoint(api):
    status, f = api.get("/api/source?path=llama/model.py")
    assert status == 200 and any("def forward" in line for line in f["lines"])
    status, err = api.get("/api/source?path=/etc/passwd")
    assert status == 400 and "not a source file of this model" in err["error"]


def test_export_returns_a_standalone_page(api):
    api.ok("text", {"text": PROMPT})
    p = view(api, "lens")
    status, html = api.post("export", {"payload": p})
    assert status == 200 and html.startswith("<!doctype html>") and "LlamaViews.mount" in html
    import re

    # The only URL in the file is SVG's XML namespace, an identifier that is never fetched.
    assert set(re.findall(r"https?://[^\s\"'`)<]+", html)) == {"http://www.w3.org/2000/svg"}


# -- bad requests: 400 and a message, never a traceback -----------------------------------------


@pytest.mark.parametrize("path,body,status,message", [
    ("text", {"text": 5}, 400, "text must be a string"),
    ("text", {}, 400, "text needs"),
    ("text", {"text": "x", "temperature": -1}, 400, "sampling: option 'temperature' must be >= 0"),
    ("text", {"text": "x", "top_p": 2}, 400, "option 'top_p' must be >= 0 and <= 1"),
    ("text", {"text": "x", "top_k": 0}, 400, "option 'top_k' must be >= 1"),
    ("text", {"text": "x", "show": 0}, 400, "option 'show' must be >= 1"),
    ("text", {"text": "x", "chat": "yes"}, 400, "chat and truncate must be true or false"),
    ("pick", {"id": 10**7}, 400, "token id must be an integer in 0..49151"),
    ("pick", {"id": "Paris"}, 400, "token id must be an integer"),
    ("pick", {}, 400, "pick needs"),
    ("back", {"n": 0}, 400, "n must be an integer >= 1"),
    ("back", {"n": 5}, 400, "at most 4 can be removed"),
    ("generate", {"n": 0}, 400, "n must be an integer between 1 and 4096"),
    ("generate", {"n": 3, "seed": -1}, 400, "seed must be"),
    ("view/nonsense", {}, 400, "unknown view 'nonsense'"),
    ("view/lens", {"options": {"k": "many"}}, 400, "must be an integer"),
    ("view/lens", {"options": {"depth": 3}}, 400, "unknown option 'depth'"),
    ("view/lens", {"options": []}, 400, "\"options\" must be a JSON object"),
    ("view/attention", {"options": {"layer": 30}}, 400, "layer 30 is out of range"),
    ("view/saliency", {"options": {"position": 5}}, 400, "position 5 is out of range"),
    ("view/dla", {"options": {"target": 49152}}, 400, "must be in 0..49151"),
    ("view/positions", {}, 400, "no learned position embeddings"),
    ("view/patching", {"options": {"corrupt": "Hello"}}, 400, "same number of tokens"),
    ("view/patching", {"options": {"site": "everywhere"}}, 400, "one of resid_pre"),
    ("view/ablation", {"options": {"mode": "max"}}, 400, "one of zero, mean"),
    ("view/head_scores", {"options": {"length": 1000}}, 400, "must be >= 2 and <= 256"),
    ("view/intervene", {"options": {"edit": "patch", "source": "Hello"}}, 400, "same number of tokens"),
    ("view/intervene", {"options": {"edit": "ablate_head", "head": 9}}, 400, "head 9 is out of range"),
    ("view/tour", {"options": {"pair": 99}}, 400, "pair 99 is out of range"),
    ("view/rope", {"options": {"positions": 0}}, 400, "positions"),
    ("nowhere", {}, 404, "no such endpoint"),
    ("export", {"payload": 3}, 400, "export needs"),
])
def test_bad_parameters_get_400_and_a_message(api, path, body, status, message):
    api.ok("text", {"text": PROMPT})
    got, data = api.post(path, body)
    assert got == status, data
    assert message in data["error"], data["error"]
    assert "Traceback" not in data["error"]


def test_malformed_requests(api):
    status, data = api.request("POST", "/api/text", raw=b"{not json")
    assert status == 400 and "not valid JSON" in data["error"]
    # NaN and Infinity are Python's JSON extensions, not JSON: refused, not a 500 later on.
    status, data = api.request("POST", "/api/export", raw=b'{"client": "t", "payload": {"kind": "x", "v": NaN}}')
    assert status == 400 and "NaN is not a JSON number" in data["error"]
    status, data = api.request("POST", "/api/text", raw=b"[1, 2]")
    assert status == 400 and "must be a JSON object" in data["error"]
    status, data = api.request("POST", "/api/text", body={"text": "x"})
    assert status == 400 and "missing \"client\"" in data["error"]
    status, data = api.post("text", {"text": "x", "client": "no spaces allowed"})
    assert status == 400 and "client must be" in data["error"]
    status, data = api.get("/api/view/lens")
    assert status == 405 and "not a GET endpoint" in data["error"]
    status, data = Client(api.port, "empty-client").post("view/lens", {})
    assert status == 400 and "no text yet" in data["error"]
    import socket

    sock = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    sock.sendall(b"POST /api/text HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nContent-Length: 9000000\r\n\r\n" % api.port)
    reply = b""
    while chunk := sock.recv(4096):  # until the server closes the connection
        reply += chunk
    reply = reply.decode()
    sock.close()
    assert reply.startswith("HTTP/1.0 413") and "at most 1048576 are accepted" in reply


def test_views_are_plain_json(api):
    api.ok("text", {"text": PROMPT})
    for kind in ("attention", "lens", "residual", "dla"):
        json.dumps(view(api, kind), allow_nan=False)
