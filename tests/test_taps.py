"""The order of hook names comes from one function (llama.taps.hook_order), and the model,
the capture file and the documentation all agree with it.

The model's order is checked against an independent witness: the order in which the taps
really fire during a forward pass (recorded by a plain `_tap_fn` on every module, not by
llama.hooks). The documented lists (docs/HOOKS.md's table and llama.hooks' docstring) are
parsed back from their text. A second model family, declared here with GPT-2's hook names,
shows that a new family needs no edit of llama/taps.py or llama/hooks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import llama.hooks
from llama.config import ModelArgs
from llama.hooks import load_capture, run_with_cache, save_capture
from llama.model import Transformer
from llama.source import hook_source
from llama.taps import (
    Child,
    TapDeclarationError,
    Tappable,
    hook_order,
    hook_point,
    model_class,
    model_class_name,
)
from tiny_models import TINY_CONFIGS, ours_from_hf, tiny_hf_model

ROOT = Path(__file__).resolve().parent.parent


def fired_order(model: nn.Module, tokens: torch.Tensor) -> list[str]:
    """Full names of the taps in the order a forward pass calls them."""
    fired: list[str] = []
    tappables = [(p, m) for p, m in model.named_modules() if isinstance(m, Tappable)]
    for prefix, module in tappables:
        module._tap_fn = lambda local, value, prefix=prefix: (
            fired.append(f"{prefix}.{local}" if prefix else local) or value)
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for _, module in tappables:
            module._tap_fn = None
        if hasattr(model, "reset_cache"):
            model.reset_cache()
    return fired


@pytest.mark.parametrize("kind", list(TINY_CONFIGS))
def test_model_order_is_the_order_taps_fire(kind):
    model = ours_from_hf(tiny_hf_model(kind))
    model.set_attention_impl("explicit")  # scores and probs fire only on this path
    tokens = torch.randint(0, model.args.vocab_size, (1, 5), generator=torch.Generator().manual_seed(0))
    names = model.hook_names()
    assert fired_order(model, tokens) == names
    assert names == hook_order(Transformer, n_layers=model.args.n_layers)  # from the class alone
    assert len(names) == 3 + 17 * model.args.n_layers


def _model(n_layers: int = 3) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelArgs(dim=32, n_layers=n_layers, n_heads=4, n_kv_heads=2,
                                 vocab_size=40, max_seq_len=16)).eval()


def test_capture_file_order_equals_the_model_and_the_docs(tmp_path):
    model = _model(n_layers=12)  # layers.10 sorts before layers.2 by name: order must be restored
    tokens = torch.tensor([[1, 2, 3, 4]])
    _, cache = run_with_cache(model, tokens)
    path = save_capture(tmp_path / "all.safetensors", cache, tokens=tokens, model=model)
    cap = load_capture(path)
    assert list(cap.tensors) == model.hook_names()
    assert cap.context["model_class"] == "llama.model:Transformer"
    assert cap.context["family"] == "llama" and cap.context["n_layers"] == 12
    # The same order as documented, layer by layer.
    documented = documented_table()
    per_layer = [n for n in documented if n.startswith("layers.i.")]
    expected = (documented[:1]
                + [n.replace("layers.i.", f"layers.{i}.") for i in range(12) for n in per_layer]
                + documented[1 + len(per_layer):])
    assert list(cap.tensors) == expected

    # Files written before the model class was recorded: config only, or nothing at all.
    older = save_capture(tmp_path / "old.safetensors", cache, config=model.args.to_dict())
    assert "model_class" not in load_capture(older).context
    assert list(load_capture(older).tensors) == model.hook_names()
    bare = save_capture(tmp_path / "bare.safetensors", {k: cache[k] for k in reversed(cache)})
    assert list(load_capture(bare).tensors) == model.hook_names()
    # Names that are no hook point follow the hook points, sorted.
    extra = save_capture(tmp_path / "extra.safetensors",
                         {"zeta": torch.zeros(1), "logits": cache["logits"],
                          "alpha": torch.zeros(1), "tok_embeddings": cache["tok_embeddings"]})
    assert list(load_capture(extra).tensors) == ["tok_embeddings", "logits", "alpha", "zeta"]


# ---------------------------------------------------------------------------------------
# The documented lists, parsed from their text
# ---------------------------------------------------------------------------------------


def _expand_siblings(first: str, rest: list[str]) -> list[str]:
    """"layers.i.attention.k" + ["v"] -> both full names (a sibling replaces the last part)."""
    stem = first.rsplit(".", 1)[0]
    return [first] + [f"{stem}.{r.lstrip('.')}" for r in rest]


def documented_table() -> list[str]:
    """Names in docs/HOOKS.md's hook-point table, in the order of its rows."""
    text = (ROOT / "docs" / "HOOKS.md").read_text(encoding="utf-8")
    section = text.split("## Hook points", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for row in re.findall(r"^\| (`[^|]*`) \|", section, re.M):
        cells = re.findall(r"`([^`]+)`", row)
        names += _expand_siblings(cells[0], cells[1:])
    return names


def documented_docstring() -> list[str]:
    """Names in llama.hooks' docstring list ("layers.i.attention.k / v" is two)."""
    names: list[str] = []
    for line in llama.hooks.__doc__.splitlines():
        m = re.match(r"^    ((?:tok_embeddings|norm|logits|layers\.i\.)[\w.]*(?: / \w+)*)\s+\(", line)
        if m:
            first, *rest = m.group(1).split(" / ")
            names += _expand_siblings(first, rest)
    return names


def test_documented_lists_are_the_forward_order():
    one_layer = [n.replace("layers.0.", "layers.i.") for n in hook_order(Transformer, n_layers=1)]
    assert documented_table() == one_layer
    assert documented_docstring() == one_layer


# ---------------------------------------------------------------------------------------
# A second model family plugs in without editing llama.taps or llama.hooks
# ---------------------------------------------------------------------------------------


class ToyAttention(Tappable):
    tap_points = ("q", "k", "v", "scores", "probs", "heads", "out")

    def __init__(self, d: int) -> None:
        super().__init__()
        self.wqkv = nn.Linear(d, 3 * d)
        self.wo = nn.Linear(d, d)
        self.impl = "explicit"

    def forward(self, x):
        q, k, v = (self.tap(n, t) for n, t in zip("qkv", self.wqkv(x).chunk(3, -1)))
        scores = self.tap("scores", q @ k.transpose(1, 2))
        probs = self.tap("probs", scores.softmax(-1))
        heads = self.tap("heads", probs @ v)
        return self.tap("out", self.wo(heads))


class ToyMLP(Tappable):
    tap_points = ("up", "act", "out")

    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        up = self.tap("up", self.c_fc(x))
        act = self.tap("act", torch.nn.functional.gelu(up))
        return self.tap("out", self.c_proj(act))


class ToyBlock(Tappable):
    tap_order = ("attention_norm", Child("attention", ToyAttention), "resid_mid",
                 "ffn_norm", Child("feed_forward", ToyMLP), "resid_post")

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attention, self.feed_forward = ToyAttention(d), ToyMLP(d)

    def forward(self, x):
        h = self.tap("resid_mid", x + self.attention(self.tap("attention_norm", self.ln_1(x))))
        return self.tap("resid_post", h + self.feed_forward(self.tap("ffn_norm", self.ln_2(h))))


class ToyArgs:
    n_layers = 2

    def to_dict(self):
        return {"n_layer": 2, "n_embd": 8}  # a family with its own config field names


class ToyGPT(Tappable):
    family = "toy-gpt2"
    tap_order = ("tok_embeddings", "pos_embeddings", Child("layers", ToyBlock, per_layer=True),
                 "norm", "logits")

    def __init__(self, d: int = 8, vocab: int = 11) -> None:
        super().__init__()
        self.args = ToyArgs()
        self.tok_embeddings, self.wpe = nn.Embedding(vocab, d), nn.Embedding(16, d)
        self.layers = nn.ModuleList(ToyBlock(d) for _ in range(self.args.n_layers))
        self.norm, self.output = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, tokens, start_pos=0):
        h = self.tap("tok_embeddings", self.tok_embeddings(tokens))
        h = self.tap("pos_embeddings", h + self.wpe(torch.arange(tokens.shape[1])))
        for layer in self.layers:
            h = layer(h)
        return self.tap("logits", self.output(self.tap("norm", self.norm(h))))

    def reset_cache(self):
        pass


