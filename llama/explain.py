"""A guided tour of one forward pass, with the real tensors of a prompt.

`walkthrough(model, tokenizer, prompt)` runs the prompt once with llama.hooks capturing
every intermediate of the chosen layers, and returns the stages of the forward pass in the
order the model computes them: tokenization, embedding lookup, and per layer RMSNorm,
q/k/v and the split into heads, RoPE, scores, causal mask, softmax, weighted sum, output
projection, residual, SwiGLU and the second residual; then the final norm, the logits and
the top-5 next tokens. `render(stages)` turns them into plain text for a terminal;
`scripts/explain.py` (the `llama-explain` command) is the thin command line over both.

Every stage names the source line that computes its value, as ``llama/model.py:LINE``, so a
learner can set a breakpoint there. The line numbers are never written down by hand:
`SourceMap` parses llama/model.py with `ast` and finds them, mostly from the
``self.tap("name", value)`` call sites (see `SourceMap.tap`), so they follow every edit.

Printed values follow one convention, which tests/test_explain.py relies on: a vector is
printed as ``<hook name>[<index>] = [v0, v1, ...]`` and a matrix as ``<hook name>[<index>] =``
followed by one line per row, ``<row label> | v0 v1 ...``; the hook name and index select
exactly the printed numbers from a llama.hooks capture of the same prompt.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from . import model as model_module
from .model import Transformer, causal_mask, repeat_kv, rope_inv_freq

# ==================================================================================
# Source locator: which line of llama/model.py computes a value
# ==================================================================================


class SourceLocatorError(LookupError):
    """The source no longer has the function, variable or tap a stage points at."""


@dataclass(frozen=True)
class SourceLine:
    """One statement of a source file: where it is and what it says."""

    path: str  # as printed: relative to the repository root, e.g. "llama/model.py"
    lineno: int  # first line of the statement (1-based), where a breakpoint goes
    end_lineno: int  # last line (a statement may span several)
    text: str  # the statement's source, lines joined, whitespace collapsed
    function: str  # qualified name of the enclosing function, e.g. "Attention.forward"

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}"


# Statements that do one thing (no nested body): the unit a breakpoint stops on.
_SIMPLE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)


class SourceMap:
    """Finds statements of a Python module by meaning rather than by line number.

    Built from source text, so tests can check that it follows edits (an inserted line
    shifts every answer by one). `SourceMap.of(module)` reads a module's own file.
    """

    def __init__(self, source: str, path: str = "llama/model.py") -> None:
        self.source = source
        self.path = path
        self._lines = source.splitlines()
        self._tree = ast.parse(source)
        # Qualified name ("Attention.forward", "causal_mask") -> function node.
        self._functions: dict[str, ast.FunctionDef] = {}
        for node in self._tree.body:
            if isinstance(node, ast.FunctionDef):
                self._functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self._functions[f"{node.name}.{item.name}"] = item

    @classmethod
    def of(cls, module=model_module) -> "SourceMap":
        """The map of a module's source file, with the path shown relative to the repo."""
        file = Path(inspect.getsourcefile(module)).resolve()
        return cls(file.read_text(encoding="utf-8"), display_path(file))

    # -- queries ----------------------------------------------------------------------
    def function(self, qualname: str) -> SourceLine:
        """The `def` line of a function or method."""
        return self._line(self._function(qualname), qualname)

    def tap(self, cls_name: str, local_name: str) -> SourceLine:
        """The line that computes the value passed to ``self.tap(local_name, value)``.

        If `value` is an expression (``self.tap("gate", self.w1(x))``) that is the tap's own
        line. If it is a plain variable (``self.tap("q", q)``), the value was computed by the
        last assignment to that variable before the tap's statement, in the same function
        (``q = self.wq(x).view(...)``): that is the line to stop on. A variable that is
        never assigned (a parameter) falls back to the tap's line.
        """
        hits = []
        for qualname, func in self._functions.items():
            if not qualname.startswith(f"{cls_name}."):
                continue
            for stmt in _simple_statements(func):
                for node in ast.walk(stmt):
                    if _is_tap_call(node, local_name):
                        hits.append((qualname, func, stmt, node.args[1]))
        if not hits:
            raise SourceLocatorError(
                f"no self.tap({local_name!r}, ...) call in class {cls_name} of {self.path}: "
                "was the hook point renamed? Update the stage list in llama/explain.py."
            )
        if len(hits) > 1:
            lines = ", ".join(str(s.lineno) for _, _, s, _ in hits)
            raise SourceLocatorError(
                f"{cls_name} taps {local_name!r} more than once ({self.path} lines {lines}); "
                "a hook name must be tapped in exactly one place."
            )
        qualname, func, stmt, value = hits[0]
        if isinstance(value, ast.Name):
            assigned = self._last_assignment(func, value.id, before=stmt.lineno)
            if assigned is not None:
                return self._line(assigned, qualname)
        return self._line(stmt, qualname)

    def assignment(self, qualname: str, var: str, which: str = "last") -> SourceLine:
        """The first or last statement in a function that assigns `var`."""
        func = self._function(qualname)
        stmts = [s for s in _simple_statements(func) if var in _assigned_names(s)]
        if not stmts:
            raise SourceLocatorError(f"{qualname} in {self.path} never assigns {var!r}")
        return self._line(stmts[0] if which == "first" else stmts[-1], qualname)

    def call(self, qualname: str, callee: str) -> SourceLine:
        """The first statement in a function that calls `callee` (``callee(...)`` or
        ``anything.callee(...)``)."""
        func = self._function(qualname)
        for stmt in _simple_statements(func):
            if any(_calls(node, callee) for node in ast.walk(stmt)):
                return self._line(stmt, qualname)
        raise SourceLocatorError(f"{qualname} in {self.path} never calls {callee}()")

    def matmul(self, qualname: str, left: str) -> SourceLine:
        """The first statement in a function that computes ``left @ ...``."""
        func = self._function(qualname)
        for stmt in _simple_statements(func):
            for node in ast.walk(stmt):
                if (
                    isinstance(node, ast.BinOp)
                    and isinstance(node.op, ast.MatMult)
                    and isinstance(node.left, ast.Name)
                    and node.left.id == left
                ):
                    return self._line(stmt, qualname)
        raise SourceLocatorError(f"{qualname} in {self.path} never computes {left} @ ...")

    # -- helpers ------------------------------------------------------------------------
    def _function(self, qualname: str) -> ast.FunctionDef:
        try:
            return self._functions[qualname]
        except KeyError:
            raise SourceLocatorError(
                f"{self.path} has no function {qualname}; known: "
                f"{', '.join(sorted(self._functions))}"
            ) from None

    def _last_assignment(self, func: ast.FunctionDef, var: str, before: int) -> ast.stmt | None:
        found = None
        for stmt in _simple_statements(func):
            if stmt.lineno < before and var in _assigned_names(stmt):
                if found is None or stmt.lineno > found.lineno:
                    found = stmt
        return found

    def _line(self, node: ast.AST, qualname: str) -> SourceLine:
        start, end = node.lineno, node.end_lineno or node.lineno
        if isinstance(node, ast.FunctionDef):
            end = start  # just the signature's first line, not the whole body
        text = " ".join(line.strip() for line in self._lines[start - 1 : end])
        return SourceLine(self.path, start, end, text, qualname)


