"""A guided tour of one forward pass, with the real tensors of a prompt.

`walkthrough(model, tokenizer, prompt)` runs the prompt once with llama.hooks capturing
every intermediate of the chosen layers, and returns the stages of the forward pass in the
order the model computes them: tokenization, embedding lookup, and per layer RMSNorm,
q/k/v and the split into heads, RoPE, scores, causal mask, softmax, weighted sum, output
projection, residual, SwiGLU and the second residual; then the final norm, the logits and
the top-5 next tokens. A GPT-2 model (llama/gpt2.py) gets its own stages where its forward
differs (token + position embeddings, LayerNorm, the fused q/k/v projection, no RoPE, a
GELU MLP: llama/explain/gpt2.py), with the lines of llama/gpt2.py; `TOURS` says which
stages each model family gets. `render(stages)` turns them into plain text for a terminal;
`scripts/explain.py` (the `llama-explain` command) is the thin command line over both.

Every stage names the source line that computes its value, as ``llama/model.py:LINE`` (or
``llama/gpt2.py:LINE``), so a learner can set a breakpoint there. The line numbers are never
written down by hand: `llama.source.SourceMap` parses the model's file with `ast` and finds them, mostly from the
``self.tap("name", value)`` call sites (see `SourceMap.tap`), so they follow every edit.

One module per part: this one runs the pass and builds the stages around the blocks;
llama/explain/layer.py has one small function per stage inside a block (LAYER_STAGES);
llama/explain/text.py the Stage and Walkthrough records, number formatting and render();
the source locator is llama/source.py.

Printed values follow one convention, which tests/test_explain.py relies on: a vector is
printed as ``<hook name>[<index>] = [v0, v1, ...]`` and a matrix as ``<hook name>[<index>] =``
followed by one line per row, ``<row label> | v0 v1 ...``; the hook name and index select
exactly the printed numbers from a llama.hooks capture of the same prompt.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .. import model as model_module
from ..checks import check_index
from ..dtypes import dtype_name
from ..family import FamilyError, family_of
from .. import source
from ..source import SourceLine, SourceLocatorError, SourceMap, display_path, source_of  # noqa: F401 (re-exported)
from . import gpt2 as gpt2_stages
from .layer import LAYER_STAGES, LayerView
from .text import (
    ExplainError,
    Stage,
    Walkthrough,
    format_index,
    format_number,
    render,
    short_piece,
    vector_line,
)


@dataclass(frozen=True)
class Tour:
    """The stages a model family's walkthrough shows where families differ (the rest, the
    tokenization, final norm and logits, is the same code for every family)."""

    # (model, cache, source map, pieces, first shown token, token t, vector slice) -> Stage
    input_stage: Callable[..., Stage]
    layer_stages: tuple[Callable[[LayerView], Stage], ...]  # one block, in forward order
    rope: bool  # the model rotates q and k, so a RoPE pair can be shown (--pair)


def embedding_stage(model, cache, src, pieces, lo: int, t: int, vec: slice) -> Stage:
    """Llama: the token's row of tok_embeddings is the residual stream entering layers.0."""
    emb = cache["tok_embeddings"]
    body = [f"  tok_embeddings: {tuple(emb.shape)} = (B, T, D); each token id picks one row of "
            f"tok_embeddings.weight {tuple(model.tok_embeddings.weight.shape)} = (V, D)"]
    body += [vector_line("tok_embeddings", emb, (0, i, vec), short_piece(pieces[i]))
             for i in range(lo, t + 1)]
    return Stage(
        "Embedding lookup",
        "Each id becomes a D-dimensional vector: the start of the residual stream that every "
        "layer reads from and adds to.",
        [("lookup", src.tap(type(model).__name__, "tok_embeddings"))],
        body,
    )


# Which stages each model family (llama.family) gets.
TOURS: dict[str, Tour] = {
    "llama": Tour(embedding_stage, LAYER_STAGES, rope=True),
    "gpt2": Tour(gpt2_stages.embedding_stage, gpt2_stages.GPT2_LAYER_STAGES, rope=False),
}


