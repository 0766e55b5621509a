"""The studio: a live, offline explorer of a loaded model, in the browser and in Jupyter.

    llama-studio                                   # the page, on http://127.0.0.1:8765/
    from llama.studio import Studio                # the same views inline in a notebook

Layout (docs/STUDIO.md has the payload schemas and the reasons):

    engine/     the one adapter to the library: every view's numbers as JSON payloads
    server.py   the local HTTP server (standard library), JSON API + streamed generation
    export.py   a view as a standalone HTML file, or as a notebook output cell
    jupyter.py  Studio / View: the views inline in notebooks
    static/     the page (index.html, app.js), the renderers (views.js), the styles

Everything the page and the views need ships in static/; nothing asks any host but the
server (the page) or nothing at all (exports, notebooks).
"""

from __future__ import annotations


def __getattr__(name):  # lazy: `import llama.studio` stays cheap
    if name in ("Studio", "View"):
        from . import jupyter

        return getattr(jupyter, name)
    if name in ("Engine", "EngineError"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'llama.studio' has no attribute {name!r}")


__all__ = ["Studio", "View", "Engine", "EngineError"]
