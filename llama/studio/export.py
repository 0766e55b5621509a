"""Views as self-contained HTML: standalone files and Jupyter output cells.

A view's HTML carries everything it needs: the payload (JSON), the renderers
(static/views.js) and the styles (static/studio.css), inline. It asks no server and no
other host for anything, so an exported file opens offline, from a USB stick, years
later, and a notebook's output survives nbconvert to HTML.

    from llama.studio.export import standalone_html, fragment
    html = standalone_html(payload)        # a whole document, for a .html file
    snippet = fragment(payload)            # a <div> + <style> + <script>, for notebooks
"""

from __future__ import annotations

import html as html_lib
import itertools
import json
from functools import lru_cache
from importlib import resources

# The renderers, in the order they must load (views.js first: the others add to it).
VIEW_SCRIPTS = ("views.js", "views_prompt.js", "views_attribution.js", "views_model.js")
STATIC_FILES = ("index.html", "app.js", "studio.css") + VIEW_SCRIPTS
_ids = itertools.count(1)


@lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """One of the files shipped in llama/studio/static/ (package data)."""
    if name not in STATIC_FILES:
        raise FileNotFoundError(f"no static file {name!r}; files: {', '.join(STATIC_FILES)}")
    return resources.files("llama.studio").joinpath("static", name).read_text(encoding="utf-8")


def renderers_js() -> str:
    """All the renderers as one script (what exports and notebook cells carry)."""
    return "\n".join(static_text(name) for name in VIEW_SCRIPTS)


def payload_json(payload: dict) -> str:
    """JSON safe to put inside a <script> element: no "</script>", no "<!--"."""
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _script(js: str) -> str:
    return "<script>" + js.replace("</script", "<\\/script") + "</script>"


def _mount_script(dom_id: str, payload: dict, buttons: bool) -> str:
    name = json.dumps(str(payload.get("kind", "view")))
    return _script(
        "(function(){var el=document.getElementById(%s);var p=%s;"
        "LlamaViews.mount(el,p,{});%s})();"
        % (json.dumps(dom_id), payload_json(payload),
           ("el.append(LlamaViews.exportButtons(el,%s));" % name) if buttons else "")
    )


def standalone_html(payload: dict, title: str | None = None) -> str:
    """A complete HTML document showing one view, with SVG/PNG buttons; offline."""
    title = title or f"{payload.get('title') or payload.get('kind', 'view')} - {payload.get('model', '')}".strip(" -")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:\">\n"
        f"<title>{html_lib.escape(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n"
        f"<style>{static_text('studio.css')}</style>\n</head>\n"
        "<body style=\"margin:16px;background:#fff\">\n"
        "<div id=\"ls-view\" class=\"ls-root\"></div>\n"
        "<p style=\"color:#889;font:12px system-ui,sans-serif\">Exported from llama-from-scratch's "
        "studio; this file needs no server and no network.</p>\n"
        f"{_script(renderers_js())}\n{_mount_script('ls-view', payload, True)}\n"
        "</body>\n</html>\n"
    )


def fragment(payload: dict) -> str:
    """HTML for a notebook output cell: a <div>, the styles and the script, inline.

    Plain <script> elements (no require.js, no widgets, no kernel comms), so classic
    Notebook, JupyterLab, VS Code and nbconvert's HTML all run it the same way. The
    renderers are included in every cell (about 70 kB): each output stands alone, also
    when it is copied or the notebook is opened without the cells above it."""
    dom_id = f"ls-view-{next(_ids)}-{id(payload) & 0xFFFFFF:x}"
    return (
        f"<div id=\"{dom_id}\" class=\"ls-root\" style=\"max-width:100%;overflow-x:auto\">"
        "<noscript>This view needs JavaScript (a trusted notebook).</noscript></div>"
        f"<style>{static_text('studio.css')}</style>"
        f"{_script(renderers_js())}{_mount_script(dom_id, payload, True)}"
    )


__all__ = ["standalone_html", "fragment", "static_text", "renderers_js", "payload_json", "STATIC_FILES",
           "VIEW_SCRIPTS"]
