"""The experiments as view kinds of the registry that every front end reads
(llama.analysis.VIEW_KINDS), and the few choices those front ends share.

    llama-plot patching --prompt "The capital of France is" --corrupt "The capital of Italy is"
    llama-plot dla --prompt "The capital of France is" --heads --top 12
    llama-plot heads --prompt "The quick brown fox jumps over the lazy dog"
    llama-plot ablation --prompt "The capital of France is" --mode mean
    llama-plot steering --prompt "I think that you are" --plus " happy" --minus " sad" --layer 6

Each kind runs the model itself, with edits (never a capture file), and its numbers are
this package's: `patching`, `attribution`, `head_ablation_sweep`, `attention_head_scores`
and `induction_scores`, `steering_vector` and `steering_topk`. llama/plots/interp.py draws
them (llama.plots.draw).

Why here: llama.analysis sits below llama.interp (model <- hooks <- analysis <- interp <-
plots), so its registry cannot import these kinds. It names this module in
llama.analysis.registry.EXTENSIONS and imports it the first time VIEW_KINDS is read;
importing this module registers the kinds (register_view_kind). So VIEW_KINDS is the same
whatever was imported first, and `import llama.analysis` alone still pulls in nothing above it.

Shared with llama.session's experiments (the REPL's :patch, :dla, :ablate, :steer):
`token_option` reads a token as a user gives it ("#7042" or " Paris"), `top_token` is the
model's first choice, and `choose_answers` picks the two answers of a patching experiment
(by default: what the clean and the corrupted prompt each predict).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..analysis.registry import PROMPT, RESIDUAL_INPUT, Option, View, ViewKind, ViewSource, register_view_kind
from ..generate import ranked
from .ablation import MODES, head_ablation_sweep
from .attribution import attribution
from .common import HeadMap, InterpError, Prompt, answer_id, as_prompt, check_position, dims, token_label
from .head_scores import attention_head_scores, induction_scores
from .metrics import logit_diff_metric, logprob_metric
from .patching import KV_PARTS, SITES, patching
from .steering import HOW, steering_topk, steering_vector

# ----------------------------------------------------------------------------------
# Choices every front end makes the same way
# ----------------------------------------------------------------------------------


def token_option(value: Any, model: torch.nn.Module, tokenizer: Any = None, what: str = "answer") -> int:
    """A token as a user gives it: "#7042" (an id, as the next-token tables show it), an
    int id, or a text that is exactly one token (" Paris", with its leading space)."""
    if isinstance(value, str):
        word = value.strip()
        if word.startswith("#") and word[1:].isdigit():
            value = int(word[1:])
        elif tokenizer is None:
            raise InterpError(f"the {what} {value!r} is text, and there is no tokenizer to look "
                              "it up: give its token id as #ID")
    return answer_id(value, dims(model).vocab_size, tokenizer, what)


def top_token(model: torch.nn.Module, ids: Prompt, position: int = -1, tokenizer: Any = None) -> int:
    """The model's most likely next token after `position` of the prompt (ties: lower id,
    as every table ranks). Resets the model's KV cache."""
    tokens = as_prompt(model, ids, "prompt", tokenizer)
    pos = check_position(position, tokens.shape[1])
    try:
        with torch.no_grad():
            logits = model(tokens)[0, pos]  # (V,)
    finally:
        model.reset_cache()
    return int(ranked(logits, 1)[1][0])


def choose_answers(model: torch.nn.Module, clean: Prompt, corrupt: Prompt, answer: Any = None,
                   wrong: Any = None, tokenizer: Any = None) -> tuple[int, int]:
    """(answer, wrong answer) of a patching experiment, as token ids.

    Given ones are read with token_option; by default the answer is the clean prompt's top
    next token and the wrong answer the corrupted prompt's. Both the same is an error.
    """
    if answer is not None:
        a = token_option(answer, model, tokenizer)
    else:
        a = top_token(model, clean, tokenizer=tokenizer)
    if wrong is not None:
        w = token_option(wrong, model, tokenizer, "wrong answer")
    else:
        w = top_token(model, corrupt, tokenizer=tokenizer)
        if w == a:
            raise InterpError(
                f"the corrupted prompt's most likely next token is {token_label(a, tokenizer)!r} "
                "too, the clean prompt's answer: give the wrong answer to compare it with "
                "(the wrong option: one token's text or #ID), or a corrupted prompt that the "
                "model answers differently"
            )
    if a == w:
        raise InterpError(f"the answer and the wrong answer are the same token "
                          f"({token_label(a, tokenizer)!r}, id {a}): give two different ones")
    return a, w


