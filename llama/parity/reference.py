"""The transformers side of a parity run: load it, run it, read its intermediates.

transformers is optional for this project's users; everything here imports it inside the
functions and turns its absence into `ReferenceUnavailable` with the install command.
The model always runs with eager attention, so that `output_attentions` returns the
probabilities (the fused kernels do not have them).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .families import Family, family_for

INSTALL = 'pip install "transformers>=4.45"'


class ReferenceUnavailable(RuntimeError):
    """transformers is not installed, or cannot load this checkpoint (message says which)."""


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise ReferenceUnavailable(
            "llama-parity compares with Hugging Face transformers, which is not installed. "
            f"Install it with:\n    {INSTALL}\n(or `pip install -e '.[test]'` in a checkout)"
        ) from None
    return transformers


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or info logging from transformers while it loads."""
    transformers = require_transformers()
    logging = transformers.utils.logging
    before = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # Its GGUF reader draws a plain tqdm bar that the switch above does not reach.
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        with contextlib.suppress(Exception):
            gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        logging.set_verbosity(before)
        if bars:
            logging.enable_progress_bar()


@dataclass
class Reference:
    """A transformers model (eval mode, eager attention) and what it is."""

    model: torch.nn.Module
    family: Family
    description: str  # e.g. "transformers 5.24.0 LlamaForCausalLM from the same GGUF file"

    @property
    def config(self) -> Any:
        return self.model.config


def _from_pretrained_args(kind: str, where: Path) -> dict[str, Any]:
    if kind == "gguf":
        return {"pretrained_model_name_or_path": str(where.parent), "gguf_file": where.name}
    return {"pretrained_model_name_or_path": str(where)}


def load_reference(kind: str, where: str | Path, dtype: torch.dtype, ours: torch.nn.Module | None = None) -> Reference:
    """transformers' model for a checkpoint our loader reads as `kind` ("hf", "gguf",
    "meta") at `where` (weights.detect_format gives both).

    transformers reads HF folders and GGUF files itself. It cannot read Meta's .pth files:
    for those it gets the weights of our loaded model `ours`, converted to its layout by
    the family's own conversion (not weights.convert), so the forward passes are still
    independent, though the file reading is not.
    """
    transformers = require_transformers()
    where = Path(where)
    if kind == "meta":
        if ours is None:
            raise ReferenceUnavailable(
                "transformers cannot read Meta's consolidated.*.pth format; a comparison needs "
                "our loaded model to convert (or convert the folder with `llama-convert PATH OUT --to hf`)"
            )
        return reference_from_ours(ours, dtype)
    if kind not in ("hf", "gguf"):
        raise ReferenceUnavailable(f"transformers cannot read checkpoints of format {kind!r}")
    from transformers import AutoModelForCausalLM

    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(
                **_from_pretrained_args(kind, where), dtype=dtype, attn_implementation="eager"
            )
    except Exception as e:  # noqa: BLE001 - whatever transformers raises, say it plainly
        raise ReferenceUnavailable(
            f"transformers {transformers.__version__} could not load {where}: {type(e).__name__}: {_first_line(e)}"
        ) from e
    model.eval()
    family = _family(model)
    if kind == "gguf":
        what = "the same GGUF file (gguf_file=)"
    elif any(where.glob("*.safetensors")):
        what = "the same safetensors files"
    else:
        what = "the same pytorch_model.bin"
    return Reference(model, family, f"transformers {transformers.__version__} {type(model).__name__} from {what}, eager attention")


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or repr(e)
    return text.splitlines()[0][:400]


def _family(model: torch.nn.Module) -> Family:
    try:
        return family_for(model.config.model_type)
    except KeyError as e:
        raise ReferenceUnavailable(str(e.args[0])) from None


