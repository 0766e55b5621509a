"""docs/explore_smollm2.ipynb runs from top to bottom (nbclient + ipykernel), its views
carry their own script, and its nbconvert HTML export draws them in a headless browser
with every request to another host blocked."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from real_models import needs_smollm2
from studio_helpers import NO_BROWSER, browser_missing, requested_urls, start_browser

pytestmark = needs_smollm2
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "explore_smollm2.ipynb"


@pytest.fixture(scope="module")
def executed():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    return nb


def outputs(cell, mime):
    return [o["data"][mime] for o in cell.get("outputs", []) if "data" in o and mime in o["data"]]


def stdout(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def test_the_notebook_runs_and_shows_what_it_says(executed):
    code = [c for c in executed.cells if c.cell_type == "code"]
    text = "\n".join(stdout(c) for c in code)
    assert "dim          576" in text and "n_kv_heads   3" in text
    assert re.search(r"' Paris'\s+0\.7725", text)
    diff = float(re.search(r"max \|difference\|: ([0-9.e+-]+)", text).group(1))
    assert diff < 1e-4
    assert "act == silu(gate) * up: True" in text
    assert "head 4 of layer 23 zeroed" in text


def test_every_view_cell_carries_its_own_renderer(executed):
    views = [c for c in executed.cells if c.cell_type == "code" and outputs(c, "text/html")]
    kinds = []
    for c in views:
        html = outputs(c, "text/html")[0]
        assert "window.LlamaViews" in html and "LlamaViews.mount" in html
        assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import", html)
        kinds.append(re.search(r'"kind":"([a-z]+)"', html).group(1))
    assert {"summary", "architecture", "residual", "embeddings", "topk", "attention", "rope", "lens",
            "dla", "intervene", "tour"} <= set(kinds)


@pytest.mark.skipif(browser_missing(), reason=NO_BROWSER)
def test_the_html_export_draws_offline(executed, tmp_path):
    nbconvert = pytest.importorskip("nbconvert")
    html, _ = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(executed)
    page = tmp_path / "explore.html"
    page.write_text(html, encoding="utf-8")
    n_views = html.count("LlamaViews.mount(el,p")
    driver, _ = start_browser(tmp_path)
    try:
        # nbconvert's own template links MathJax and require.js from a CDN: block every
        # network request, to show our views need none of it.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        driver.get(page.as_uri())
        deadline = time.monotonic() + 60
        drawn = 0
        while time.monotonic() < deadline:
            drawn = driver.execute_script("return document.querySelectorAll('.ls-root .ls-figure').length")
            if drawn >= n_views:
                break
            time.sleep(0.2)
        assert n_views >= 10 and drawn == n_views
        errors = driver.execute_script("return [...document.querySelectorAll('.ls-root .ls-error')].map(e => e.textContent)")
        assert not errors, errors
        ours = [u for u in requested_urls(driver) if not u.startswith(("file://", "data:", "blob:", "chrome://"))]
        # Whatever else was asked for is nbconvert's template, never the views' code.
        assert all(not u.endswith(("views.js", "studio.css")) for u in ours), ours
    finally:
        driver.quit()


def test_the_stored_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), \
        "keep docs/explore_smollm2.ipynb without outputs (the tests execute it)"
