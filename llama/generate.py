"""Next-token distributions, sampling and streaming generation, as small functions.

Nothing here is a method on the model: the model maps token ids to logits, and these
functions decide what to do with the logits.

    from llama.generate import generate
    for step in generate(model, "The capital of France is", 20, tokenizer=tok):
        print(step.text, end="", flush=True)

The pieces, in the order one generation step uses them:

    logits (V,) --next_token_probs(temperature)--> probs (V,)
                --top_k_top_p_filter(top_k, top_p)--> probs (V,), renormalised
                --sample(generator)--> token id
    temperature == 0 means greedy: the arg-max of the logits, no randomness at all.

Sampling draws from a `torch.Generator` seeded by the caller, so a seed reproduces the
same tokens exactly (on the same device and dtype). `CachedContext` keeps track of which
token ids the model's KV cache holds, so a prompt that extends what was already run costs
only the new tokens: the prompt is prefilled once, then each new token is one decode step.

One model may serve several contexts (a server with one session per browser tab): the KV
cache lives inside the model, so every context takes the model's lock (`model_lock`)
around each forward pass, and notices when the model ran for someone else since its own
last pass; it then prefills its own tokens again instead of trusting the cache.
"""

from __future__ import annotations

import math
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


class GenerationError(ValueError):
    """Bad arguments to a sampling or generation function."""


# ----------------------------------------------------------------------------------
# Argument checks: one place, with messages that say what to do
# ----------------------------------------------------------------------------------


def check_sampling_args(
    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None
) -> None:
    """Raise GenerationError unless temperature >= 0, top_k >= 1 (or None), 0 < top_p <= 1."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise GenerationError(f"temperature must be a number >= 0, got {temperature!r}")
    if not temperature >= 0 or temperature == float("inf"):  # `not >=` also catches NaN
        raise GenerationError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}"
        )
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
    ):
        raise GenerationError(f"top_k must be an integer >= 1 (or None = off), got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise GenerationError(
            f"top_p must be a number with 0 < top_p <= 1 (1 or None = off), got {top_p!r}"
        )


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise GenerationError(
            f"logits must be a floating-point tensor of shape (V,) or (B, V), got "
            f"{type(logits).__name__ if not isinstance(logits, torch.Tensor) else logits.dtype}"
        )
    if logits.dim() not in (1, 2):
        raise GenerationError(
            f"logits must have shape (V,) or (B, V), got {tuple(logits.shape)}; for a model's "
            "output (B, T, V) take the last position: logits[:, -1]"
        )
    return logits


# ----------------------------------------------------------------------------------
# From logits to a token
# ----------------------------------------------------------------------------------


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / temperature) in float32. (V,) or (B, V) -> same shape.

    Temperature < 1 sharpens the distribution, > 1 flattens it. Temperature 0 is the limit
    of ever sharper distributions: all the mass on the arg-max (the first one, on a tie).
    """
    check_sampling_args(temperature)
    logits = _check_logits(logits).float()  # float32 island: softmax of 16-bit logits is coarse
    if temperature == 0:
        one_hot = torch.zeros_like(logits)
        return one_hot.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.softmax(logits / temperature, dim=-1)