def reference_from_ours(ours: torch.nn.Module, dtype: torch.dtype) -> Reference:
    """transformers' model of our model's architecture holding our model's weights.

    Built on the meta device and given the converted tensors with assign=True, so it costs
    no memory beyond the q/k matrices whose rows it reorders (the rest is shared).
    """
    transformers = require_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = ours.args.to_hf_config()
    model_type = cfg.pop("model_type")
    cfg.pop("architectures", None)
    cfg.pop("torch_dtype", None)
    family = family_for(model_type)
    if family.to_reference_state is None:
        raise ReferenceUnavailable(f"the {family.name} parity table cannot convert our weights for transformers")
    with _quiet():
        config = AutoConfig.for_model(model_type, **cfg)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    state = family.to_reference_state(dict(ours.state_dict()), ours.args)
    state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    # Non-persistent buffers (the RoPE inverse frequencies) are not in any state dict:
    # they are still on the meta device. Build those modules again from the config.
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, type(module)(config=config))
    model.eval()
    return Reference(
        model,
        family,
        f"transformers {transformers.__version__} {type(model).__name__} holding our loaded weights, "
        "converted by llama.parity (transformers cannot read Meta's .pth files), eager attention",
    )


def load_reference_tokenizer(kind: str, where: str | Path):
    """transformers' tokenizer for the checkpoint (AutoTokenizer), or ReferenceUnavailable."""
    transformers = require_transformers()
    from transformers import AutoTokenizer

    where = Path(where)
    try:
        with _quiet():
            if kind == "gguf":
                return AutoTokenizer.from_pretrained(str(where.parent), gguf_file=where.name)
            return AutoTokenizer.from_pretrained(str(where))
    except Exception as e:  # noqa: BLE001
        raise ReferenceUnavailable(
            f"transformers {transformers.__version__} could not load the tokenizer of {where}: "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from e


# ---------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _plan(fam: Family, names: list[str], n_layers: int) -> dict[str, tuple[int | None, str, Any]]:
    plan = {}
    for name in names:
        found = fam.source(name, n_layers)
        if found is not None:
            plan[name] = found
    return plan


@contextlib.contextmanager
def _layer_hooks(fam: Family, layers: dict[int, torch.nn.Module], plan: dict, attn_weights: bool = False):
    """Forward hooks on the submodules of each decoder layer that the plan reads. Yields
    (raw, kwargs): raw[i]["self_attn.q_proj output"], kwargs[i] = the call kwargs of the
    family's `kwargs_of` module. Removed again whatever happens."""
    wanted: dict[int, set[str]] = {}  # layer -> module paths to hook
    for layer, local, src in plan.values():
        if layer is None or layer not in layers:
            continue
        if src.kind == "module":
            wanted.setdefault(layer, set()).add(src.module)
        elif src.kind == "derived":
            wanted.setdefault(layer, set()).update(fam.derived_needs)
        elif src.kind == "attentions" and attn_weights:
            wanted.setdefault(layer, set()).add(fam.attn_weights_of)
    raw: dict[int, dict[str, Any]] = {i: {} for i in layers}
    kwargs: dict[int, dict[str, Any]] = {}
    handles = []

    def kw_recorder(i: int):
        def hook(module, args, kw):
            kwargs[i] = dict(kw)
        return hook

    try:
        for i, paths in wanted.items():
            for path in paths:
                mod = layers[i].get_submodule(path) if path else layers[i]
                handles.append(mod.register_forward_hook(_recorder(raw[i], path)))
            if fam.kwargs_of:
                attn = layers[i].get_submodule(fam.kwargs_of)
                handles.append(attn.register_forward_pre_hook(kw_recorder(i), with_kwargs=True))
        yield raw, kwargs
    finally:
        for h in handles:
            h.remove()


def _recorder(into: dict[str, Any], path: str):
    """A forward hook keeping a module's first input and its output under "PATH input",
    "PATH output" (and "PATH output[1]": the attention probabilities of an attention module)."""

    def hook(module, args, output):
        if args:
            into[f"{path} input"] = _first(args).detach()
        into[f"{path} output"] = _first(output).detach()
        if isinstance(output, (tuple, list)) and len(output) > 1:
            into[f"{path} output[1]"] = output[1]

    return hook


@contextlib.contextmanager
def _top_hooks(model: torch.nn.Module, plan: dict):
    """Forward hooks on the modules outside the decoder layers that top-level points read
    (GPT-2's wte and wpe). Yields raw["transformer.wpe output"]; removed whatever happens."""
    raw: dict[str, Any] = {}
    paths = {src.module for layer, _, src in plan.values() if layer is None and src.kind == "module"}
    handles = [model.get_submodule(path).register_forward_hook(_recorder(raw, path)) for path in paths]
    try:
        yield raw
    finally:
        for h in handles:
            h.remove()


def _value(fam, src, layer, local, raw, kwargs, layers):
    if src.kind == "module":
        return raw[layer][f"{src.module} {src.io}"]
    if src.kind == "derived":
        return fam.derived[local](raw[layer], kwargs.get(layer, {}), layers[layer])
    raise KeyError(src.kind)


def trace(ref: Reference, ids: torch.Tensor, names: list[str], n_layers: int, head_dim: int) -> dict[str, torch.Tensor]:
    """transformers' values at our hook points `names`, in our layouts (float32, CPU).

    One forward with output_hidden_states / output_attentions, plus forward hooks on the
    submodules the family's table names.
    """
    fam = ref.family
    model = ref.model
    layer_list = model.get_submodule(fam.layers)
    layers = dict(enumerate(layer_list))
    plan = _plan(fam, names, n_layers)
    wants_probs = any(src.kind == "attentions" for _, _, src in plan.values())
    result: dict[str, torch.Tensor] = {}
    with _layer_hooks(fam, layers, plan) as (raw, kwargs), _top_hooks(model, plan) as top, torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, output_attentions=wants_probs, use_cache=False)
        for name, (layer, local, src) in plan.items():
            if src.kind == "hidden_states":
                value = out.hidden_states[src.index if layer is None else layer + src.index]
            elif src.kind == "attentions":
                value = out.attentions[layer]
            elif src.kind == "logits":
                value = out.logits
            elif layer is None:  # a module outside the layers (GPT-2's wte, wpe)
                value = top[f"{src.module} {src.io}"]
            else:
                value = _value(fam, src, layer, local, raw, kwargs, layers)
            result[name] = src.layout(value, head_dim).float().cpu()
    return result