def ordinary_token_range(vocab_size: int, tokenizer: Any = None) -> tuple[int, int]:
    """[low, high) of token ids without the special tokens at either end of the vocabulary
    (SmolLM2 keeps them first, Llama 3 last): where random test sequences are drawn from."""
    low, high = 0, vocab_size
    for i in sorted(set(getattr(tokenizer, "special_tokens", {}).values())):
        if i < vocab_size // 2:
            low = max(low, i + 1)
        else:
            high = min(high, i)
    return (low, high) if high - low >= 2 else (0, vocab_size)


def _starts_with_bos(ids: Sequence[int], tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_id", None)
    return bos is not None and bool(ids) and ids[0] == bos


# ----------------------------------------------------------------------------------
# The kinds: ViewSource + resolved options -> View
# ----------------------------------------------------------------------------------


def encode_like(tokenizer: Any, text: str, ids: Sequence[int]) -> list[int]:
    """Another prompt encoded the way `ids` were: with BOS if they start with it."""
    return list(tokenizer.encode(text, bos=_starts_with_bos(ids, tokenizer)))


def induction_for(model: torch.nn.Module, ids: Sequence[int], tokenizer: Any,
                  length: int | None = None) -> HeadMap:
    """Induction scores as the heads view measures them for a text: random tokens from the
    ordinary part of the vocabulary, after the text's BOS if it has one, fitting the context."""
    args = model.args
    prefix = list(ids[:1]) if _starts_with_bos(ids, tokenizer) else []
    room = (args.max_seq_len - len(prefix)) // 2  # prefix + R + R must fit the context
    length = length if length is not None else min(20, room)
    low, high = ordinary_token_range(args.vocab_size, tokenizer)
    return induction_scores(model, length=length, batch=4, seed=0, prefix=prefix, low=low, high=high)


def _other_prompt(src: ViewSource, text: str, what: str) -> list[int]:
    """Another prompt of the experiment, encoded as the view's own (with BOS if it has it)."""
    if src.tokenizer is None:
        raise InterpError(f"the {what} is text, and there is no tokenizer to encode it: give "
                          "the model's tokenizer (llama-plot --tokenizer PATH)")
    if not text:
        raise InterpError(f"the {what} is empty: give some text")
    return encode_like(src.tokenizer, text, src.ids)


def _patching(k: ViewKind, src: ViewSource, o: dict) -> View:
    model, tok = src.model, src.tokenizer
    corrupt = _other_prompt(src, o["corrupt"], "corrupted prompt")
    a, w = choose_answers(model, src.ids, corrupt, o["answer"], o["wrong"], tok)
    metric = logit_diff_metric(model, src.ids, corrupt, a, w, tokenizer=tok)
    result = patching(model, src.ids, corrupt, metric, site=o["site"], position=o["position"],
                      kv_part=o["kv_part"], tokenizer=tok)
    hooks = [h for layer in result.hooks for h in layer]
    return k.view(src, result, o, hooks, [a, w])


def _dla(k: ViewKind, src: ViewSource, o: dict) -> View:
    model, tok = src.model, src.tokenizer
    pos = check_position(o["position"], len(src.ids))
    a = token_option(o["answer"], model, tok) if o["answer"] is not None else top_token(model, src.ids, pos)
    target = a if o["wrong"] is None else (a, token_option(o["wrong"], model, tok, "wrong answer"))
    attr = attribution(model, src.ids, target, position=pos, tokenizer=tok)
    n = src.args.n_layers
    hooks = ["tok_embeddings"] + (["pos_embeddings"] if attr.pos_embed is not None else [])
    parts = ("attention.heads", "attention.out", "feed_forward.out")
    hooks += [f"layers.{i}.{p}" for i in range(n) for p in parts]
    hooks += [f"layers.{n - 1}.resid_post", "norm"]
    return k.view(src, attr, o, hooks, [i for i in attr.target if i is not None])


HEAD_SCORES = ("all", "previous-token", "first-token", "induction")


def _heads(k: ViewKind, src: ViewSource, o: dict) -> View:
    model, tok = src.model, src.tokenizer
    maps = []
    if o["score"] != "induction":
        scores = attention_head_scores(model, src.ids, tokenizer=tok)
        maps += [scores[name] for name in ("previous-token", "first-token") if o["score"] in ("all", name)]
    if o["score"] in ("all", "induction"):
        maps.append(induction_for(model, src.ids, tok, o["length"]))
    hooks = [f"layers.{i}.attention.probs" for i in range(src.args.n_layers)]
    return k.view(src, maps, o, hooks)


def _ablation(k: ViewKind, src: ViewSource, o: dict) -> View:
    model, tok = src.model, src.tokenizer
    pos = check_position(o["position"], len(src.ids))
    a = token_option(o["answer"], model, tok) if o["answer"] is not None else top_token(model, src.ids, pos)
    metric = logprob_metric(model, a, position=pos, tokenizer=tok)
    sweep = head_ablation_sweep(model, src.ids, metric, mode=o["mode"], tokenizer=tok)
    hooks = [f"layers.{i}.attention.heads" for i in range(src.args.n_layers)]
    return k.view(src, sweep, o, hooks, [a])


def _steering(k: ViewKind, src: ViewSource, o: dict) -> View:
    model, tok = src.model, src.tokenizer
    plus = _other_prompt(src, o["plus"], "prompt to steer toward (plus)")
    minus = _other_prompt(src, o["minus"], "prompt to steer away from (minus)")
    v = steering_vector(model, plus, minus, layer=o["layer"], how=o["how"], tokenizer=tok)
    cmp = steering_topk(model, src.ids, v, scale=o["scale"], k=o["k"], tokenizer=tok)
    return k.view(src, cmp, o, [v.hook], [c.id for c in cmp.before + cmp.after])


def _answer(help_: str) -> Option:
    return Option("answer", str, None, help_)


def _wrong(help_: str) -> Option:
    return Option("wrong", str, None, help_)


_EDITS = False, False, True  # captures, from_capture, uses_weights: runs the model with edits
_PATCHED = (RESIDUAL_INPUT, "layers.*.resid_mid", "layers.*.resid_post", "layers.*.attention.out",
            "layers.*.feed_forward.out", "layers.*.attention.heads", "layers.*.attention.k",
            "layers.*.attention.v", "logits")

KINDS = (
    ViewKind("patching", "activation patching", PROMPT, _PATCHED, *_EDITS, (
        Option("corrupt", str, None, "the corrupted prompt: as many tokens as the prompt, "
               "answered differently (e.g. 'The capital of Italy is')", required=True),
        _answer("the right answer: one token's text (' Paris') or #ID (default: the prompt's "
                "top next token)"),
        _wrong("the wrong answer (default: the corrupted prompt's top next token)"),
        Option("site", str, "resid_post", "what is patched: " + ", ".join(SITES), choices=tuple(SITES)),
        Option("position", int, None, "heads, kv_heads: patch only this position (default: all)"),
        Option("kv_part", str, "kv", "kv_heads: keys and values (kv), keys (k) or values (v)",
               choices=KV_PARTS),
    ), _patching, "the clean run's value copied into the corrupted run, one layer and "
       "position (or head) at a time: the normalised logit difference it restores"),
    ViewKind("dla", "direct logit attribution", PROMPT,
             ("tok_embeddings", "layers.*.attention.heads", "layers.*.attention.out",
              "layers.*.feed_forward.out", "norm", "logits"), *_EDITS, (
        _answer("the token whose logit is split (text or #ID; default: the top next token)"),
        _wrong("split the difference answer - wrong instead"),
        Option("position", int, -1, "position whose next-token logit is split (default -1, the last)"),
        Option("heads", bool, False, "split each attention output by head"),
        Option("top", int, None, "show only the N largest parts (the rest as one bar)", minimum=1),
    ), _dla, "the final residual's parts (embedding, each attention and MLP output) pushed "
       "through the final norm, its scale frozen, and the unembedding"),
    ViewKind("heads", "attention-head scores", PROMPT, ("layers.*.attention.probs",), *_EDITS, (
        Option("score", str, "all", "which score: previous-token, first-token (sink), induction "
               "(on random tokens repeated) or all", choices=HEAD_SCORES),
        Option("length", int, None, "induction: random tokens in each copy (default 20, fewer "
               "if the context is shorter)", minimum=2),
    ), _heads, "previous-token, first-token and induction score of every head"),
    ViewKind("ablation", "head ablation", PROMPT, ("layers.*.attention.heads",), *_EDITS, (
        Option("mode", str, "zero", "zero: each head's output set to 0; mean: to its average "
               "over the prompt", choices=MODES),
        _answer("the token whose log-probability is measured (default: the top next token)"),
        Option("position", int, -1, "position whose next token is measured (default -1, the last)"),
    ), _ablation, "log p(answer) with each head ablated on its own, as a change from the "
       "unablated run"),
    ViewKind("steering", "steering", PROMPT, ("layers.*.resid_post",), *_EDITS, (
        Option("plus", str, None, "the prompt the direction points toward (e.g. ' happy')",
               required=True),
        Option("minus", str, None, "the prompt it points away from (e.g. ' sad')", required=True),
        Option("layer", int, None, "the residual stream after this block gets the vector",
               required=True),
        Option("scale", float, 1.0, "how many times the vector is added"),
        Option("how", str, "mean", "mean: each prompt's residual averaged over its positions; "
               "last: at its last position", choices=HOW),
        Option("k", int, 10, "rows of the next-token tables", minimum=1),
    ), _steering, "the next-token table without and with a direction from two prompts added "
       "to the residual stream"),
)

for _kind in KINDS:
    register_view_kind(_kind)

__all__ = ["KINDS", "HEAD_SCORES", "token_option", "top_token", "choose_answers", "ordinary_token_range",
           "encode_like", "induction_for"]
