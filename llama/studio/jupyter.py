"""The studio's views inline in Jupyter (classic Notebook, JupyterLab, VS Code), offline.

    from llama.studio import Studio
    studio = Studio(model, tokenizer, name="SmolLM2-135M-Instruct")
    studio.lens("The capital of France is")          # a View: drawn inline
    studio.attention("The capital of France is")
    studio.summary(); studio.architecture(); studio.rope()
    studio.view("intervene", "The capital of France is", edit="ablate_head", layer=23, head=4)
    v = studio.topk("The capital of France is"); v.payload["candidates"][0]  # the numbers
    v.save("lens.html")                               # the same view as a standalone file
    studio.serve()                                     # the full page, from the notebook

A View's `_repr_html_` carries the renderers and the payload inline (export.fragment): no
server, no widget extension, no network, so the output also survives nbconvert to HTML.
"""

from __future__ import annotations

from pathlib import Path

from .engine import Engine
from .export import fragment, standalone_html


class View:
    """One view's payload, drawn inline by Jupyter; `.payload` holds the numbers."""

    def __init__(self, payload: dict) -> None:
        self.payload = payload

    @property
    def kind(self) -> str:
        return self.payload["kind"]

    def _repr_html_(self) -> str:
        return fragment(self.payload)

    def html(self) -> str:
        """A standalone HTML document of this view (what `save` writes)."""
        return standalone_html(self.payload)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        tokens = self.payload.get("tokens")
        about = f", {len(tokens)} tokens" if tokens else ""
        return f"<llama studio view {self.kind!r} of {self.payload.get('model', 'model')}{about}>"


class Studio:
    """The studio's views for a notebook or a script: one call, one View.

    The notebook's own client is one llama.session.Session, like a browser tab's. The
    notebook may run the model itself between two views (that is what notebooks are
    for); the library notices (every forward pass is counted) and the next view prefills
    its text again rather than trust keys and values that are no longer its own.
    """

    CLIENT = "notebook"

    def __init__(self, model, tokenizer, name: str = "model", engine: Engine | None = None) -> None:
        self.engine = engine or Engine(model, tokenizer, name=name)
        self._server = None

    def view(self, kind: str, text: str | None = None, **options) -> View:
        """Any view by name (`Studio.kinds()`); text views need `text`."""
        from .engine import KINDS, EngineError

        if kind not in KINDS:
            raise EngineError(f"unknown view {kind!r}; views: {', '.join(KINDS)}")
        if KINDS[kind].needs == "text":
            if not text:
                raise EngineError(f"the {kind} view needs a text: studio.view({kind!r}, \"The capital of France is\")")
            self.engine.set_text(self.CLIENT, text)
            return View(self.engine.view(self.CLIENT, kind, options))
        if text is not None:
            raise EngineError(f"the {kind} view shows the model only: call it without a text")
        return View(self.engine.view(None, kind, options))

    def kinds(self) -> list[str]:
        """The views that apply to this model (rope is Llama's, positions GPT-2's)."""
        from .engine import KINDS

        return [k for k in KINDS if self.engine.available(k)]

    # One method per view, for tab completion and help().
    def topk(self, text: str, **options) -> View:
        """Next-token table; options: show, temperature, top_k, top_p."""
        return self.view("topk", text, **options)

    def attention(self, text: str, **options) -> View:
        """Every layer x head, and one head enlarged; option: layer."""
        return self.view("attention", text, **options)

    def head_scores(self, text: str, **options) -> View:
        """Previous-token, first-token and induction score of every head; options: induction, length."""
        return self.view("head_scores", text, **options)

    def lens(self, text: str, **options) -> View:
        """Logit lens grid; option: k (candidates per cell)."""
        return self.view("lens", text, **options)

    def residual(self, text: str, **options) -> View:
        """PCA (2-D, 3-D), trajectories, activation norms; options: stages, skip_first."""
        return self.view("residual", text, **options)

    def embeddings(self, text: str, **options) -> View:
        """The text's token vectors in 3-D (PCA of the embedding rows); option: dims."""
        return self.view("embeddings", text, **options)

    def saliency(self, text: str, **options) -> View:
        """Input x gradient per token; options: position, target."""
        return self.view("saliency", text, **options)

    def dla(self, text: str, **options) -> View:
        """Direct logit attribution; options: position, target, contrast."""
        return self.view("dla", text, **options)

    def intervene(self, text: str, **options) -> View:
        """Ablate / steer / patch, top-k beside the clean run; options: edit, layer, head, ..."""
        return self.view("intervene", text, **options)

    def patching(self, text: str, corrupt: str, **options) -> View:
        """Activation patching map from a second prompt; options: site, answer, wrong, position."""
        return self.view("patching", text, corrupt=corrupt, **options)

    def ablation(self, text: str, **options) -> View:
        """Every head ablated on its own: the change of log p(target); options: mode, target."""
        return self.view("ablation", text, **options)

    def tour(self, text: str, **options) -> View:
        """The llama-explain walkthrough as pages; options: layer, head, pair, position."""
        return self.view("tour", text, **options)

    def summary(self) -> View:
        return self.view("summary")

    def architecture(self) -> View:
        return self.view("architecture")

    def params(self) -> View:
        return self.view("params")

    def rope(self, **options) -> View:
        """RoPE frequencies (Llama); option: positions."""
        return self.view("rope", **options)

    def positions(self, **options) -> View:
        """Learned position embeddings (GPT-2); option: positions."""
        return self.view("positions", **options)

    # -- the full page -------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the studio's server in the background on this engine; returns its URL."""
        from .server import StudioServer

        if self._server is None:
            self._server = StudioServer(self.engine, host, port).start()
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


__all__ = ["Studio", "View"]
