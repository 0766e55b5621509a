"""The studio's views inside real Jupyter front ends: JupyterLab and Notebook 7 (and the
classic Notebook, nbclassic, when it is installed), served on loopback and opened in
headless Chromium. Opt-in, because it needs those packages and takes a minute:

    pip install jupyterlab notebook            # (nbclassic for the classic Notebook)
    STUDIO_JUPYTER=1 python -m pytest tests/test_studio_jupyter.py
    STUDIO_JUPYTER=1 STUDIO_SCREENSHOTS=shots python -m pytest tests/test_studio_jupyter.py

A notebook with a few views of a tiny model is executed (nbclient), trusted (as a user
trusts a notebook they ran, so its HTML outputs may run scripts), and opened in each
front end. Each view must draw its figure there (the renderer travels in the output),
with no error. VS Code's notebook renderer is not tested here (no VS Code on the machine).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio_helpers import NO_BROWSER, browser_missing, start_browser

pytestmark = [
    pytest.mark.skipif(not os.environ.get("STUDIO_JUPYTER"), reason="opt-in: set STUDIO_JUPYTER=1 "
                       "(and pip install jupyterlab notebook) to open the views in JupyterLab and Notebook 7"),
    pytest.mark.skipif(browser_missing(), reason=NO_BROWSER),
]
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("lens", "attention", "embeddings", "summary")

CELLS = [
    "import sys, torch\n"
    f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
    "from studio_helpers import ByteTokenizer, tiny_model\n"
    "from llama.studio import Studio\n"
    "torch.manual_seed(0)\n"
    "studio = Studio(tiny_model('llama32'), ByteTokenizer(), name='tiny-llama32')",
    "studio.lens('Hello, tiny world')",
    "studio.attention('Hello, tiny world')",
    "studio.embeddings('Hello, tiny world')",
    "studio.summary()",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("jupyterlab")
    pytest.importorskip("notebook")
    work = tmp_path_factory.mktemp("jupyter")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(work / "config"), JUPYTER_DATA_DIR=str(work / "data"),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"), IPYTHONDIR=str(work / "ipython"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    path = work / "views.ipynb"
    nbformat.write(nb, path)
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "jupyter"), "trust", str(path)], env=env, check=True, capture_output=True)
    port, token = free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [str(bindir / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.open_browser=False", "--allow-root",
         # Nothing from the network: no news feed, no update check, no extension index.
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:  # pragma: no cover
        server.kill()
        pytest.fail("jupyter lab did not start: " + server.stdout.read())
    driver, _ = start_browser(work, width=1400, height=1800)
    shots = Path(os.environ["STUDIO_SCREENSHOTS"]) if os.environ.get("STUDIO_SCREENSHOTS") else work
    shots.mkdir(parents=True, exist_ok=True)
    yield {"base": f"http://127.0.0.1:{port}", "token": token, "driver": driver, "shots": shots,
           "classic": _has("nbclassic")}
    driver.quit()
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover
        server.kill()


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def drawn_views(jupyter, url: str, shot: str) -> list[str]:
    """Open `url`; wait until every view's figure is drawn; the kinds drawn."""
    d = jupyter["driver"]
    d.get(url)
    deadline = time.monotonic() + 120
    kinds: list[str] = []
    while time.monotonic() < deadline:
        kinds = d.execute_script(
            "return [...document.querySelectorAll('.ls-root .ls-figure')].filter(f => f.querySelector('svg, table'))"
            ".map(f => f.dataset.kind)")
        if len(kinds) >= len(KINDS):
            break
        time.sleep(0.5)
    time.sleep(1)
    d.save_screenshot(str(jupyter["shots"] / shot))
    errors = d.execute_script("return [...document.querySelectorAll('.ls-root .ls-error')].map(e => e.textContent)")
    assert not errors, errors
    return kinds


def test_views_draw_in_jupyterlab(jupyter):
    kinds = drawn_views(jupyter, f"{jupyter['base']}/lab/tree/views.ipynb?token={jupyter['token']}", "jupyterlab.png")
    assert sorted(kinds) == sorted(KINDS), kinds


def test_views_draw_in_notebook_7(jupyter):
    kinds = drawn_views(jupyter, f"{jupyter['base']}/notebooks/views.ipynb?token={jupyter['token']}", "notebook7.png")
    assert sorted(kinds) == sorted(KINDS), kinds


def test_views_draw_in_the_classic_notebook(jupyter):
    if not jupyter["classic"]:
        pytest.skip("nbclassic is not installed (pip install nbclassic for the classic Notebook)")
    kinds = drawn_views(jupyter, f"{jupyter['base']}/nbclassic/notebooks/views.ipynb?token={jupyter['token']}",
                        "nbclassic.png")
    assert sorted(kinds) == sorted(KINDS), kinds


def test_a_view_turns_when_dragged_in_jupyterlab(jupyter):
    d = jupyter["driver"]
    d.get(f"{jupyter['base']}/lab/tree/views.ipynb?token={jupyter['token']}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not d.execute_script("return !!document.querySelector('svg.ls-scatter3d circle')"):
        time.sleep(0.5)
    read = "return [...document.querySelector('svg.ls-scatter3d').querySelectorAll('circle')].map(c => c.getAttribute('cx')).join()"
    before = d.execute_script(read)
    d.execute_script("const sv = document.querySelector('svg.ls-scatter3d'); sv.scrollIntoView(); const r = sv.getBoundingClientRect();"
                     "const at = (type, dx) => sv.dispatchEvent(new PointerEvent(type, {bubbles: true, clientX: r.left + 100 + dx, clientY: r.top + 100, pointerId: 1}));"
                     "at('pointerdown', 0); at('pointermove', 80); at('pointerup', 80);")
    assert re.search(r"\d", before) and d.execute_script(read) != before