def _simple_statements(func: ast.FunctionDef) -> list[ast.stmt]:
    """Every one-thing statement inside a function (also inside if/for/with bodies),
    in source order; nested function definitions are not entered."""
    out: list[ast.stmt] = []

    def visit(body: Iterable[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, _SIMPLE_STATEMENTS):
                out.append(stmt)
            elif not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for attr in ("body", "orelse", "finalbody"):
                    visit(getattr(stmt, attr, []))
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body)

    visit(func.body)
    return sorted(out, key=lambda s: s.lineno)


def _assigned_names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    else:
        return set()
    names = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


def _is_tap_call(node: ast.AST, local_name: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "tap"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
        and len(node.args) == 2
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == local_name
    )


def _calls(node: ast.AST, callee: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id == callee) or (
        isinstance(f, ast.Attribute) and f.attr == callee
    )


def display_path(file: Path) -> str:
    """A source path as a learner types it: relative to the repository root (the folder
    that holds the `llama` package), or absolute for a file elsewhere."""
    root = Path(model_module.__file__).resolve().parent.parent
    try:
        return Path(file).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(file)


def source_of(obj) -> SourceLine:
    """The `def` line of any function or method (e.g. the tokenizer's encode)."""
    obj = inspect.unwrap(obj)
    file = inspect.getsourcefile(obj)
    lines, start = inspect.getsourcelines(obj)
    # Skip decorators: the def line is the one a breakpoint on the function uses.
    offset = next((i for i, l in enumerate(lines) if l.lstrip().startswith("def ")), 0)
    return SourceLine(
        display_path(Path(file)),
        start + offset,
        start + offset,
        lines[offset].strip(),
        getattr(obj, "__qualname__", getattr(obj, "__name__", "?")),
    )