GPT2_NAMES = (
    ["tok_embeddings", "pos_embeddings"]
    + [f"layers.{i}.{n}" for i in range(2) for n in (
        "attention_norm", "attention.q", "attention.k", "attention.v", "attention.scores",
        "attention.probs", "attention.heads", "attention.out", "resid_mid", "ffn_norm",
        "feed_forward.up", "feed_forward.act", "feed_forward.out", "resid_post")]
    + ["norm", "logits"]
)


def test_a_second_family_declares_its_own_order(tmp_path):
    model = ToyGPT().eval()
    tokens = torch.tensor([[1, 2, 3]])
    assert model.hook_names() == GPT2_NAMES == fired_order(model, tokens)
    assert hook_order(ToyGPT, n_layers=2) == GPT2_NAMES
    assert ToyBlock.tap_points == ("attention_norm", "resid_mid", "ffn_norm", "resid_post")
    # llama.hooks serves it as it is, and its capture file keeps its order.
    _, cache = run_with_cache(model, tokens, "layers.*")
    assert list(cache) == [n for n in GPT2_NAMES if n.startswith("layers.")]
    path = save_capture(tmp_path / "toy.safetensors", cache, tokens=tokens, model=model)
    cap = load_capture(path)
    assert cap.context["family"] == "toy-gpt2"
    assert cap.context["model_class"] == model_class_name(ToyGPT) == f"{__name__}:ToyGPT"
    assert list(cap.tensors) == list(cache)
    assert hook_point(model, "layers.1.feed_forward.act") == ("layers.1.feed_forward.act", ToyMLP, "act")
    # The source locator follows the family to its own file.
    line = hook_source("layers.1.attention.probs", ToyGPT)
    assert line.path == "tests/test_taps.py" and "scores.softmax(-1)" in line.text


