"""The Session's experiments: llama.interp run on the session's current text. No I/O.

llama.session.Session inherits these methods (they live here so that session.py stays one
file a reader follows); each returns a small dataclass for a front end to render:

    s.set_text("The capital of France is")
    s.ablate([(23, 4), (29, 1)])                     # AblationReport: the table without them
    s.patch("The capital of Italy is")                # PatchReport: a sweep and its top cells
    s.patch_at("The capital of Italy is", "heads", 23, head=4)   # PatchedRun: one patch's table
    s.dla()                                           # DLAReport: the top token's logit, in parts
    s.steer(" happy", " sad", layer=6, scale=1.0, generate=10)   # SteeringReport

The current text is the clean prompt. A corrupted prompt is encoded as typed text is (in
the chat template when chat is on), so that its tokens line up with the text's; the two
steering prompts are encoded plainly (with BOS where the text has it). Tables are the
session's own (`next_token_table` of the experiment's logits: settings.show rows, the
sampling columns included). Answers may be ids, "#ID" or one token's text
(llama.interp.token_option). The experiments run the model with edits and leave its KV
cache to be filled again: the text, its ids and logits stay as they were, and the next step
prefills (llama.generate.CachedContext notices that the model ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .interp import (
    InterpError,
    LogitAttribution,
    LogitDiffMetric,
    PatchResult,
    SteeredGeneration,
    SteeringVector,
    ablated_logits,
    attribution,
    choose_answers,
    logit_diff_metric,
    patched_logits,
    patching,
    site_hooks,
    steer,
    steered_generation,
    steering_vector,
    token_option,
    top_token,
)

if TYPE_CHECKING:  # the tables are llama.session's; that module imports this one
    from .session import Table


@dataclass(frozen=True)
class AblationReport:
    heads: tuple[tuple[int, int], ...]  # (layer, head), counted from 0
    mode: str  # "zero" or "mean" (the head's average over the text)
    clean: "Table"  # the text's table
    ablated: "Table"  # the same text with those heads ablated together
    top_prob: tuple[float, float]  # the clean top token's probability before and after


@dataclass(frozen=True)
class PatchCell:
    """One place of a patching sweep and its score."""

    layer: int
    column: int  # a position, a query head or a kv head (PatchResult.column_kind)
    score: float
    hooks: tuple[str, ...]  # the hook points edited
    clean_token: str | None = None  # position sites: the two prompts' tokens there
    corrupt_token: str | None = None
    query_heads: tuple[int, ...] | None = None  # kv heads: the query heads that read it


@dataclass(frozen=True)
class PatchReport:
    result: PatchResult  # the whole sweep (scores, labels, hooks)
    metric: LogitDiffMetric  # clean 1, corrupted 0
    top: tuple[PatchCell, ...]  # the best cells, best first


@dataclass(frozen=True)
class PatchedRun:
    """The corrupted prompt with one place patched from the text (the clean prompt)."""

    site: str
    layer: int
    position: int | None  # None: every position
    head: int | None  # heads / kv_heads
    hooks: tuple[str, ...]
    metric: LogitDiffMetric
    score: float  # the metric of this patched run
    corrupted: "Table"  # the corrupted prompt unpatched
    patched: "Table"


@dataclass(frozen=True)
class DLAReport:
    attribution: LogitAttribution  # every part, as arrays
    parts: tuple[tuple[str, float], ...]  # the largest parts by size, largest first
    rest: float  # the sum of the others
    n_parts: int  # all parts (the shown ones and the rest)


@dataclass(frozen=True)
class SteeringReport:
    vector: SteeringVector  # its layer, hook, how and norm
    scale: float
    before: "Table"  # the text's table
    after: "Table"  # with scale * vector added after its layer
    generation: SteeredGeneration | None  # steered continuation, when asked for
    seed: int | None  # the seed the continuation was sampled with (None: greedy)


class Experiments:
    """The experiment methods of llama.session.Session (see the module docstring)."""

    def _experiment(self) -> None:
        self._idle()
        self.require_text()

    def _plain_ids(self, text: str, what: str) -> list[int]:
        """Another prompt, encoded plainly, with BOS where the text has one."""
        if not text:
            raise InterpError(f"the {what} is empty: give some text")
        tok = self.tokenizer
        bos = tok.bos_id is not None and self._ids[0] == tok.bos_id
        return tok.encode(text, bos=bos)

    def ablate(self, heads: Sequence[tuple[int, int]], mode: str = "zero") -> AblationReport:
        """The next-token table with these (layer, head) pairs ablated together (their
        outputs set to 0, or with mode="mean" to their average over the text)."""
        self._experiment()
        with self.ctx.lock:
            logits = ablated_logits(self.model, self._ids, heads, mode=mode, tokenizer=self.tokenizer)
        a = self.model.args
        pairs = tuple((int(L) % a.n_layers, int(H) % a.n_heads) for L, H in heads)  # checked above
        after = self.next_token_table(logits=logits[0, -1])
        top = self.table.rows[0]
        top_after = float(torch.softmax(logits[0, -1].float(), -1)[top.id])
        return AblationReport(pairs, mode, self.table, after, (top.prob, top_after))

    def _answers(self, corrupt: str, answer: Any, wrong: Any) -> tuple[list[int], LogitDiffMetric]:
        bad = self.encode(corrupt)
        tok = self.tokenizer
        a = answer if answer is not None else self.table.rows[0].id  # the text's top token
        a, w = choose_answers(self.model, self._ids, bad, a, wrong, tok)
        return bad, logit_diff_metric(self.model, self._ids, bad, a, w, tokenizer=tok)

    def patch(self, corrupt: str, site: str = "resid_post", answer: Any = None, wrong: Any = None,
              *, position: int | None = None, kv_part: str = "kv", top: int = 5) -> PatchReport:
        """Patch the text's values into the `corrupt` prompt at every place of `site`
        (llama.interp.patching), scored by the normalised logit difference answer - wrong
        (defaults: the text's top token and the corrupted prompt's)."""
        self._experiment()
        with self.ctx.lock:
            bad, metric = self._answers(corrupt, answer, wrong)
            r = patching(self.model, self._ids, bad, metric, site=site, position=position,
                         kv_part=kv_part, tokenizer=self.tokenizer)
        cells = []
        for layer, col, score in r.top(top):
            by_position = r.column_kind == "position"
            cells.append(PatchCell(
                layer, col, score, tuple(r.hooks[layer]),
                r.clean_labels[col] if by_position else None,
                r.corrupt_labels[col] if by_position else None,
                tuple(r.query_heads[col]) if r.query_heads else None,
            ))
        return PatchReport(r, metric, tuple(cells))

    def patch_at(self, corrupt: str, site: str, layer: int, position: int | None = None,
                 head: int | None = None, answer: Any = None, wrong: Any = None,
                 kv_part: str = "kv") -> PatchedRun:
        """The corrupted prompt's table with one place patched from the text
        (llama.interp.patched_logits): a layer (and position) of a residual site, or a head."""
        self._experiment()
        m, tok = self.model, self.tokenizer
        with self.ctx.lock:
            bad, metric = self._answers(corrupt, answer, wrong)
            logits = patched_logits(m, self._ids, bad, site, layer, position=position, head=head,
                                    kv_part=kv_part, tokenizer=tok)
            try:
                with torch.no_grad():
                    plain = m(torch.tensor([bad], device=m.tok_embeddings.weight.device))[0, -1]  # (V,)
            finally:
                m.reset_cache()
        n = len(bad)
        layer = layer % m.args.n_layers  # (checked by patched_logits)
        position = None if position is None else position % n
        head = None if head is None else head % (m.args.n_heads if site == "heads" else m.args.n_kv_heads)
        return PatchedRun(site, layer, position, head, tuple(site_hooks(site, layer, kv_part, m)), metric,
                          metric(logits), self.next_token_table(logits=plain),
                          self.next_token_table(logits=logits[0, -1]))

    def dla(self, answer: Any = None, wrong: Any = None, *, position: int = -1,
            heads: bool = False, top: int = 8) -> DLAReport:
        """Direct logit attribution (llama.interp.attribution) of the answer's logit, or of
        answer - wrong, at `position`: by default the top token of the table."""
        self._experiment()
        m, tok = self.model, self.tokenizer
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise InterpError(f"the number of parts to show must be >= 1, got {top!r}")
        with self.ctx.lock:
            if answer is not None:
                a = token_option(answer, m, tok)
            elif position in (-1, len(self._ids) - 1):
                a = self.table.rows[0].id
            else:
                a = top_token(m, self._ids, position)
            target = a if wrong is None else (a, token_option(wrong, m, tok, "wrong answer"))
            attr = attribution(m, self._ids, target, position=position, tokenizer=tok)
        parts = sorted(attr.parts(heads=heads).items(), key=lambda kv: -abs(kv[1]))
        shown = tuple(parts[:top])
        return DLAReport(attr, shown, float(sum(v for _, v in parts[top:])), len(parts))

    def steer(self, plus: str, minus: str, layer: int, scale: float = 1.0, *, how: str = "mean",
              generate: int = 0) -> SteeringReport:
        """The table with the direction residual(plus) - residual(minus) after `layer`
        (llama.interp.steering_vector) added `scale` times, and optionally `generate`
        tokens of steered continuation (the session's sampling settings)."""
        self._experiment()
        m, tok, st = self.model, self.tokenizer, self.settings
        if isinstance(generate, bool) or not isinstance(generate, int) or generate < 0:
            raise InterpError(f"the number of tokens to generate must be >= 0, got {generate!r}")
        if generate and len(self._ids) >= self.max_len:  # as Session.generate says it
            raise InterpError(f"the context is full ({self.max_len} tokens): remove tokens to make "
                              "room for the steered continuation")
        with self.ctx.lock:
            v = steering_vector(m, self._plain_ids(plus, "first steering prompt"),
                                self._plain_ids(minus, "second steering prompt"), layer, how=how,
                                tokenizer=tok)
            try:
                with steer(m, v, scale), torch.no_grad():
                    logits = m(torch.tensor([self._ids], device=m.tok_embeddings.weight.device))[0, -1]
            finally:
                m.reset_cache()
            run, seed = None, None
            if generate:
                if st.temperature > 0:
                    seed = st.seed if st.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
                room = self.max_len - len(self._ids)
                run = steered_generation(m, self._ids, v, scale, min(generate, room), tokenizer=tok,
                                         temperature=st.temperature, top_k=st.top_k, top_p=st.top_p,
                                         seed=seed)
        return SteeringReport(v, float(scale), self.table, self.next_token_table(logits=logits), run, seed)


__all__ = ["Experiments", "AblationReport", "PatchCell", "PatchReport", "PatchedRun", "DLAReport",
           "SteeringReport"]
