"""The studio's page in a real headless browser (Debian's chromium + chromium-driver,
driven by Selenium), on the default model: type, pick, generate, stop, open every view,
ablate a head, export, stop the server and open the export; and no request to any host
but the server. One server and one browser for the whole module; the tests run in order.

Set STUDIO_SCREENSHOTS=DIR to keep a screenshot of every view there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from real_models import SMOLLM2_GGUF, needs_smollm2
from studio_helpers import NO_BROWSER, browser_missing, requested_urls, start_browser

pytestmark = [needs_smollm2, pytest.mark.skipif(browser_missing(), reason=NO_BROWSER)]
PROMPT = "The capital of France is"
MODEL_KINDS = ("summary", "architecture", "params", "rope", "positions")
VIEWS = [("attention", "attention"), ("attention", "head_scores"), ("lens", None), ("residual", "residual"),
         ("residual", "embeddings"), ("attribution", "saliency"), ("attribution", "dla"),
         ("intervene", "intervene"), ("intervene", "patching"), ("intervene", "ablation"), ("model", "summary"),
         ("model", "architecture"), ("model", "params"), ("model", "rope"), ("tour", None)]
ON_DEMAND = ("patching", "ablation")  # many runs of the model: computed when "compute" is pressed


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from llama.speed import optimize
    from llama.studio.engine import Engine
    from llama.studio.server import StudioServer
    from tokenizer import load_tokenizer
    from weights import load_model

    model = load_model(SMOLLM2_GGUF)
    optimize(model)  # as llama-studio runs it (without keeping the choices on disk)
    server = StudioServer(Engine(model, load_tokenizer(SMOLLM2_GGUF), name="SmolLM2"), "127.0.0.1", 0).start()
    downloads = tmp_path_factory.mktemp("downloads")
    driver, _profile = start_browser(downloads)
    driver.set_page_load_timeout(120)
    driver.get("about:blank")
    time.sleep(0.5)
    requested_urls(driver)  # drop the browser's own start page (chrome://new-tab-page)
    state = {"server": server, "driver": driver, "downloads": downloads, "urls": [], "stopped": False,
             "shots": Path(os.environ["STUDIO_SCREENSHOTS"]) if os.environ.get("STUDIO_SCREENSHOTS") else None}
    yield state
    driver.quit()
    if not state["stopped"]:
        server.stop()


def wait(cond, timeout=120, what="the page", detail=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the element may be being redrawn
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} ({last}; {detail() if detail else ''})")


def js(env, script, *args):
    return env["driver"].execute_script(script, *args)


def css(env, selector):
    from selenium.webdriver.common.by import By

    return env["driver"].find_elements(By.CSS_SELECTOR, selector)


def texts(env, selector):
    """Texts of the matching elements, read in one go (the page redraws as it likes)."""
    return js(env, "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector)


def attr(env, selector, name):
    return js(env, "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
              selector, name)


def click(env, selector, index=0):
    """A click on the index-th match (SVG shapes too), found at the moment of clicking."""
    ok = js(env, "const e = document.querySelectorAll(arguments[0])[arguments[1]];"
                 "if (!e) return false; e.dispatchEvent(new MouseEvent('click', {bubbles: true})); return true;",
            selector, index)
    assert ok, f"nothing matches {selector} [{index}]"


def state(env):
    return js(env, "return window.LlamaStudioPage.state()")


def net_log(env):
    """The network events of the performance log, shortened (for failure messages)."""
    import json as _json

    out = []
    for entry in env["driver"].get_log("performance"):
        msg = _json.loads(entry["message"])["message"]
        m, p = msg.get("method", ""), msg.get("params", {})
        if m == "Network.requestWillBeSent":
            out.append(("send", p["requestId"], p["request"]["url"][-30:], p["request"].get("postData", "")[:80]))
        elif m in ("Network.responseReceived",):
            out.append(("resp", p["requestId"], p["response"]["status"]))
        elif m == "Network.loadingFailed":
            out.append(("fail", p["requestId"], p.get("errorText")))
        elif m == "Network.loadingFinished":
            out.append(("done", p["requestId"]))
    return out[-40:]


def record_urls(env):
    env["urls"] += requested_urls(env["driver"])


def no_errors_in_console(env):
    logs = env["driver"].get_log("browser")
    return [e for e in logs if e["level"] == "SEVERE"]


def top_candidate(env):
    first = attr(env, "#topk .ls-cand", "data-id")
    return (int(first), None) if first is not None else (None, None)


def test_type_the_prompt_and_see_paris_first(env):
    d = env["driver"]
    d.get(env["server"].url)
    wait(lambda: js(env, "return document.body.dataset.ready") == "1", what="the page to start")
    box = css(env, "#text")[0]
    box.clear()
    box.send_keys(PROMPT)
    wait(lambda: (state(env) or {}).get("text") == PROMPT and top_candidate(env)[0] == 7042
         and not js(env, "return window.LlamaStudioPage.busy()"), what="' Paris' ranked first")
    wait(lambda: texts(env, "#tokens .app-tok") == ["The", "␣capital", "␣of", "␣France", "␣is"], what="the chips")
    assert "id 504" in attr(env, "#tokens .app-tok", "title")
    assert texts(env, '#topk .ls-cand[data-rank="1"] .ls-piece') == ["␣Paris"]
    # The table says where its numbers come from, like every view.
    click(env, "#topk-sources .ls-src-link")
    wait(lambda: "logits = self.output(h)" in texts(env, "#side-body")[0], what="the logits line")
    click(env, "#side-close")
    record_urls(env)


def test_sampling_controls_show_their_effect(env):
    d = env["driver"]
    d.execute_script("const t = document.getElementById('temperature'); t.value = 1.5;"
                     "t.dispatchEvent(new Event('input'));"
                     "const k = document.getElementById('top-k'); k.value = 2; k.dispatchEvent(new Event('input'));")
    wait(lambda: state(env)["sampling"]["top_k"] == 2 and state(env)["kept"] == 2, what="top-k 2 applied")
    st = state(env)
    assert st["candidates"][0]["sample_prob"] > st["candidates"][0]["prob"]  # renormalised over 2
    assert len(css(env, "#topk .ls-filtered")) == len(st["candidates"]) - 2
    d.execute_script("const t = document.getElementById('temperature'); t.value = 0; t.dispatchEvent(new Event('input'));"
                     "const k = document.getElementById('top-k'); k.value = 0; k.dispatchEvent(new Event('input'));")
    wait(lambda: state(env)["sampling"]["greedy"] and state(env)["sampling"]["top_k"] is None, what="greedy again",
         detail=lambda: (state(env)["sampling"], texts(env, "#status"), env["driver"].get_log("browser"), net_log(env)))


def test_click_a_candidate_then_step_back(env):
    picked = int(attr(env, '#topk .ls-cand[data-rank="2"]', "data-id"))
    click(env, '#topk .ls-cand[data-rank="2"]')
    wait(lambda: state(env)["n_tokens"] == 6, what="the picked token")
    assert state(env)["tokens"][-1]["id"] == picked
    assert js(env, "return document.getElementById('text').value") == state(env)["decoded"]
    click(env, "#back")
    wait(lambda: state(env)["n_tokens"] == 5 and top_candidate(env)[0] == 7042, what="back to the prompt")


def test_generate_streams_and_stop_stops(env):
    d = env["driver"]
    n_box = css(env, "#gen-n")[0]
    n_box.clear()
    n_box.send_keys("6")
    click(env, "#gen")
    wait(lambda: state(env)["n_tokens"] == 11 and not state(env)["generating"]
         and css(env, "#gen")[0].is_enabled(), what="6 generated tokens")
    assert texts(env, "#gen-out")[0].startswith(" Paris")
    assert len(css(env, "#tokens .app-gen")) >= 6
    # A long one, stopped after a few tokens.
    n_box.clear()
    n_box.send_keys("300")
    click(env, "#gen")
    wait(lambda: len(css(env, "#tokens .app-tok")) >= 14, what="streamed tokens")
    click(env, "#stop")
    wait(lambda: not state(env)["generating"] and css(env, "#gen")[0].is_enabled(), what="the stop")
    assert 14 <= state(env)["n_tokens"] < 11 + 300
    assert "stopped" in texts(env, "#status")[0]
    click(env, "#step")
    n = state(env)["n_tokens"]
    wait(lambda: state(env)["n_tokens"] == n + 1, what="one step")
    # A text longer than the context (8192 tokens) is said so on the page, not run.
    js(env, "const b = document.getElementById('text'); b.value = 'word '.repeat(9000);"
            "b.dispatchEvent(new Event('input'));")
    wait(lambda: "context holds 8192" in (texts(env, "#too-long-msg") or [""])[0], what="the too-long message")
    assert css(env, "#keep-end")
    # Typing afterwards makes the text the user's own: no chip stays marked as generated
    # and the generated text under the buttons goes.
    box = css(env, "#text")[0]
    box.clear()
    box.send_keys(PROMPT + " Paris and")
    wait(lambda: state(env)["n_tokens"] == 7 and not js(env, "return window.LlamaStudioPage.busy()"), what="a typed text")
    assert len(css(env, "#tokens .app-tok")) == 7 and not css(env, "#tokens .app-gen")
    assert texts(env, "#gen-out") == [""]
    # Back to the prompt for the views.
    box.clear()
    box.send_keys(PROMPT)
    wait(lambda: state(env)["n_tokens"] == 5 and state(env)["text"] == PROMPT
         and not js(env, "return window.LlamaStudioPage.busy()"), what="the prompt again")
    record_urls(env)
    d.get_log("browser")  # drop what came before


def open_view(env, tab, sub):
    click(env, f'#tabs [data-tab="{tab}"]')
    if sub:
        wait(lambda: css(env, f'#subnav [data-view="{sub}"]'), what=f"the {sub} button")
        click(env, f'#subnav [data-view="{sub}"]')
    kind = sub or tab
    if kind in ON_DEMAND:
        wait(lambda: "press \"compute\"" in texts(env, "#view .app-busy")[0], what=f"the {kind} prompt to compute")
        click(env, "#view-apply")
    wait(lambda: attr(env, "#view", "data-kind") == kind
         and (css(env, "#view .ls-figure") or css(env, "#view .app-error"))
         and not css(env, "#view.app-stale")
         and (kind in MODEL_KINDS or attr(env, "#view", "data-version") == str(state(env)["version"])),
         what=f"the {kind} view")
    errors = css(env, "#view .app-error") + css(env, "#view .ls-error")
    assert not errors, texts(env, "#view .app-error, #view .ls-error")
    return kind


@pytest.mark.parametrize("tab,sub", VIEWS)
def test_every_view_opens(env, tab, sub):
    kind = open_view(env, tab, sub)
    payload = js(env, "return window.LlamaStudioPage.payloads.view")
    assert payload["kind"] == kind
    assert css(env, "#view .ls-figure svg") or kind == "tour"
    if payload.get("tokens"):
        assert [t["id"] for t in payload["tokens"]] == [504, 3575, 282, 4649, 314]
    if kind == "attention":
        assert len(css(env, "#view .ls-thumb")) == 30 * 9
        click(env, "#view .ls-thumb", 17 * 9 + 5)
        wait(lambda: "layers.17.attention.probs, head 5" in texts(env, "#view .ls-head-panel")[0],
             what="the enlarged head")
        chips = css(env, "#view .ls-head-panel .ls-chip")
        assert len(chips) == 10  # two strips of 5 tokens
    if kind == "lens":
        assert len(css(env, "#view .ls-lens-cell")) == 31 * 5
        click(env, "#view .ls-lens-cell", 0)  # the embeddings at position 0: its top 10 replace the last cell's
        wait(lambda: "tok_embeddings at position 0" in texts(env, "#view .ls-lens-detail")[0]
             and len(css(env, "#view .ls-lens-detail tr")) == 10, what="a cell's top 10")
    if kind == "patching":  # the default second prompt: " France" -> " Italy" at position 3
        assert payload["differ"] == [3] and payload["vocab"][str(payload["answer"])] == " Paris"
        assert payload["top"][0][1] == 3 and len(css(env, "#view svg.ls-map")) == 1
    if kind == "ablation":
        assert len(payload["scores"]) == 30 and payload["top"][0][:2] == [23, 4]
    if kind == "embeddings":
        rotated(env, "#view svg.ls-scatter3d")
    if kind == "residual":
        rotated(env, "#view svg.ls-3d")
        assert payload["positions"] == [1, 2, 3, 4]  # the page leaves the first token out by default
    if kind == "tour":
        first = texts(env, "#view .ls-tour-title")[0]
        click(env, "#view .ls-tour-next")
        wait(lambda: texts(env, "#view .ls-tour-title")[0] != first, what="the next stage")
    if payload["sources"]:
        click(env, "#view .ls-sources .ls-src-link")
        wait(lambda: "app-open" in attr(env, "#side", "class"), what="the source panel")
        src = payload["sources"][0]
        assert f"{src['path']}:{src['line']}" in texts(env, "#side-body")[0]
        assert css(env, "#side-body .ls-hl")
        click(env, "#side-close")
    if env["shots"]:
        env["shots"].mkdir(parents=True, exist_ok=True)
        env["driver"].save_screenshot(str(env["shots"] / f"{kind}.png"))
    assert not no_errors_in_console(env)
    record_urls(env)


def rotated(env, selector):
    """Drag across a 3-D view: the drawing turns (its circles move)."""
    before = js(env, "return [...document.querySelector(arguments[0]).querySelectorAll('circle')].map(c => c.getAttribute('cx')).join()", selector)
    js(env, "const sv = document.querySelector(arguments[0]); const r = sv.getBoundingClientRect();"
            "const at = (type, dx) => sv.dispatchEvent(new PointerEvent(type, {bubbles: true, clientX: r.left + 100 + dx, clientY: r.top + 100, pointerId: 1}));"
            "at('pointerdown', 0); at('pointermove', 60); at('pointerup', 60);", selector)
    after = js(env, "return [...document.querySelector(arguments[0]).querySelectorAll('circle')].map(c => c.getAttribute('cx')).join()", selector)
    assert before and after != before, "dragging did not turn the 3-D view"


def test_a_view_that_does_not_apply_says_why(env):
    click(env, '#tabs [data-tab="model"]')
    wait(lambda: css(env, '#subnav [data-view="positions"].app-na'), what="the greyed positions button")
    click(env, '#subnav [data-view="positions"]')
    wait(lambda: "not for this model" in (texts(env, "#view .app-na-note") or [""])[0], what="the reason")
    assert "RoPE" in texts(env, "#view .app-na-note")[0] and not css(env, "#view-controls input")


def test_source_panel_shows_the_whole_file(env):
    open_view(env, "lens", None)
    click(env, "#view .ls-sources .ls-src-link")
    click(env, "#side-file")
    wait(lambda: len(css(env, "#side-body .ls-line")) > 300, what="the whole of model.py")
    assert len(css(env, "#side-body .ls-hl")) >= 1
    click(env, "#side-close")


def test_ablating_a_head_changes_the_distribution(env):
    open_view(env, "intervene", "intervene")
    d = env["driver"]
    for name, value in (("layer", "23"), ("head", "4")):
        box = css(env, f'#view-controls [data-opt="{name}"]')[0]
        box.clear()
        box.send_keys(value)
        d.execute_script("arguments[0].dispatchEvent(new Event('change'))", box)
    wait(lambda: "layer 23" in js(env, "return window.LlamaStudioPage.payloads.view.description"),
         what="the ablation of layers.23 head 4")
    p = js(env, "return window.LlamaStudioPage.payloads.view")
    assert p["edit"] == "ablate_head" and p["hooks"][0] == "layers.23.attention.heads"
    assert p["clean"][0]["text"] == " Paris"
    assert p["edited"][0]["prob"] != p["clean"][0]["prob"] and p["kl"] > 0
    assert "→" in texts(env, "#view .ls-intervene-summary")[0]
    # The next-token panel still shows the clean model.
    assert top_candidate(env)[0] == 7042
    record_urls(env)


def downloaded(env, suffix):
    files = wait(lambda: [f for f in env["downloads"].iterdir() if f.name.endswith(suffix)],
                 timeout=60, what=f"a downloaded {suffix}")
    f = files[0]
    wait(lambda: f.stat().st_size > 0 and not (f.parent / (f.name + ".crdownload")).exists(), what="the download")
    return f


def test_export_svg_and_png(env):
    open_view(env, "lens", None)
    click(env, "#export-svg")
    svg = downloaded(env, ".svg")
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg.read_text(encoding="utf-8"))
    assert root.tag.endswith("svg") and int(root.get("width")) > 300
    click(env, "#export-png")
    png = downloaded(env, ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_no_request_went_to_another_host(env):
    record_urls(env)
    base = env["server"].url.rstrip("/")
    # chrome:// is the browser's own start page, built into it (no host, no network).
    others = [u for u in env["urls"] if not (u.startswith(base + "/") or u.startswith(("data:", "blob:", "chrome://")))]
    assert any(u.startswith(base + "/api/") for u in env["urls"]) and not others, others


def test_export_a_view_stop_the_server_and_open_the_file(env):
    open_view(env, "lens", None)
    click(env, "#export-html")
    html = downloaded(env, ".html")
    record_urls(env)
    env["server"].stop()
    env["stopped"] = True
    d = env["driver"]
    d.get(html.as_uri())
    wait(lambda: css(env, ".ls-figure .ls-lens-cell"), what="the exported lens")
    assert len(css(env, ".ls-lens-cell")) == 31 * 5
    click(env, ".ls-lens-cell", 31 * 5 - 1)
    wait(lambda: "␣Paris" in texts(env, ".ls-lens-detail")[0], what="the exported cell's top 10")
    assert css(env, ".ls-export button")  # SVG / PNG buttons in the standalone file
    urls = requested_urls(d)
    assert urls and all(u.startswith(("file://", "data:", "blob:")) for u in urls), urls
    assert not no_errors_in_console(env)


def test_every_gpt2_view_draws(env, tmp_path):
    """The payloads of a tiny GPT-2 checkpoint (every view that applies to it; rope says
    why not) drawn by the same renderers in a standalone page: a figure each, no error,
    and the 3-D views of the token and position embeddings turn when dragged."""
    from llama.studio.export import standalone_html
    from test_studio_gpt2 import gpt2_payloads

    from gpt2_models import write_gpt2_with_tokenizer
    from llama.studio.engine import Engine
    from tokenizer import load_tokenizer
    from weights import load_model

    folder = write_gpt2_with_tokenizer(tmp_path / "gpt2")
    tok = load_tokenizer(folder)
    engine = Engine(load_model(folder), tok, name="tiny-gpt2")
    assert not engine.available("rope")
    for kind, payload in gpt2_payloads(engine, tok).items():
        page = tmp_path / f"{kind}.html"
        page.write_text(standalone_html(payload), encoding="utf-8")
        env["driver"].get(page.as_uri())
        wait(lambda: css(env, ".ls-figure > *") or css(env, ".ls-error"), what=f"the GPT-2 {kind} view")
        assert not css(env, ".ls-error"), (kind, texts(env, ".ls-error"))
        assert css(env, ".ls-figure svg") or kind == "tour", kind
        if kind in ("embeddings", "positions"):
            rotated(env, ".ls-figure svg.ls-scatter3d")
        assert not no_errors_in_console(env), kind


def test_non_finite_logits_are_reported_not_drawn(env, tmp_path):
    from llama.studio.export import standalone_html

    payload = {"kind": "topk", "title": "Next token", "tokens": [], "warnings": [], "sources": [],
               "candidates": [], "sampling": {"greedy": True},
               "non_finite": {"count": 49152, "nan": 49152, "inf": 0,
                              "message": "49152 of 49152 logits are not finite (49152 NaN): ..."}}
    page = tmp_path / "nan.html"
    page.write_text(standalone_html(payload), encoding="utf-8")
    env["driver"].get(page.as_uri())
    wait(lambda: css(env, ".ls-error"), what="the non-finite message")
    assert "not finite" in texts(env, ".ls-error")[0]
    assert not css(env, ".ls-figure svg")  # nothing drawn from NaNs
