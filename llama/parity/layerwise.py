"""Layer by layer: a parity run for a model too big to hold twice (or even once).

Only one decoder layer of each side is in memory at a time, plus the embedding and output
matrices. For every layer, every prompt:

    ours(h_ref)    -> our hook points for this layer, given transformers' input   (compared)
    theirs(h_ref)  -> transformers' values; its output becomes the next h_ref
    ours(h_ours)   -> our own running residual, so the final logits are really ours

so the point-by-point comparison feeds both sides the same input (a difference is that
layer's own, not inherited), and the max |logit difference| is still end to end. Decoding
through the KV cache is not compared in this mode (the table shows "-").

Weights: ours come from the checkpoint reader (`weights.open_checkpoint(path).read`,
handed in as `ckpt`: this module never imports weights). transformers' layers are built
from its own config and, for a Hugging Face folder, read from the safetensors files by
their Hugging Face names; for GGUF and Meta files they get our reader's tensors converted
by the family table (as in reference_from_ours), so in those formats this mode checks
the forward code, not the file reading.

Family-specific for now: our side calls llama.model's TransformerBlock(x, start_pos,
freqs_cis, mask) and builds the RoPE table; a GPT-2 layer (issue 16) needs its own call.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..hooks import capture
from ..hooks import intervene as _intervene
from ..model import Transformer, causal_mask, precompute_freqs_cis
from . import reference as ref_mod
from .compare import SideRun
from .families import Family, family_for


class _HFTensors:
    """Tensors of a Hugging Face folder by their names, one at a time (safetensors)."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            with safe_open(str(folder / "model.safetensors"), "pt") as f:
                weight_map = {k: "model.safetensors" for k in f.keys()}
        self.folder, self.weight_map = folder, weight_map

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.folder / self.weight_map[name]), "pt") as f:
            return f.get_tensor(name)


class _Reference:
    """transformers' model as a skeleton on the meta device, materialised a part at a time."""

    def __init__(self, kind: str, where: Path, ckpt: Any, dtype: torch.dtype) -> None:
        ref_mod.require_transformers()
        from transformers import AutoConfig, AutoModelForCausalLM

        with ref_mod._quiet():
            if kind == "hf":
                config = AutoConfig.from_pretrained(str(where))
            elif kind == "gguf":
                config = AutoConfig.from_pretrained(str(where.parent), gguf_file=where.name)
            else:  # Meta: transformers has no reader; describe the same model to it
                cfg = ckpt.args.to_hf_config()
                model_type = cfg.pop("model_type")
                for k in ("architectures", "torch_dtype"):
                    cfg.pop(k, None)
                config = AutoConfig.for_model(model_type, **cfg)
            with torch.device("meta"):
                self.skeleton = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        self.config = config
        self.family: Family = family_for(config.model_type)
        self.dtype = dtype
        self.ckpt = ckpt
        self.hf = _HFTensors(where) if kind == "hf" else None

    def _tensors(self, hf_names: list[str], meta_prefix: str) -> dict[str, torch.Tensor]:
        """{hf name: tensor} for these names, from the safetensors or converted from ours."""
        if self.hf is not None:
            out = {}
            for n in hf_names:
                if n not in self.hf and n == "lm_head.weight":
                    n_src = "model.embed_tokens.weight"  # a tied checkpoint stores the matrix once
                else:
                    n_src = n
                out[n] = self.hf.get(n_src).to(self.dtype)
            return out
        ours = {m: self.ckpt.read(m, self.dtype) for m in self.ckpt.shapes if m.startswith(meta_prefix)}
        if meta_prefix == "output." and not ours:
            ours = {"output.weight": self.ckpt.read("tok_embeddings.weight", self.dtype)}
        converted = self.family.to_reference_state(ours, self.ckpt.args)
        return {n: converted[n] for n in hf_names}

    def materialise(self, module_path: str, meta_prefix: str) -> torch.nn.Module:
        module = self.skeleton.get_submodule(module_path)
        names = [f"{module_path}.{k}" for k in module.state_dict()]
        state = self._tensors(names, meta_prefix)
        module.load_state_dict({k[len(module_path) + 1:]: v for k, v in state.items()}, strict=True, assign=True)
        return module

    def rotary(self) -> torch.nn.Module:
        rot = self.skeleton.get_submodule(self.family.rotary)
        return type(rot)(config=self.config)


def _our_shell(args: Any) -> Transformer:
    with torch.device("meta"):
        return Transformer(args)


def _load_part(module: torch.nn.Module, prefix: str, ckpt: Any, dtype: torch.dtype) -> None:
    state = {}
    for k in module.state_dict():
        name = f"{prefix}{k}"
        if name not in ckpt.shapes and name == "output.weight":
            name = "tok_embeddings.weight"  # tied, stored once
        state[k] = ckpt.read(name, dtype)
    module.load_state_dict(state, strict=True, assign=True)


def _free(module: torch.nn.Module) -> None:
    module.to("meta")  # drops the storage; the next materialise assigns new tensors


def _captured(shell: Transformer, wanted: list[str], run: Callable[[], Any]) -> dict[str, torch.Tensor]:
    if not wanted:
        run()
        return {}
    with capture(shell, wanted) as cache:
        run()
    return dict(cache)