def layer_trace(fam: Family, layer: torch.nn.Module, i: int, h: torch.Tensor, layer_kwargs: dict[str, Any],
                names: list[str], n_layers: int, head_dim: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One transformers decoder layer on input h (B, T, D), called as layer(h, **layer_kwargs)
    (the mask, and for RoPE families the positions and cos/sin): its values at our hook
    points `names` of layer i (our layouts, float32, CPU) and its output (for the next layer)."""
    plan = {n: v for n, v in _plan(fam, names, n_layers).items() if v[0] == i}
    result: dict[str, torch.Tensor] = {}
    with _layer_hooks(fam, {i: layer}, plan, attn_weights=True) as (raw, kwargs), torch.no_grad():
        out = _first(layer(h, **layer_kwargs))
        for name, (_, local, src) in plan.items():
            if src.kind == "hidden_states" or (src.kind == "module" and src.module == "" and src.io == "output"):
                value = out  # this layer's output is the residual after it
            elif src.kind == "attentions":
                value = raw[i][f"{fam.attn_weights_of} output[1]"]
            else:
                value = _value(fam, src, i, local, raw, kwargs, {i: layer})
            result[name] = src.layout(value, head_dim).float().cpu()
    return result, out


def cached_step(model: torch.nn.Module, ids: torch.Tensor, cache: Any = None) -> tuple[Any, Any]:
    """One forward of a transformers model through its KV cache: (output, the cache to pass
    next). transformers 5.x calls the cache argument and output field `cache` (it warns on
    `past_key_values`, its earlier name, and will drop it); older versions know only that."""
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=ids, use_cache=True, **({key: cache} if cache is not None else {}))
    new = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
    return out, new


def stepwise_logits(ref: Reference, ids: torch.Tensor) -> torch.Tensor:
    """Logits (1, T, V) from feeding ids one token at a time through transformers' cache."""
    cache = None
    steps = []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            out, cache = cached_step(ref.model, ids[:, t : t + 1], cache)
            steps.append(out.logits.float().cpu())
    return torch.cat(steps, dim=1)


def tied(ref: Reference) -> bool:
    out, emb = ref.model.get_output_embeddings(), ref.model.get_input_embeddings()
    return out is not None and out.weight is emb.weight


__all__ = [
    "INSTALL",
    "Reference",
    "ReferenceUnavailable",
    "require_transformers",
    "load_reference",
    "reference_from_ours",
    "load_reference_tokenizer",
    "trace",
    "layer_trace",
    "stepwise_logits",
    "cached_step",
]