def ranked(values: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(largest values, their indices) along the last axis, largest first; k=None: all.

    A stable sort, so equal values keep index order: on a tie the lower token id ranks
    first, the same on every run and device. Every top-k table in the project ranks
    through this function (the REPL's, the plots', the logit lens').
    """
    sorted_v, order = torch.sort(values, dim=-1, descending=True, stable=True)  # (..., V)
    if k is not None:
        sorted_v, order = sorted_v[..., :k], order[..., :k]
    return sorted_v, order


def top_k_top_p_filter(
    probs: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Zero out all but the likeliest tokens and renormalise. (V,) or (B, V) -> same shape.

    top_k: keep the k most probable tokens.
    top_p: keep the smallest set of most probable tokens whose total probability reaches
        top_p ("nucleus" sampling); the most probable token is always kept.
    Both may be given; top-k is applied first, then top-p on what is left (as transformers
    does). On ties, the token with the lower id ranks first.
    """
    check_sampling_args(0.0, top_k, top_p)
    probs = _check_logits(probs)
    if top_k is None and (top_p is None or top_p >= 1):
        return probs
    sorted_p, order = ranked(probs)  # (..., V), equal probabilities in id order
    keep_sorted = torch.ones_like(sorted_p, dtype=torch.bool)
    if top_k is not None:
        keep_sorted[..., top_k:] = False
        sorted_p = sorted_p * keep_sorted
    if top_p is not None and top_p < 1:
        kept_mass = sorted_p.sum(-1, keepdim=True)
        # Mass of the tokens ranked *before* each one: a token is kept while that mass is
        # still short of top_p, so the token that crosses the threshold is kept too.
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        keep_sorted &= before < top_p * kept_mass
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to id order
    filtered = probs * keep
    return filtered / filtered.sum(-1, keepdim=True)


def sampling_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution a token is drawn from: temperature, then top-k, then top-p.

    (V,) or (B, V) -> same shape, float32, sums to 1. Temperature 0 puts all the mass on
    the arg-max (greedy decoding picks it whatever the filters say).
    """
    check_sampling_args(temperature, top_k, top_p)
    probs = next_token_probs(logits, temperature)
    if temperature == 0:
        return probs
    return top_k_top_p_filter(probs, top_k, top_p)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row from probs (V,) -> () or (B, V) -> (B,), int64."""
    probs = _check_logits(probs)
    if generator is not None and generator.device != probs.device:
        raise GenerationError(
            f"the generator is on {generator.device} but the probabilities are on "
            f"{probs.device}: make it with torch.Generator(device='{probs.device}')"
        )
    flat = probs.reshape(-1, probs.shape[-1])  # (V,) -> (1, V)
    ids = torch.multinomial(flat, 1, generator=generator).squeeze(-1)  # (B,)
    return ids.reshape(probs.shape[:-1])


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed` (or from the OS when seed is None)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GenerationError(f"seed must be a non-negative integer (or None), got {seed!r}")
    else:
        gen.manual_seed(seed)
    return gen


def choose_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One next token from the last position's logits (V,): greedy if temperature == 0."""
    check_sampling_args(temperature, top_k, top_p)
    logits = _check_logits(logits)
    if logits.dim() != 1:
        raise GenerationError(f"choose_token needs logits of shape (V,), got {tuple(logits.shape)}")
    if temperature == 0:
        return int(logits.argmax())  # greedy: top_k/top_p cannot change the arg-max
    return int(sample(sampling_probs(logits, temperature, top_k, top_p), generator))


@dataclass(frozen=True)
class Candidate:
    """One entry of a next-token table."""

    rank: int  # 1 = most probable
    id: int
    prob: float  # under softmax(logits), temperature 1, no filtering
    logit: float = math.nan
    # The chance of being drawn under the sampling settings top_candidates was given
    # (temperature, then top-k and top-p; 0 when filtered out); None when none were given.
    sample_prob: float | None = None


def top_candidates(
    logits: torch.Tensor,
    k: int = 10,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
) -> list[Candidate]:
    """The k most probable next tokens for logits (V,), best first (ties: lower id first).

    With a temperature (0 = greedy), each candidate also carries `sample_prob`, its chance
    under the sampling distribution (sampling_probs) for those settings: the raw and the
    sampled view of the same candidates, side by side.
    """
    logits = _check_logits(logits)
    if logits.dim() != 1:
        raise GenerationError(f"top_candidates needs logits of shape (V,), got {tuple(logits.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GenerationError(f"k must be an integer >= 1, got {k!r}")
    probs = next_token_probs(logits, 1.0)
    best, order = ranked(probs, min(k, probs.numel()))
    sampled = None
    if temperature is not None:
        sampled = sampling_probs(logits, temperature, top_k, top_p)[order].tolist()
    values = logits.float()[order].tolist()
    return [
        Candidate(
            rank=r + 1,
            id=int(i),
            prob=float(p),
            logit=values[r],
            sample_prob=None if sampled is None else float(sampled[r]),
        )
        for r, (p, i) in enumerate(zip(best.tolist(), order.tolist()))
    ]


# ----------------------------------------------------------------------------------
# Keeping track of the KV cache
# ----------------------------------------------------------------------------------


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading token ids a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _ModelUse:
    """What every CachedContext over one model shares: its lock and a change counter."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # Bumped by every forward pass (a pre-hook) and every cache reset made here. A
        # context that saw the counter at n after its own pass knows, when it still reads
        # n, that nobody else has touched the KV cache since.
        self.changes = 0


# Keyed by the model itself, weakly: nothing is stored on the model (it still pickles and
# deep-copies as before), and the record goes when the model does.
_USES: "weakref.WeakKeyDictionary[torch.nn.Module, _ModelUse]" = weakref.WeakKeyDictionary()
_USES_LOCK = threading.Lock()


def _count_forward(module: torch.nn.Module, args) -> None:
    """Forward pre-hook: one more pass of this model (whoever ran it, however)."""
    use = _USES.get(module)
    if use is not None:  # a deep copy inherits the hook but has no record: nothing to do
        use.changes += 1


def _model_use(model: torch.nn.Module) -> _ModelUse:
    with _USES_LOCK:
        use = _USES.get(model)
        if use is None:
            use = _USES[model] = _ModelUse()
            model.register_forward_pre_hook(_count_forward)
        return use


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The lock to hold around any call of `model` while contexts share it.

    The KV cache is state inside the model, so two threads running one model at the same
    time would write into each other's cache. Every CachedContext (and llama.session's
    Session) takes this lock around each forward pass; code of your own that runs a
    shared model from another thread should take it too. It is re-entrant.
    """
    return _model_use(model).lock


class CachedContext:
    """Which token ids the model's KV cache holds, so work is never done twice.

    The model's cache only knows how many positions it holds; this object remembers which
    ids they were. `logits_for(ids)` runs only the part of `ids` that the cache does not
    hold already: a prompt that extends the previous one costs its new tokens, one more
    token costs one decode step, and an edited prompt rewinds the cache to the common
    prefix (the cache is overwritten from start_pos on).

    Interrupt safety: `self.ids` is shortened to the part that stays valid *before* the
    model runs and lengthened only after it finishes, so a Ctrl-C in the middle leaves a
    record that is still true (a forward pass at start_pos never touches positions before
    start_pos).

    Sharing: several contexts may use one model (each forward pass holds model_lock). A
    context notices when the model ran since its own last pass (another context, a
    capture, any direct call) or its cache was reset, and then runs its ids again from
    position 0 rather than trust keys and values that are now someone else's.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._use = _model_use(model)
        self.ids: list[int] = []  # ids whose keys/values are in the cache, in order
        self._seen = -1  # the change counter right after this context's last own pass

    @property
    def lock(self) -> threading.RLock:
        return self._use.lock

    def holds_cache(self) -> bool:
        """True while the model's KV cache still holds this context's `ids`."""
        return self._seen == self._use.changes and self.model.cache_length >= len(self.ids)

    def forget(self) -> None:
        """Empty the model's KV cache and the record of it: start afresh."""
        with self._use.lock:
            self.ids = []
            self.model.reset_cache()
            self._use.changes += 1  # other contexts' records are void now
            self._seen = self._use.changes

    def rewind(self, n: int) -> None:
        """Keep only the first n cached tokens (the next call recomputes from there)."""
        self.ids = self.ids[: max(0, n)]

    @contextmanager
    def full_run(self, ids: Sequence[int]) -> Iterator[None]:
        """For code that runs the model itself on all of `ids` from position 0 (a capture
        for a plot, say), holding the model's lock throughout: afterwards the cache holds
        exactly `ids`. If that code fails or is interrupted, the record says "nothing
        cached", which is always true."""
        with self._use.lock:
            self.ids = []
            yield
            self.ids = [int(i) for i in ids]
            self._seen = self._use.changes

    @property
    def max_len(self) -> int:
        return int(self.model.args.max_seq_len)

    def logits_for(self, ids: Sequence[int]) -> torch.Tensor:
        """Next-token logits (V,) after `ids`, running only the tokens not cached yet."""
        ids = list(map(int, ids))
        if not ids:
            raise GenerationError("no tokens to run: give at least one token id")
        if len(ids) > self.max_len:
            raise GenerationError(
                f"{len(ids)} tokens do not fit the model's context of {self.max_len} tokens: "
                "shorten the text"
            )
        use = self._use
        with use.lock:
            if not self.holds_cache():
                self.ids = []  # the model ran for someone else: our keys may be gone
            # Reuse the common prefix, but always run at least the last token: its logits
            # are what we want, and the cache holds keys and values, not logits. The usual
            # case, ids extending what is cached (generation), is one list comparison in C.
            cached = len(self.ids)
            shared = cached if ids[:cached] == self.ids else common_prefix_length(self.ids, ids)
            start = min(shared, len(ids) - 1)
            self.ids = self.ids[:start]  # valid whatever happens below
            device = self.model.tok_embeddings.weight.device
            new = torch.tensor([ids[start:]], dtype=torch.long, device=device)  # (1, T)
            before = use.changes
            try:
                with torch.no_grad():
                    logits = self.model(new, start_pos=start, last_only=True)  # (1, 1, V)
            finally:
                # Only our own pass ran (we hold the lock): positions before `start` are
                # still ours, even if the pass was interrupted.
                if use.changes == before + 1:
                    self._seen = use.changes
            self.ids = ids
        return logits[0, -1]  # (V,)


# ----------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token, as `generate` yields it.

    At the very end, if the last tokens left an incomplete UTF-8 character in the stream
    decoder, one more item with id -1 carries its text (U+FFFD, as `decode` would show it).
    """

    id: int
    text: str  # the new text it completes ("" while a multi-byte character is incomplete)
    prob: float  # probability under the model (softmax of the logits, temperature 1)
    is_stop: bool  # a stop token (end of turn / document): generation ends after it


def generate(
    model: torch.nn.Module,
    prompt: str | Sequence[int],
    max_new_tokens: int,
    *,
    tokenizer=None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_ids: Sequence[int] | None = None,
    context: CachedContext | None = None,
) -> Iterator[GeneratedToken]:
    """Yield up to max_new_tokens tokens continuing `prompt`, one at a time, as they come.

    prompt: text (needs `tokenizer`; encoded with BOS as the model's tokenizer does) or a
        list of token ids.
    temperature 0 (the default) is greedy decoding; otherwise tokens are sampled from
        softmax(logits / temperature), restricted by top_k / top_p.
    seed / generator: where the randomness comes from; the same seed gives the same
        tokens. Without either, sampling is seeded from the OS.
    stop_ids: generation ends after yielding one of these (default: the tokenizer's
        stop_ids; none without a tokenizer). The stop token is yielded with is_stop=True
        and empty text.
    context: a CachedContext to reuse, e.g. a Session's; by default a fresh one (the
        prompt runs from position 0). The prompt is prefilled once, then each new token is
        a single decode step through the KV cache, each under the model's lock, so other
        contexts on the same model can run between the steps. Generation also ends when the model's
        context (max_seq_len) is full.

    Text is decoded incrementally with the tokenizer's stream decoder, so a character split
    over several tokens appears once it is complete.
    """
    check_sampling_args(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if isinstance(prompt, str):
        if tokenizer is None:
            raise GenerationError("a text prompt needs a tokenizer: pass tokenizer=..., or token ids")
        ids = list(tokenizer.encode(prompt))  # our own list: generation appends to it
    else:
        ids = [int(i) for i in prompt]
    if not ids:
        raise GenerationError("the prompt is empty: give at least one token")
    if stop_ids is None:
        stop_ids = tokenizer.stop_ids if tokenizer is not None else ()
    stop = set(int(i) for i in stop_ids)
    if temperature > 0 and generator is None:
        device = model.tok_embeddings.weight.device
        generator = make_generator(seed, device)
    ctx = context if context is not None else CachedContext(model)
    decoder = tokenizer.stream_decoder(skip_special=True) if tokenizer is not None else None

    for _ in range(max_new_tokens):
        if len(ids) >= ctx.max_len:
            break  # the context is full: no position left for another token
        logits = ctx.logits_for(ids)  # (V,); prefill the first time, one decode step after
        token = choose_token(logits, temperature, top_k, top_p, generator)
        prob = float(torch.softmax(logits.float(), dim=-1)[token])
        ids.append(token)  # the context keeps its own copy
        text = decoder.push(token) if decoder is not None else ""
        is_stop = token in stop
        yield GeneratedToken(id=token, text=text, prob=prob, is_stop=is_stop)
        if is_stop:
            break
    if decoder is not None:
        rest = decoder.flush()  # an incomplete character at the very end
        if rest:
            yield GeneratedToken(id=-1, text=rest, prob=float("nan"), is_stop=False)


def generate_ids(model: torch.nn.Module, prompt_ids: Sequence[int], max_new_tokens: int, **kwargs) -> list[int]:
    """The generated token ids (stop token included, as transformers' generate does)."""
    return [t.id for t in generate(model, prompt_ids, max_new_tokens, **kwargs) if t.id >= 0]


def generate_text(model: torch.nn.Module, prompt: str, max_new_tokens: int, *, tokenizer, **kwargs) -> str:
    """The generated text (without the prompt)."""
    return "".join(t.text for t in generate(model, prompt, max_new_tokens, tokenizer=tokenizer, **kwargs))


__all__ = [
    "GenerationError",
    "check_sampling_args",
    "next_token_probs",
    "top_k_top_p_filter",
    "sample",
    "make_generator",
    "choose_token",
    "ranked",
    "sampling_probs",
    "Candidate",
    "top_candidates",
    "common_prefix_length",
    "model_lock",
    "CachedContext",
    "GeneratedToken",
    "generate",
    "generate_ids",
    "generate_text",
]
