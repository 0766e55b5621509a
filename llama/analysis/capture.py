"""Getting intermediates for the views: from a live model (through llama.hooks) or from an
exported capture (llama.hooks.load_capture), into one plain dict of float32 tensors.

The analysis functions take that dict, so a view of a saved export and a view of a model
run are computed by the same code from the same numbers.

Residual-stream "stages": stage 0 is the residual stream entering layers.0, stage i+1 is
layers.i.resid_post (what leaves block i). Which hook holds stage 0 depends on the model
family (llama.family: `residual_input`): tok_embeddings in a Llama, embeddings (token +
position) in GPT-2. Functions that read stages from a capture take it as `residual_input`
(default tok_embeddings); the registry passes the model's own. Blocks keep their hook-name
numbers (0-based) everywhere in this package, so "layer 3" always means layers.3.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch

from .common import AnalysisError, check_index

Cache = Mapping[str, torch.Tensor]


def run_and_capture(model: torch.nn.Module, tokens: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """One forward pass; the named intermediates as float32 CPU tensors (batch kept)."""
    # Imported here: the model-only views (summary, params, ...) need no hooks at all.
    from ..hooks import run_with_cache

    if tokens.dim() == 1:
        tokens = tokens[None]  # (T,) -> (1, T)
    with torch.no_grad():
        logits, cache = run_with_cache(model, tokens, names=list(names), to_cpu=True,
                                       dtype=torch.float32)
    out = dict(cache)
    out.setdefault("logits", logits.detach().float().cpu())
    return out


def get(cache: Cache, name: str, what: str) -> torch.Tensor:
    """cache[name] for batch element 0, or an AnalysisError saying what is missing."""
    if name not in cache:
        have = ", ".join(sorted(cache)[:6]) + (" ..." if len(cache) > 6 else "")
        raise AnalysisError(
            f"{what} needs the intermediate {name!r}, which this capture lacks "
            f"(it has: {have or 'nothing'}). Capture it, e.g. names=['{name}'], or run "
            "from the model instead of an export."
        )
    t = cache[name]
    return t[0]  # (B, ...) -> (...): the views show one sequence


def n_layers_in(cache: Cache) -> int:
    """Number of blocks a capture covers (highest layers.N index + 1)."""
    idx = [int(m.group(1)) for k in cache if (m := re.match(r"layers\.(\d+)\.", k))]
    return max(idx) + 1 if idx else 0


# Stage 0's hook in a Llama model; other families say theirs (llama.family.residual_input).
DEFAULT_RESIDUAL_INPUT = "tok_embeddings"


def stage_names(n_layers: int, residual_input: str = DEFAULT_RESIDUAL_INPUT) -> list[str]:
    """Hook name of each residual stage: residual_input (stage 0: tok_embeddings in a
    Llama, embeddings in GPT-2), layers.0.resid_post, ..."""
    return [residual_input] + [f"layers.{i}.resid_post" for i in range(n_layers)]


def stage_label(stage: int) -> str:
    """Short axis label of a residual stage."""
    return "embed" if stage == 0 else f"L{stage - 1}"


def parse_stages(spec: str | Sequence[int | str] | None, n_layers: int, default: int = 6) -> list[int]:
    """Residual stages from a user's spec: "emb,0,5,-1" (block numbers, emb = embeddings).

    Returns stage indices (0 = embeddings, i+1 = after block i). None: about `default`
    stages spread from the embeddings to the last block.
    """
    if spec is None:
        if n_layers + 1 <= default:
            return list(range(n_layers + 1))
        picks = {round(i * n_layers / (default - 1)) for i in range(default)}
        return sorted(picks)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    stages = []
    for item in items:
        s = str(item).strip().lower()
        if s in ("emb", "embed", "embeddings", "tok_embeddings"):
            stages.append(0)
            continue
        try:
            layer = int(s)
        except ValueError:
            raise AnalysisError(
                f"layer {item!r} is not a number: give block numbers 0..{n_layers - 1} "
                "(negative counts from the end) or 'emb' for the embeddings, e.g. emb,0,5,-1"
            ) from None
        try:
            stages.append(check_index(layer, n_layers, "layer", of="layers") + 1)
        except AnalysisError as e:
            raise AnalysisError(f"{e}, or 'emb' for the embeddings") from None
    if not stages:
        raise AnalysisError("no layers given: e.g. --layers emb,0,5,-1")
    return list(dict.fromkeys(stages))  # keep order, drop repeats


def residual_stages(cache: Cache, stages: Sequence[int], what: str,
                    residual_input: str = DEFAULT_RESIDUAL_INPUT) -> list[torch.Tensor]:
    """The residual vectors (T, D) at each requested stage."""
    if 0 in stages:
        check_residual_input(cache, residual_input, what)
    names = stage_names(n_layers_in(cache), residual_input)
    return [get(cache, names[s], what) for s in stages]


def check_residual_input(cache: Cache, residual_input: str, what: str) -> None:
    """Refuse to read the token embeddings as stage 0 of a model that adds position
    vectors to them before the first block: that would be silently wrong."""
    if residual_input == "tok_embeddings" and "pos_embeddings" in cache:
        raise AnalysisError(
            f"{what}: this capture holds pos_embeddings, so it comes from a model whose residual "
            "stream starts as token + position embeddings, not tok_embeddings alone: pass "
            "residual_input=llama.family.residual_input(model) (GPT-2: 'embeddings')"
        )


__all__ = ["Cache", "DEFAULT_RESIDUAL_INPUT", "run_and_capture", "get", "n_layers_in",
           "stage_names", "stage_label", "parse_stages", "residual_stages",
           "check_residual_input"]