# ==================================================================================
# Stages: what the walkthrough prints
# ==================================================================================


class ExplainError(ValueError):
    """A request the walkthrough cannot serve (bad layer, head, pair, token or prompt)."""


@dataclass
class Stage:
    """One step of the forward pass: what it does, where, and the numbers."""

    title: str
    what: str  # one or two sentences on what the step does and why
    sources: list[tuple[str, SourceLine]]  # (what that line does, the line)
    body: list[str] = field(default_factory=list)  # formatted lines of values


@dataclass
class Walkthrough:
    """The stages of one forward pass, with what they were computed from."""

    prompt: str
    token_ids: list[int]
    pieces: list[str]
    layers: list[int]
    head: int
    pair: int
    position: int  # the token whose vectors are printed (and whose next token is predicted)
    header: list[str]
    stages: list[Stage]
    cache: dict  # the llama.hooks capture the values were read from (float32, CPU)

    def render(self) -> str:
        return render(self)


# -- number formatting: one place, so the text and the tests agree ----------------------

Index = tuple  # of int | slice


def format_index(index: Index) -> str:
    """(0, 3, slice(None, 6)) -> '0, 3, :6' (Python's own indexing syntax)."""

    def one(i) -> str:
        if isinstance(i, slice):
            start = "" if i.start in (None, 0) else str(i.start)
            stop = "" if i.stop is None else str(i.stop)
            return f"{start}:{stop}"
        return str(i)

    return ", ".join(one(i) for i in index)