def test_model_class_lookup_imports_only_this_project():
    assert model_class("llama.model:Transformer") is Transformer
    with pytest.raises(LookupError, match="no Tappable class 'system'"):
        model_class("os:system")  # already imported, but only a Tappable class is returned
    with pytest.raises(LookupError, match="not a model class of this project"):
        model_class("some_package_nowhere:Model")  # never imported on a file's say-so
    with pytest.raises(LookupError, match="no Tappable class"):
        model_class("llama.model:causal_mask")


def test_declaration_mistakes_are_caught_where_the_class_is_written():
    with pytest.raises(TapDeclarationError, match="disagrees"):
        type("Bad", (Tappable,), {"tap_points": ("a",), "tap_order": ("b",)})
    with pytest.raises(TapDeclarationError, match="needs a Tappable class"):
        type("Bad", (Tappable,), {"tap_order": ("a", Child("x", nn.Linear))})
    with pytest.raises(TapDeclarationError, match="twice"):
        type("Bad", (Tappable,), {"tap_points": ("a", "a")})
    # A module whose declared child is missing says so instead of listing wrong names.
    Holder = type("Holder", (Tappable,), {"tap_order": ("a", Child("inner", ToyMLP))})
    with pytest.raises(TapDeclarationError, match="not a Tappable module"):
        Holder().hook_names()
    with pytest.raises(TypeError, match="pass n_layers"):
        hook_order(Transformer)
    with pytest.raises(KeyError, match="no hook point 'layers.0.attention.prob'"):
        hook_point(Transformer, "layers.0.attention.prob")
