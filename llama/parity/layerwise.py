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
from its own config and, for a Hugging Face folder, read from its files (safetensors, or
pytorch_model.bin memory-mapped) by their Hugging Face names; for GGUF and Meta files
they get our reader's tensors converted by the family table (as in reference_from_ours),
so in those formats this mode checks the forward code, not the file reading.

Both families. What differs is how each side embeds the tokens and calls one layer, in
one small steps class per family (`STEPS`, keyed by the parity Family's name): Llama's
TransformerBlock(x, start_pos, freqs_cis, mask) and LlamaDecoderLayer(h, attention_mask,
position_ids, position_embeddings=(cos, sin)); GPT-2's GPT2Block(x, start_pos, mask) after
token + position embeddings, and GPT2Block(h, attention_mask=...). Everything else (which
tensors each part needs, what is compared) comes from the family table.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..family import family_of
from ..hooks import capture
from ..hooks import intervene as _intervene
from ..model import causal_mask, precompute_freqs_cis
from . import reference as ref_mod
from .compare import SideRun
from .families import Family, family_for


class _HFTensors:
    """Tensors of a Hugging Face folder by their names, one at a time: model.safetensors
    (one file or shards with the index), or else pytorch_model.bin (memory-mapped,
    weights only). A name may be stored without the base model's prefix ("h.0.ln_1.weight"
    for "transformer.h.0.ln_1.weight", as the hub's original GPT-2 files have it)."""

    def __init__(self, folder: Path, prefix: str = "") -> None:
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        self.bin: dict[str, torch.Tensor] | None = None
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif singles := sorted(folder.glob("*.safetensors")):
            # model.safetensors, or the one file the loader accepts under another name
            single = folder / "model.safetensors" if (folder / "model.safetensors").is_file() else singles[0]
            with safe_open(str(single), "pt") as f:
                weight_map = {k: single.name for k in f.keys()}
        else:
            self.bin = torch.load(folder / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True)
            weight_map = {k: "pytorch_model.bin" for k in self.bin}
        self.folder, self.weight_map, self.prefix = folder, weight_map, prefix

    def _stored(self, name: str) -> str | None:
        if name in self.weight_map:
            return name
        bare = name.removeprefix(self.prefix) if self.prefix else name
        return bare if bare in self.weight_map else None

    def __contains__(self, name: str) -> bool:
        return self._stored(name) is not None

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        stored = self._stored(name)
        if stored is None:
            raise KeyError(f"{name} is not in {self.folder}")
        if self.bin is not None:
            return self.bin[stored]
        with safe_open(str(self.folder / self.weight_map[stored]), "pt") as f:
            return f.get_tensor(stored)


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
        # Eval mode: from_config builds a model for training, and GPT-2's config has dropout.
        self.skeleton.eval()
        self.config = config
        self.family: Family = family_for(config.model_type)
        self.dtype = dtype
        self.ckpt = ckpt
        prefix = f"{self.skeleton.base_model_prefix}." if getattr(self.skeleton, "base_model_prefix", "") else ""
        self.hf = _HFTensors(where, prefix) if kind == "hf" else None

    def _tensors(self, hf_names: list[str], meta_prefix: str) -> dict[str, torch.Tensor]:
        """{hf name: tensor} for these names, from the folder's files or converted from ours."""
        if self.hf is not None:
            out = {}
            for n in hf_names:
                if n not in self.hf and n == f"{self.family.head}.weight":
                    n_src = f"{self.family.embeddings}.weight"  # a tied checkpoint stores the matrix once
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


def _our_shell(args: Any) -> torch.nn.Module:
    """Our model of the checkpoint's family (llama.family), every weight on the meta device."""
    with torch.device("meta"):
        return family_of(args).model()(args)


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


def _captured(shell: torch.nn.Module, wanted: list[str], run: Callable[[], Any]) -> dict[str, torch.Tensor]:
    if not wanted:
        run()
        return {}
    with capture(shell, wanted) as cache:
        run()
    return dict(cache)


# ---------------------------------------------------------------------------------------
# What differs between families: embedding the tokens and calling one layer, each side
# ---------------------------------------------------------------------------------------


class _LlamaSteps:
    """Llama, Qwen2, Mistral: token embeddings only; RoPE inside every layer."""

    our_parts = ("tok_embeddings",)  # our modules (and checkpoint prefixes) before layer 0

    def __init__(self, shell: torch.nn.Module, ref: "_Reference", longest: int) -> None:
        a = shell.args
        self.shell, self.rot = shell, ref.rotary()
        self.freqs = precompute_freqs_cis(a.head_dim, longest, a.rope_theta, shell.rope_scaling())  # (T, Hd/2)
        self.emb = ref.materialise(ref.family.embeddings, "tok_embeddings.")

    def ours(self, t: torch.Tensor) -> torch.Tensor:
        """The lines of Transformer.forward before the first layer, taps included."""
        return self.shell.tap("tok_embeddings", self.shell.tok_embeddings(t))  # (1, T, D)

    def theirs(self, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.emb(t)  # (1, T, D)
        return h, {"tok_embeddings": h}

    def our_block(self, block: torch.nn.Module, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return block(h, 0, self.freqs[: h.shape[1]], mask)

    def their_kwargs(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        pos = torch.arange(h.shape[1])[None]  # (1, T)
        return {"attention_mask": mask, "position_ids": pos, "position_embeddings": self.rot(h, pos)}

    def free(self) -> None:
        _free(self.emb)


class _GPT2Steps:
    """GPT-2: token + learned position embeddings before layer 0; no RoPE."""

    our_parts = ("tok_embeddings", "pos_embeddings")

    def __init__(self, shell: torch.nn.Module, ref: "_Reference", longest: int) -> None:
        fam = ref.family
        self.shell = shell
        self.wte = ref.materialise(fam.embeddings, "tok_embeddings.")
        self.wpe = ref.materialise(fam.positions, "pos_embeddings.")

    def ours(self, t: torch.Tensor) -> torch.Tensor:
        """The lines of GPT2.forward before the first layer (start_pos 0), taps included."""
        m = self.shell
        tok = m.tap("tok_embeddings", m.tok_embeddings(t))  # (1, T, D)
        pos = m.tap("pos_embeddings", m.pos_embeddings(torch.arange(t.shape[1]))[None])  # (1, T, D)
        return m.tap("embeddings", tok + pos)

    def theirs(self, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tok, pos = self.wte(t), self.wpe(torch.arange(t.shape[1])[None])  # (1, T, D) each
        h = tok + pos
        return h, {"tok_embeddings": tok, "pos_embeddings": pos, "embeddings": h}

    def our_block(self, block: torch.nn.Module, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return block(h, 0, mask)

    def their_kwargs(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        return {"attention_mask": mask}

    def free(self) -> None:
        _free(self.wte)
        _free(self.wpe)


STEPS = {"llama": _LlamaSteps, "gpt2": _GPT2Steps}  # parity Family name -> its steps


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
    if fam.name not in STEPS or family_of(shell).name != fam.name:
        raise ref_mod.ReferenceUnavailable(
            f"layer by layer needs our model and transformers' of one family with a layer-by-layer runner: "
            f"ours is {family_of(shell).name}, transformers' is model_type {ref.config.model_type!r} ({fam.name})")
    n = args.n_layers
    tokens = [torch.tensor([list(ids)]) for ids in ids_list]
    longest = max(t.shape[1] for t in tokens)
    ours = SideRun(traces=[{} for _ in tokens], stepwise=[None] * len(tokens))
    theirs = SideRun(traces=[{} for _ in tokens], stepwise=[None] * len(tokens))
    by_layer: dict[int, list[str]] = {}
    top: list[str] = []  # the points outside the layers: embeddings before, norm and logits after
    for name in names:
        found = fam.source(name, n)
        if found is not None:
            (top if found[0] is None else by_layer.setdefault(found[0], [])).append(name)
    edits = _intervene(shell, intervene) if intervene else contextlib.nullcontext()

    with edits, torch.no_grad():
        # Embeddings: ours are compared with transformers'; transformers' go on as the input.
        steps_cls = STEPS[fam.name]
        for part in steps_cls.our_parts:
            _load_part(shell.get_submodule(part), f"{part}.", ckpt, dtype)
        steps = steps_cls(shell, ref, longest)
        before = [x for x in top if x not in ("norm", "logits")]
        h_ref, h_ours, masks = [], [], []
        for k, t in enumerate(tokens):
            got = _captured(shell, before, lambda: h_ours.append(steps.ours(t)))
            ours.traces[k].update(got)
            h, values = steps.theirs(t)
            theirs.traces[k].update({x: v.float() for x, v in values.items() if x in before})
            h_ref.append(h)
            T = t.shape[1]
            # transformers' eager attention takes an additive (1, 1, T, T) mask.
            masks.append(torch.full((T, T), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None])
        for part in steps_cls.our_parts:
            _free(shell.get_submodule(part))
        steps.free()

        for i in range(n):
            block = shell.layers[i]
            _load_part(block, f"layers.{i}.", ckpt, dtype)
            layer = ref.materialise(f"{fam.layers}.{i}", f"layers.{i}.")
            wanted = by_layer.get(i, [])
            plain = [x for x in wanted if not x.endswith((".scores", ".probs"))]
            attn = [x for x in wanted if x.endswith((".scores", ".probs"))]
            for k, t in enumerate(tokens):
                mask = causal_mask(t.shape[1], 0, h_ref[k].dtype, h_ref[k].device)

                def on(h):
                    block.attention.cache.reset()
                    return lambda: steps.our_block(block, h, mask)

                got = _captured(shell, plain, on(h_ref[k]))
                got.update(_captured(shell, attn, on(h_ref[k])))  # the explicit path, for probs
                ours.traces[k].update(got)
                block.attention.cache.reset()
                h_ours[k] = steps.our_block(block, h_ours[k], mask)  # our own running residual
                block.attention.cache.reset()
                values, h_ref[k] = ref_mod.layer_trace(fam, layer, i, h_ref[k], steps.their_kwargs(h_ref[k], masks[k]),
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
            ours.traces[k].update(_captured(shell, [x for x in top if x in ("norm", "logits")], finish(h_ref[k])))
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


__all__ = ["run_layerwise", "STEPS"]