def walkthrough(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    layers: Sequence[int] | str = (0,),
    head: int = 0,
    pair: int = 0,
    position: int = -1,
    n_values: int = 6,
    n_tokens: int = 6,
    model_label: str | None = None,
) -> Walkthrough:
    """Run `prompt` through `model` once and explain every stage with its real tensors.

    layers: layer indices to open up (negative counts from the end), or "all".
    head: the query head whose q, scores, probabilities and output are shown.
    pair: the RoPE dimension pair (dims 2*pair, 2*pair+1 of every head) whose angles are shown
        (a model without RoPE, GPT-2, has none: leave it at 0).
    position: the token whose vectors are printed and whose next token is predicted (-1: last).
    n_values: values printed from each vector; n_tokens: tokens shown in tables and matrices.
    """
    try:
        family = family_of(model) if isinstance(model, torch.nn.Module) else None
    except FamilyError:
        family = None
    if family is None or family.name not in TOURS:
        raise ExplainError(
            f"model must be a model of this project (llama.model.Transformer, llama.gpt2.GPT2), "
            f"got {type(model).__name__}; load one with weights.load_model(path)"
        )
    tour = TOURS[family.name]
    if not isinstance(prompt, str) or not prompt:
        raise ExplainError('the prompt is empty: give some text, e.g. "Cricket is a"')
    a = model.args
    layer_ids = _check_layers(layers, a.n_layers)
    head = _check_range("head", head, a.n_heads, "query heads")
    if tour.rope:
        pair = _check_range("pair", pair, a.head_dim // 2, "RoPE pairs per head (head_dim / 2)")
    elif pair != 0:
        raise ExplainError(
            f"{family.title} has no rotary position embedding, so there is no RoPE pair to show "
            "(leave out --pair): its positions are learned vectors added to the input"
        )
    if n_values < 1 or n_tokens < 1:
        raise ExplainError("n_values (--values) and n_tokens (--tokens) must be at least 1")

    ids = list(tokenizer.encode(prompt))
    if not ids:
        raise ExplainError(f"the prompt {prompt!r} encodes to no tokens: give some text")
    T = len(ids)
    if T > a.max_seq_len:
        raise ExplainError(
            f"the prompt is {T} tokens, more than the model's max_seq_len {a.max_seq_len}"
        )
    t = _check_range("token position", position, T, f"tokens in the prompt ({T})")
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    labels = [f"t={i} {short_piece(p)}" for i, p in enumerate(pieces)]
    lo = max(0, t - n_tokens + 1)  # the window of tokens shown: up to n_tokens ending at t
    window = slice(lo, t + 1)

    from ..hooks import run_with_cache  # installs the hooks and always removes them

    # One forward pass, capturing only what is printed. (Capturing scores/probs makes
    # llama.hooks run those layers on the explicit attention path, and switch back after.)
    # Everything outside the blocks (tok_embeddings, norm, logits; GPT-2's positions too).
    names = [n for n in model.hook_names() if not n.startswith("layers.")]
    for L in layer_ids:
        names += [n for n in model.hook_names() if n.startswith(f"layers.{L}.")]
        if L > 0:
            names.append(f"layers.{L - 1}.resid_post")  # the input of layer L
    tokens = torch.tensor([ids], device=model.tok_embeddings.weight.device)
    try:
        _, cache = run_with_cache(model, tokens, names=sorted(set(names)), dtype=torch.float32)
    finally:
        model.reset_cache()  # leave no half-used KV cache behind for the caller

    module = sys.modules[type(model).__module__]  # llama/model.py, llama/gpt2.py
    src = SourceMap.of(module)
    # llama/model.py's helpers (causal_mask) that another family's file imports.
    shared = None if module is model_module else SourceMap.of(model_module)
    n_rep = a.n_heads // a.n_kv_heads
    g = head // n_rep  # the key/value head this query head reads
    nv = min(n_values, a.head_dim)
    vec = slice(None, n_values)  # the first n_values of a D- or F-sized vector
    hvec = slice(None, nv)

    header = [
        f"llama-explain: one forward pass of {prompt!r}",
        f"model: {model_label or type(model).__name__}  D={a.dim} H={a.n_heads} KV={a.n_kv_heads} "
        f"Hd={a.head_dim} F={a.hidden_dim} V={a.vocab_size}, {a.n_layers} layers, "
        f"weights {dtype_name(model.tok_embeddings.weight.dtype)}",
        f"source: {Path(inspect.getsourcefile(module)).resolve()}",
        f"showing: layer(s) {', '.join(map(str, layer_ids))}; token t={t} {short_piece(pieces[t])}; "
        f"head {head} (reads kv head {g}); " + (f"RoPE pair {pair}; " if tour.rope else "")
        + f"first {n_values} values of each vector",
        "Shapes: B batch, T tokens, S keys (= T here), D width, H heads, KV key/value heads, "
        "Hd head size, F feed-forward size, V vocabulary.",
    ]
    stages: list[Stage] = []

    # ---- tokenization ------------------------------------------------------------------
    body = [f"  {prompt!r} -> {T} token ids, so tokens has shape (B, T) = (1, {T})"]
    width = max(len(str(i)) for i in ids)
    for i, (tid, p) in enumerate(zip(ids, pieces)):
        body.append(f"    t={i:<3} id {tid:>{width}}  {p!r}")
    stages.append(
        Stage(
            "Tokenization",
            "The tokenizer cuts the text into pieces from its vocabulary and gives each its id. "
            "The model never sees characters, only these ids.",
            [("encode", source_of(type(tokenizer).encode))],
            body,
        )
    )

    # ---- embedding ---------------------------------------------------------------------
    stages.append(tour.input_stage(model, cache, src, pieces, lo, t, vec))

    # ---- the chosen layers -------------------------------------------------------------
    for L in layer_ids:
        view = LayerView(model, cache, src, L, t, head, pair, window, labels, vec, hvec, shared)
        stages += [stage(view) for stage in tour.layer_stages]

    # ---- final norm, logits, top-5 ---------------------------------------------------------
    last = f"layers.{a.n_layers - 1}.resid_post"
    body = [f"  norm: {tuple(cache['norm'].shape)} = (B, T, D), the last layer's output "
            f"({last}) normalised once more"]
    body.append(vector_line("norm", cache["norm"], (0, t, vec)))
    cls, norm_cls = type(model).__name__, type(model.norm).__name__
    stages.append(
        Stage(
            f"Final {norm_cls}",
            "After the last layer the residual stream is normalised one more time.",
            [("final norm", src.tap(cls, "norm")),
             (f"inside {norm_cls}", src.call(f"{norm_cls}.forward", "rsqrt"))],
            body,
        )
    )
    logits = cache["logits"]
    probs = torch.softmax(logits[0, t].double(), dim=-1)
    top = torch.topk(probs, 5)
    tied = " (tied: the same matrix as tok_embeddings.weight)" if a.tie_embeddings else ""
    body = [
        f"  logits: {tuple(logits.shape)} = (B, T, V): output.weight {tuple(model.output.weight.shape)}"
        f"{tied} scores every vocabulary entry against the normalised vector",
        vector_line("logits", logits, (0, t, vec)),
        f"  next token after t={t} {short_piece(pieces[t])}: softmax(logits[0, {t}]), top 5:",
        "    rank      id  probability      logit  piece",
    ]
    for rank, (pr, tid) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        body.append(
            f"    {rank:>4} {tid:>7}  {pr:11.4f}  {format_number(logits[0, t, tid].item()):>9}  "
            f"{tokenizer.id_to_piece(tid)!r}"
        )
    stages.append(
        Stage(
            "Logits and the next token",
            "The output projection gives one score (logit) per vocabulary entry; softmax turns "
            "them into probabilities for the next token.",
            [("logits", src.tap(cls, "logits"))],
            body,
        )
    )
    return Walkthrough(prompt, ids, pieces, layer_ids, head, pair, t, header, stages, cache)


# -- argument checks -------------------------------------------------------------------------


def _check_range(what: str, value: int, n: int, of: str) -> int:
    """0..n-1 or Python-style negatives -n..-1 (llama.checks' wording), else ExplainError."""
    return check_index(value, n, what, of, error=ExplainError)


def _check_layers(layers: Sequence[int] | str, n_layers: int) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ExplainError(f"layers must be a list of indices or 'all', got {layers!r}")
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    if not layers:
        raise ExplainError("give at least one layer index (or 'all')")
    out = []
    for L in layers:
        L = _check_range("layer", L, n_layers, "layers")
        if L not in out:
            out.append(L)
    return sorted(out)


__all__ = [
    *source.__all__,  # the source locator, re-exported for the walkthrough's users
    "Tour",
    "TOURS",
    "Stage",
    "Walkthrough",
    "ExplainError",
    "walkthrough",
    "render",
    "format_index",
    "format_number",
]