def run_layerwise(
    ckpt: Any,
    kind: str,
    where: str | Path,
    dtype: torch.dtype,
    ids_list: Sequence[Sequence[int]],
    names: Sequence[str],
    intervene: Mapping[str, Callable] | None = None,
) -> tuple[SideRun, SideRun, Any, Family]:
    """(our SideRun, transformers' SideRun, its config, the family), one layer at a time.

    ckpt: an opened checkpoint (weights.open_checkpoint): .args, .shapes, .read(name, dtype).
    intervene: {hook: fn} applied to our side only, as in run_ours.
    """
    ref = _Reference(kind, Path(where), ckpt, dtype)
    fam = ref.family
    args = ckpt.args
    shell = _our_shell(args)  # our model with every weight on the meta device
    n = args.n_layers
    tokens = [torch.tensor([list(ids)]) for ids in ids_list]
    longest = max(t.shape[1] for t in tokens)
    freqs = precompute_freqs_cis(args.head_dim, longest, args.rope_theta, shell.rope_scaling())  # (T, Hd/2)
    ours = SideRun(traces=[{} for _ in tokens], stepwise=[None] * len(tokens))
    theirs = SideRun(traces=[{} for _ in tokens], stepwise=[None] * len(tokens))
    by_layer: dict[int, list[str]] = {}
    for name in names:
        found = fam.source(name, n)
        if found is not None and found[0] is not None:
            by_layer.setdefault(found[0], []).append(name)
    top = [x for x in ("tok_embeddings", "norm", "logits") if x in names]
    edits = _intervene(shell, intervene) if intervene else contextlib.nullcontext()

    with edits, torch.no_grad():
        # Embeddings: ours is compared with transformers'; transformers' goes on as the input.
        _load_part(shell.tok_embeddings, "tok_embeddings.", ckpt, dtype)
        emb = ref.materialise(fam.embeddings, "tok_embeddings.")
        rot = ref.rotary()
        h_ref, h_ours, extra = [], [], []
        for k, t in enumerate(tokens):
            got = _captured(shell, [x for x in top if x == "tok_embeddings"],
                            lambda: h_ours.append(shell.tap("tok_embeddings", shell.tok_embeddings(t))))
            ours.traces[k].update(got)
            h = emb(t)  # (1, T, D)
            theirs.traces[k]["tok_embeddings"] = h.float()
            h_ref.append(h)
            T = t.shape[1]
            pos = torch.arange(T)[None]  # (1, T)
            # transformers' eager attention takes an additive (1, 1, T, T) mask.
            mask = torch.full((T, T), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None]
            extra.append((pos, rot(h, pos), mask))
        _free(shell.tok_embeddings)
        _free(emb)

        for i in range(n):
            block = shell.layers[i]
            _load_part(block, f"layers.{i}.", ckpt, dtype)
            layer = ref.materialise(f"{fam.layers}.{i}", f"layers.{i}.")
            wanted = by_layer.get(i, [])
            plain = [x for x in wanted if not x.endswith((".scores", ".probs"))]
            attn = [x for x in wanted if x.endswith((".scores", ".probs"))]
            for k, t in enumerate(tokens):
                T = t.shape[1]
                f, mask = freqs[:T], causal_mask(T, 0, h_ref[k].dtype, h_ref[k].device)

                def on(h):
                    block.attention.cache.reset()
                    return lambda: block(h, 0, f, mask)

                got = _captured(shell, plain, on(h_ref[k]))
                got.update(_captured(shell, attn, on(h_ref[k])))  # the explicit path, for probs
                ours.traces[k].update(got)
                block.attention.cache.reset()
                h_ours[k] = block(h_ours[k], 0, f, mask)  # our own running residual
                block.attention.cache.reset()
                pos, cos_sin, ref_mask = extra[k]
                values, h_ref[k] = ref_mod.layer_trace(fam, layer, i, h_ref[k], ref_mask, pos, cos_sin,
                                                       wanted, n, args.head_dim)
                theirs.traces[k].update(values)
            _free(block)
            _free(layer)

        # Final norm and output: ours on transformers' input (compared) and on its own.
        _load_part(shell.norm, "norm.", ckpt, dtype)
        _load_part(shell.output, "output.", ckpt, dtype)
        norm = ref.materialise(fam.final_norm, "norm.")
        head = ref.materialise(fam.head, "output.")

        def finish(h):
            return lambda: shell.tap("logits", shell.output(shell.tap("norm", shell.norm(h))).float())

        for k in range(len(tokens)):
            ours.traces[k].update(_captured(shell, [x for x in top if x != "tok_embeddings"], finish(h_ref[k])))
            ours.logits.append(finish(h_ours[k])())
            normed = norm(h_ref[k])
            theirs.traces[k]["norm"] = normed.float()
            theirs.traces[k]["logits"] = head(normed).float()
            theirs.logits.append(theirs.traces[k]["logits"])
        for m in (shell.norm, shell.output, norm, head):
            _free(m)
    for run in (ours, theirs):
        run.traces = [{k: v.float().cpu() for k, v in tr.items()} for tr in run.traces]
        run.logits = [x.float().cpu() for x in run.logits]
    return ours, theirs, ref.config, fam


__all__ = ["run_layerwise"]
