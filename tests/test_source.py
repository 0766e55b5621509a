"""llama.source.hook_source: the model.py statement behind any hook name, for a model or
its class, following each class to its own source file (the studio shows this line next
to each view).

The witness is independent of the hook-name machinery: the line's text is read back from
the file and must hold the computation (softmax for probs, self.wq for q, ...).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llama import model as model_module
from llama.config import ModelArgs
from llama.model import Attention, Transformer
from llama.source import SourceLocatorError, SourceMap, hook_source

MODEL_LINES = Path(model_module.__file__).read_text(encoding="utf-8").splitlines()

# Hook name (layer 2 of 3) -> what the statement that computes it must contain.
COMPUTES = {
    "tok_embeddings": "self.tok_embeddings(tokens)",
    "layers.2.attention_norm": "self.attention_norm(x)",
    "layers.2.attention.q": "self.wq(x).view(",
    "layers.2.attention.k": "self.wk(x).view(",
    "layers.2.attention.v": "self.wv(x).view(",
    "layers.2.attention.q_rot": "apply_rotary_emb(q, k",
    "layers.2.attention.k_rot": "apply_rotary_emb(q, k",
    "layers.2.attention.scores": "scores + mask",
    "layers.2.attention.probs": "F.softmax(scores",
    "layers.2.attention.heads": "out.transpose(1, 2)",
    "layers.2.attention.out": "self.wo(",
    "layers.2.resid_mid": "x + self.attention(",
    "layers.2.ffn_norm": "self.ffn_norm(h)",
    "layers.2.feed_forward.gate": "self.w1(x)",
    "layers.2.feed_forward.up": "self.w3(x)",
    "layers.2.feed_forward.act": "F.silu(gate) * up",
    "layers.2.feed_forward.out": "self.w2(act)",
    "layers.2.resid_post": "h + self.feed_forward(",
    "norm": "self.norm(h)",
    "logits": "self.output(h)",
}


def _model() -> Transformer:
    return Transformer(ModelArgs(dim=32, n_layers=3, n_heads=4, vocab_size=40, max_seq_len=16))


def test_every_hook_name_of_a_layer_has_its_line():
    model = _model()
    assert {n for n in model.hook_names() if not n.startswith(("layers.0.", "layers.1."))} == set(COMPUTES)
    for name, computation in COMPUTES.items():
        for root in (model, Transformer):  # a built model or just its class
            line = hook_source(name, root)
            assert line.path == "llama/model.py", name
            assert computation in line.text, (name, line.text)
            assert line.text.startswith(MODEL_LINES[line.lineno - 1].strip()), name
            assert line.lineno <= line.end_lineno


def test_same_answer_as_the_walkthroughs_locator():
    src = SourceMap.of()
    assert hook_source("layers.1.attention.probs", Transformer) == src.tap("Attention", "probs")
    assert hook_source("layers.0.resid_post", Transformer) == src.tap("TransformerBlock", "resid_post")


def test_a_subclass_that_inherits_forward_points_at_the_base_class():
    class QuietAttention(Attention):  # defined here, without a tap of its own
        pass

    model = _model()
    model.layers[1].attention = QuietAttention(model.args)
    line = hook_source("layers.1.attention.probs", model)
    assert line.path == "llama/model.py" and "F.softmax(scores" in line.text


def test_unknown_names_and_untapped_classes():
    with pytest.raises(KeyError, match="no hook point 'layers.0.attention.prob'"):
        hook_source("layers.0.attention.prob", Transformer)
    from llama.taps import Tappable

    Silent = type("Silent", (Tappable,), {"tap_points": ("x",), "__module__": __name__})
    with pytest.raises(SourceLocatorError, match="cannot locate 'x'"):
        hook_source("x", Silent)