def format_number(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    if math.isnan(x):
        return "nan"
    return f"{x:+.4f}"


def _vector_line(name: str, tensor: torch.Tensor, index: Index, note: str = "") -> str:
    values = tensor[index].reshape(-1).tolist()
    line = f"  {name}[{format_index(index)}] = [{', '.join(format_number(v) for v in values)}]"
    return f"{line}  {note}" if note else line


def _matrix_lines(
    name: str, tensor: torch.Tensor, index: Index, row_labels: Sequence[str], col_note: str
) -> list[str]:
    block = tensor[index]  # (rows, cols)
    width = max(len(label) for label in row_labels)
    out = [f"  {name}[{format_index(index)}] =   ({col_note})"]
    for label, row in zip(row_labels, block.tolist()):
        out.append(f"    {label:<{width}} | " + " ".join(f"{format_number(v):>8}" for v in row))
    return out


def _piece(piece: str, limit: int = 14) -> str:
    """A token piece, quoted and escaped (spaces and newlines must show), kept short."""
    shown = repr(piece)
    return shown if len(shown) <= limit else shown[: limit - 2] + "…" + shown[-1]


# -- the walkthrough ----------------------------------------------------------------------


def walkthrough(
    model: Transformer,
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
    pair: the RoPE dimension pair (dims 2*pair, 2*pair+1 of every head) whose angles are shown.
    position: the token whose vectors are printed and whose next token is predicted (-1: last).
    n_values: values printed from each vector; n_tokens: tokens shown in tables and matrices.
    """
    if not isinstance(model, Transformer):
        raise ExplainError(
            f"model must be a llama.model.Transformer, got {type(model).__name__}; "
            "load one with weights.load_model(path)"
        )
    if not isinstance(prompt, str) or not prompt:
        raise ExplainError('the prompt is empty: give some text, e.g. "Cricket is a"')
    a = model.args
    layer_ids = _check_layers(layers, a.n_layers)
    head = _check_range("head", head, a.n_heads, "query heads")
    pair = _check_range("pair", pair, a.head_dim // 2, "RoPE pairs per head (head_dim / 2)")
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
    labels = [f"t={i} {_piece(p)}" for i, p in enumerate(pieces)]
    lo = max(0, t - n_tokens + 1)  # the window of tokens shown: up to n_tokens ending at t
    window = slice(lo, t + 1)

    from .hooks import run_with_cache  # installs the hooks and always removes them

    # One forward pass, capturing only what is printed. (Capturing scores/probs makes
    # llama.hooks run those layers on the explicit attention path, and switch back after.)
    names = ["tok_embeddings", "norm", "logits"]
    for L in layer_ids:
        names += [n for n in model.hook_names() if n.startswith(f"layers.{L}.")]
        if L > 0:
            names.append(f"layers.{L - 1}.resid_post")  # the input of layer L
    tokens = torch.tensor([ids], device=model.tok_embeddings.weight.device)
    try:
        _, cache = run_with_cache(model, tokens, names=sorted(set(names)), dtype=torch.float32)
    finally:
        model.reset_cache()  # leave no half-used KV cache behind for the caller

    src = SourceMap.of(model_module)
    n_rep = a.n_heads // a.n_kv_heads
    g = head // n_rep  # the key/value head this query head reads
    nv = min(n_values, a.head_dim)
    vec = slice(None, n_values)  # the first n_values of a D- or F-sized vector
    hvec = slice(None, nv)

    header = [
        f"llama-explain: one forward pass of {prompt!r}",
        f"model: {model_label or 'Transformer'}  D={a.dim} H={a.n_heads} KV={a.n_kv_heads} "
        f"Hd={a.head_dim} F={a.hidden_dim} V={a.vocab_size}, {a.n_layers} layers, "
        f"weights {str(model.tok_embeddings.weight.dtype).replace('torch.', '')}",
        f"source: {Path(inspect.getsourcefile(model_module)).resolve()}",
        f"showing: layer(s) {', '.join(map(str, layer_ids))}; token t={t} {_piece(pieces[t])}; "
        f"head {head} (reads kv head {g}); RoPE pair {pair}; first {n_values} values of each vector",
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
    emb = cache["tok_embeddings"]
    body = [f"  tok_embeddings: {tuple(emb.shape)} = (B, T, D); each token id picks one row of "
            f"tok_embeddings.weight {tuple(model.tok_embeddings.weight.shape)} = (V, D)"]
    body += [_vector_line("tok_embeddings", emb, (0, i, vec), _piece(pieces[i]))
             for i in range(lo, t + 1)]
    stages.append(
        Stage(
            "Embedding lookup",
            "Each id becomes a D-dimensional vector: the start of the residual stream that every "
            "layer reads from and adds to.",
            [("lookup", src.tap("Transformer", "tok_embeddings"))],
            body,
        )
    )

    # ---- the chosen layers -------------------------------------------------------------
    for L in layer_ids:
        p = f"layers.{L}"
        x_name = "tok_embeddings" if L == 0 else f"layers.{L - 1}.resid_post"
        stages += _layer_stages(
            model, cache, src, L, p, x_name, t, head, g, pair, window, labels, vec, hvec
        )

    # ---- final norm, logits, top-5 ---------------------------------------------------------
    last = f"layers.{a.n_layers - 1}.resid_post"
    body = [f"  norm: {tuple(cache['norm'].shape)} = (B, T, D), the last layer's output "
            f"({last}) normalised once more"]
    body.append(_vector_line("norm", cache["norm"], (0, t, vec)))
    stages.append(
        Stage(
            "Final RMSNorm",
            "After the last layer the residual stream is normalised one more time.",
            [("final norm", src.tap("Transformer", "norm")),
             ("inside RMSNorm", src.call("RMSNorm.forward", "rsqrt"))],
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
        _vector_line("logits", logits, (0, t, vec)),
        f"  next token after t={t} {_piece(pieces[t])}: softmax(logits[0, {t}]), top 5:",
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
            [("logits", src.tap("Transformer", "logits"))],
            body,
        )
    )
    return Walkthrough(prompt, ids, pieces, layer_ids, head, pair, t, header, stages, cache)


def _layer_stages(model, cache, src, L, p, x_name, t, head, g, pair, window, labels, vec, hvec):
    """The stages inside one TransformerBlock."""
    a = model.args
    n_rep = a.n_heads // a.n_kv_heads
    lo, hi = window.start, window.stop
    rows = labels[window]
    att = f"{p}.attention"
    ff = f"{p}.feed_forward"
    stages: list[Stage] = []
    x = cache[x_name]
    T = x.shape[1]

    def norm_body(x_name, x, out_name, weight_name, weight):
        ms = x[0, t].double().pow(2).mean().item()
        return [
            _vector_line(x_name, x, (0, t, vec), "input: the residual stream"),
            f"  rms = sqrt(mean(x^2) + eps) = sqrt({ms:.6g} + {a.norm_eps:g}) = "
            f"{math.sqrt(ms + a.norm_eps):.6g}",
            _vector_line(weight_name, weight, (vec,), "learned per-channel scale"),
            _vector_line(out_name, cache[out_name], (0, t, vec), "= x / rms * weight"),
        ]

    # ---- RMSNorm before attention ----------------------------------------------------------
    layer = model.layers[L]
    stages.append(Stage(
        f"Layer {L}: RMSNorm before attention",
        "Scale each token's vector to unit root-mean-square, then by a learned weight, so "
        "attention sees inputs of a steady size.",
        [("attention_norm", src.tap("TransformerBlock", "attention_norm")),
         ("inside RMSNorm", src.call("RMSNorm.forward", "rsqrt"))],
        norm_body(x_name, x, f"{p}.attention_norm", f"{p}.attention_norm.weight",
                  layer.attention_norm.weight.detach().float().cpu()),
    ))

    # ---- q, k, v and the split into heads -----------------------------------------------------
    q, k, v = cache[f"{att}.q"], cache[f"{att}.k"], cache[f"{att}.v"]
    body = [
        f"  wq: D -> H*Hd = {a.dim} -> {a.n_heads * a.head_dim}, viewed as (B, T, H, Hd) = "
        f"{tuple(q.shape)}",
        f"  wk, wv: D -> KV*Hd = {a.dim} -> {a.n_kv_heads * a.head_dim}, viewed as (B, T, KV, Hd) = "
        f"{tuple(k.shape)}" + (f"; query head h reads kv head h // {n_rep}" if n_rep > 1 else ""),
        _vector_line(f"{att}.q", q, (0, t, head, hvec), f"query, head {head}"),
        _vector_line(f"{att}.k", k, (0, t, g, hvec), f"key, kv head {g}"),
        _vector_line(f"{att}.v", v, (0, t, g, hvec), f"value, kv head {g}"),
    ]
    stages.append(Stage(
        f"Layer {L}: q, k, v projections and the split into heads",
        "Three linear maps of the normalised vector: a query (what this token looks for), a "
        "key (what it offers) and a value (what it passes on). The last dimension is then "
        "cut into heads that attend independently.",
        [("query", src.tap("Attention", "q")), ("key", src.tap("Attention", "k")),
         ("value", src.tap("Attention", "v"))],
        body,
    ))

    # ---- RoPE -------------------------------------------------------------------------
    inv_freq = rope_inv_freq(a.head_dim, a.rope_theta, model.rope_scaling())
    freqs = model.freqs_cis[:T, pair].cpu()  # (T,) complex: e^{i angle} at each position
    q_rot = cache[f"{att}.q_rot"]
    d0, d1 = 2 * pair, 2 * pair + 1
    scaled = " with Llama 3 frequency scaling" if model.rope_scaling() else ""
    body = [
        f"  pair {pair} = dims ({d0}, {d1}) of every head; it turns by inv_freq[{pair}] = "
        f"{inv_freq[pair].item():.6g} rad per position (theta {a.rope_theta:g}{scaled})",
        f"  rope(pair={pair}, head={head}) =   (q pair before and after the turn by angle = "
        "position * inv_freq)",
        f"    {'':<{max(len(r) for r in rows)}} |    angle      cos      sin   q[{d0}]   q[{d1}]"
        f"  q_rot[{d0}] q_rot[{d1}]",
    ]
    width = max(len(r) for r in rows)
    for i, label in zip(range(lo, hi), rows):
        nums = [i * inv_freq[pair].item(), freqs[i].real.item(), freqs[i].imag.item(),
                q[0, i, head, d0].item(), q[0, i, head, d1].item(),
                q_rot[0, i, head, d0].item(), q_rot[0, i, head, d1].item()]
        body.append(f"    {label:<{width}} | " + " ".join(f"{format_number(n):>8}" for n in nums))
    body.append(_vector_line(f"{att}.q_rot", q_rot, (0, t, head, hvec), "all pairs turned"))
    body.append(_vector_line(f"{att}.k_rot", cache[f"{att}.k_rot"], (0, t, g, hvec),
                             "keys turn the same way"))
    stages.append(Stage(
        f"Layer {L}: rotary position embedding (RoPE)",
        "Position enters here and nowhere else: each pair of dimensions of q and k is turned "
        "by an angle proportional to the position, so q.k depends on how far apart two "
        "tokens are.",
        [("rotate q and k", src.tap("Attention", "q_rot")),
         ("angle table", src.assignment("precompute_freqs_cis", "angles")),
         ("the turn (complex multiply)", src.assignment("apply_rotary_emb", "q_out")),
         ("positions of this call", src.assignment("Transformer.forward", "freqs_cis"))],
        body,
    ))

    # ---- scores ------------------------------------------------------------------------
    scores = cache[f"{att}.scores"]
    body = [
        f"  scores: {tuple(scores.shape)} = (B, H, T, S); scores[b, h, t, s] = "
        f"q_rot[t] . k_rot[s] / sqrt({a.head_dim})",
        _vector_line(f"{att}.scores", scores, (0, head, t, window),
                     f"token t={t} against keys {lo}..{t}"),
    ]
    if n_rep > 1:
        body.append(f"  grouped-query attention: the {a.n_kv_heads} kv heads are repeated "
                    f"{n_rep} times so each query head has keys")
    stages.append(Stage(
        f"Layer {L}: attention scores",
        "How well each query matches each key: a dot product, divided by sqrt(Hd) so the "
        "softmax that follows is not too peaked.",
        [("scores", src.assignment("Attention.explicit_attention", "scores", "first")),
         ("share kv heads", src.call("Attention.explicit_attention", "repeat_kv"))],
        body,
    ))

    # ---- causal mask ---------------------------------------------------------------------
    mask = causal_mask(T, 0, torch.float32, torch.device("cpu"))
    body = []
    if mask is None:
        body.append("  a single token has nothing after it: causal_mask returns None")
    else:
        body += _matrix_lines("causal_mask", mask, (window, window), rows,
                              "row = query token, column = key token")
    body += _matrix_lines(f"{att}.scores", scores, (0, head, window, window), rows,
                          "scores + mask")
    stages.append(Stage(
        f"Layer {L}: causal mask",
        "A token may only look at itself and earlier tokens: -inf is added to every score "
        "of a later key, so softmax gives it probability 0.",
        [("add the mask", src.tap("Attention", "scores")),
         ("build the mask", src.call("causal_mask", "triu")),
         ("mask for this call", src.assignment("Transformer.forward", "mask"))],
        body,
    ))

    # ---- softmax -------------------------------------------------------------------------
    probs = cache[f"{att}.probs"]
    top_key = int(probs[0, head, t, : t + 1].argmax())
    body = _matrix_lines(f"{att}.probs", probs, (0, head, window, window), rows,
                         "each full row sums to 1")
    body.append(f"  token t={t} attends most to {labels[top_key]} "
                f"(p = {probs[0, head, t, top_key].item():.4f}) in head {head}")
    stages.append(Stage(
        f"Layer {L}: softmax",
        "Each row of scores becomes a probability distribution over the keys (in float32).",
        [("softmax", src.tap("Attention", "probs"))],
        body,
    ))

    # ---- weighted sum ---------------------------------------------------------------------
    heads = cache[f"{att}.heads"]
    # Recomputed here to show that heads is exactly this; in the weights' dtype, as the model
    # does it (the float32 capture holds bfloat16/float16 values exactly).
    dt = model.tok_embeddings.weight.dtype
    v_heads = repeat_kv(v.transpose(1, 2).to(dt), n_rep)  # (B, T, KV, Hd) -> (B, H, S, Hd)
    weighted = (probs.to(dt) @ v_heads).float()  # (B, H, T, S) @ (B, H, S, Hd) -> (B, H, T, Hd)
    diff = (weighted.transpose(1, 2) - heads).abs().max().item()
    body = [
        f"  weighted_sum = probs @ v: (B, H, T, S) @ (B, H, S, Hd) -> (B, H, T, Hd); "
        f"then transposed to heads (B, T, H, Hd) = {tuple(heads.shape)}",
        _vector_line("weighted_sum", weighted, (0, head, t, hvec), "probs @ v, recomputed here"),
        _vector_line(f"{att}.heads", heads, (0, t, head, hvec), "captured: the same numbers"),
        f"  max |probs @ v - heads| over every head and token = {diff:.2e}",
    ]
    stages.append(Stage(
        f"Layer {L}: weighted sum of values",
        "Each query's output is the average of the value vectors, weighted by its "
        "probabilities. (The default fast path computes the same in one fused call.)",
        [("probs @ v", src.matmul("Attention.explicit_attention", "probs")),
         ("fused path", src.call("Attention.forward", "scaled_dot_product_attention")),
         ("back to (B, T, H, Hd)", src.tap("Attention", "heads"))],
        body,
    ))

    # ---- output projection -----------------------------------------------------------------
    out = cache[f"{att}.out"]
    stages.append(Stage(
        f"Layer {L}: output projection",
        "The heads are laid side by side again (B, T, H*Hd) and wo mixes them back into "
        "the model width.",
        [("wo", src.tap("Attention", "out"))],
        [f"  heads (B, T, H, Hd) -> reshape (B, T, {a.n_heads * a.head_dim}) -> wo -> "
         f"{tuple(out.shape)} = (B, T, D)",
         _vector_line(f"{att}.out", out, (0, t, vec))],
    ))

    # ---- residual -------------------------------------------------------------------------
    mid = cache[f"{p}.resid_mid"]
    stages.append(Stage(
        f"Layer {L}: residual connection",
        "Attention's output is added to the residual stream, never replacing it.",
        [("x + attention", src.tap("TransformerBlock", "resid_mid"))],
        [_vector_line(x_name, x, (0, t, vec), "x"),
         _vector_line(f"{att}.out", out, (0, t, vec), "+ attention"),
         _vector_line(f"{p}.resid_mid", mid, (0, t, vec), "= h")],
    ))

    # ---- RMSNorm before the feed-forward ------------------------------------------------------
    stages.append(Stage(
        f"Layer {L}: RMSNorm before the feed-forward",
        "The same normalisation, with its own weight, on the updated stream.",
        [("ffn_norm", src.tap("TransformerBlock", "ffn_norm")),
         ("inside RMSNorm", src.call("RMSNorm.forward", "rsqrt"))],
        norm_body(f"{p}.resid_mid", mid, f"{p}.ffn_norm", f"{p}.ffn_norm.weight",
                  layer.ffn_norm.weight.detach().float().cpu()),
    ))

    # ---- SwiGLU -----------------------------------------------------------------------------
    gate, up, act = cache[f"{ff}.gate"], cache[f"{ff}.up"], cache[f"{ff}.act"]
    ff_out = cache[f"{ff}.out"]
    stages.append(Stage(
        f"Layer {L}: SwiGLU feed-forward",
        "Two projections up to F dimensions; silu(gate) decides how much of each 'up' "
        "feature passes; w2 projects back down to D.",
        [("gate = w1(x)", src.tap("FeedForward", "gate")),
         ("up = w3(x)", src.tap("FeedForward", "up")),
         ("silu(gate) * up", src.tap("FeedForward", "act")),
         ("down = w2(act)", src.tap("FeedForward", "out"))],
        [f"  w1, w3: D -> F = {a.dim} -> {a.hidden_dim}; w2: F -> D; gate, up, act are "
         f"{tuple(gate.shape)} = (B, T, F)",
         _vector_line(f"{ff}.gate", gate, (0, t, vec), "w1(x)"),
         _vector_line(f"{ff}.up", up, (0, t, vec), "w3(x)"),
         _vector_line(f"{ff}.act", act, (0, t, vec), "silu(gate) * up"),
         _vector_line(f"{ff}.out", ff_out, (0, t, vec), "w2(act), back to D")],
    ))

    # ---- second residual ----------------------------------------------------------------------
    post = cache[f"{p}.resid_post"]
    stages.append(Stage(
        f"Layer {L}: residual connection",
        "The feed-forward output is added to the stream: this is the layer's output.",
        [("h + feed_forward", src.tap("TransformerBlock", "resid_post"))],
        [_vector_line(f"{p}.resid_mid", mid, (0, t, vec), "h"),
         _vector_line(f"{ff}.out", ff_out, (0, t, vec), "+ feed-forward"),
         _vector_line(f"{p}.resid_post", post, (0, t, vec), f"= output of layer {L}")],
    ))
    return stages


def render(w: Walkthrough) -> str:
    """Plain text for a terminal: a header, then one section per stage."""
    out = list(w.header)
    for n, stage in enumerate(w.stages, 1):
        out += ["", f"[{n}] {stage.title}"]
        out += textwrap.wrap(stage.what, width=92, initial_indent="  ", subsequent_indent="  ")
        width = max(len(label) for label, _ in stage.sources)
        where = max(len(str(line)) for _, line in stage.sources)
        for label, line in stage.sources:
            out.append(f"  {label + ':':<{width + 1}} {str(line):<{where}}   {line.text}")
        out += stage.body
    return "\n".join(out) + "\n"


# -- argument checks -------------------------------------------------------------------------


def _check_range(what: str, value: int, n: int, of: str) -> int:
    """Accept 0..n-1 or Python-style negatives -n..-1; anything else is a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExplainError(f"{what} must be an integer, got {value!r}")
    if not -n <= value < n:
        raise ExplainError(
            f"{what} {value} is out of range: this model has {n} {of}, "
            f"so use 0..{n - 1} (or -1 for the last)"
        )
    return value % n


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
    "SourceLine",
    "SourceMap",
    "SourceLocatorError",
    "source_of",
    "display_path",
    "Stage",
    "Walkthrough",
    "ExplainError",
    "walkthrough",
    "render",
    "format_index",
    "format_number",
]
