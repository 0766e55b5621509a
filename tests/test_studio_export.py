"""Standalone HTML and notebook fragments: self-contained, escaped, offline; the static
files ship as package data and ask for nothing from anywhere."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from llama.studio.export import STATIC_FILES, fragment, payload_json, standalone_html, static_text
from llama.studio.jupyter import View

EVIL = {"kind": "topk", "title": "Next token", "model": "m</title><script>alert(1)</script>",
        "candidates": [{"rank": 1, "id": 5, "text": "</script><script>alert(2)</script>", "prob": 0.5,
                        "logit": 1.0, "sample_prob": 1.0}],
        "sampling": {"greedy": True}, "tokens": [], "warnings": [], "sources": []}


def test_static_files_are_package_data():
    for name in STATIC_FILES:
        assert resources.files("llama.studio").joinpath("static", name).is_file()
    with pytest.raises(FileNotFoundError):
        static_text("../server.py")


def test_the_page_and_renderers_ask_no_other_host():
    # No URL with a scheme, no protocol-relative URL, no @import / font-face / CDN.
    for name in STATIC_FILES:
        text = static_text(name)
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text and "@font-face" not in text
    page = static_text("index.html")
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert srcs and all(s.startswith("/static/") or s == "data:," for s in srcs), srcs


def test_payload_json_cannot_close_the_script():
    text = payload_json(EVIL)
    assert "</script" not in text and "<" not in text
    assert json.loads(text) == EVIL


def test_standalone_html_is_whole_and_escaped():
    html = standalone_html(EVIL)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert html.count("<script>") == 2 and html.count("</script>") == 2  # the renderers + mount
    assert "alert(1)</script>" not in html and "alert(2)" in html  # only inside JSON, escaped
    assert "&lt;/title&gt;" in html  # the title is HTML-escaped
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for name in ("views.js", "views_prompt.js", "views_attribution.js", "views_model.js"):
        assert static_text(name)[:200] in html
    assert "ls-root" in html


def test_fragments_get_unique_ids_and_need_no_loader():
    a, b = fragment(EVIL), fragment(EVIL)
    ida = re.search(r'id="(ls-view-[^"]+)"', a).group(1)
    idb = re.search(r'id="(ls-view-[^"]+)"', b).group(1)
    assert ida != idb and f"getElementById(\"{ida}\")" in a
    assert "require(" not in a and "define(" not in a  # plain scripts: no require.js needed
    v = View(EVIL)
    assert v._repr_html_().count("LlamaViews.mount(el,p") == 1 and "topk" in repr(v)
