"""A compiled decode step: the model's own modules and weights, shapes fixed per token.

Decoding one token of a small model spends more time between kernels than in them (on
SmolLM2-135M about two thirds of a step is per-op overhead across 30 layers: RMSNorm,
RoPE, the cache write, residual adds). torch.compile can fuse those small operations, but
only if the step looks the same every token. Model.forward does not: the KV cache returns
`[:, :, :start_pos + 1]` (a new length each token) and start_pos is a Python int, so
torch.compile recompiles at every step until it gives up (measured: 31-32 tok/s against
34 eager, after a 5-30 s warm-up). The step here is written for fixed shapes:

- the position is a tensor, and RoPE reads its cos/sin row with index_select;
- the new key and value are written into the model's own KVCache storage with index_copy_
  (the cache keeps a fixed capacity, doubling -- and recompiling -- only when outgrown);
- attention runs over the whole capacity with a mask that hides positions after the token.

It computes what Attention.forward does for one token at start_pos > 0 (the same modules:
wq/wk/wv/wo, RMSNorm, FeedForward), and writes the same cache, so the eager model can take
over at any token: the prompt (prefill), anything with a hook installed, autograd, or the
"explicit" attention all run through llama/model.py as usual. tests/test_speed_compiled.py
checks the logits against the eager model's.

Each linear layer runs the kernel its Plan chose (llama.speed.calibrate) through an opaque
custom op, so the compiler fuses the small operations around the products and leaves the
products to the measured kernels.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .calibrate import FastLinear


@torch.library.custom_op("llama_speed::linear", mutates_args=())
def _linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: str) -> torch.Tensor:
    return kernels.BY_NAME[kernel](x, weight, bias)


@_linear_op.register_fake
def _(x, weight, bias, kernel):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_emb's complex multiply in real arithmetic. x (B, 1, H, Hd); cos/sin (1, Hd/2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, 1, H, Hd) -> (B, 1, H, Hd/2, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]  # (1, Hd/2) -> (1, 1, Hd/2): same for every head
    # (re + i im)(c + i s) = (re c - im s) + i (re s + im c)
    out = torch.stack([re * c - im * s, re * s + im * c], -1)  # (B, 1, H, Hd/2, 2)
    return out.flatten(3).type_as(x)  # (B, 1, H, Hd)


class CompiledDecode:
    """Installed as `model.forward`: one-token steps through a compiled function, anything
    else through the model's own forward."""

    def __init__(self, model: nn.Module, backend: str = "inductor") -> None:
        from llama.model import Transformer

        if not isinstance(model, Transformer):
            raise TypeError(f"a compiled decode step exists for llama.model.Transformer, not {type(model).__name__}")
        self.model = model
        self.eager = type(model).forward.__get__(model)  # the model's own forward
        freqs = model.freqs_cis  # (max_seq_len, Hd/2) complex64
        self.cos, self.sin = freqs.real.contiguous(), freqs.imag.contiguous()
        self.kernel_names: dict[int, str] = {}  # id(module) -> kernel, fixed at the first step
        self.compiled = torch.compile(self._step, backend=backend, dynamic=False)
        self.failed: str | None = None  # set when compiling failed: eager from then on
        self.steps = 0  # one-token steps that went through the compiled function
        self.tappable = [mod for mod in model.modules() if hasattr(mod, "_tap_fn")]

    # -- when the compiled step applies ----------------------------------------------
    def _eligible(self, tokens: torch.Tensor, start_pos: int) -> bool:
        m = self.model
        if self.failed or tokens.shape[1] != 1 or start_pos == 0 or tokens.device.type != "cpu":
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in (m.tok_embeddings.weight,)):
            return False  # autograd records: the model's own forward
        cache = m.layers[0].attention.cache
        if cache.k is None or cache.k.shape[0] != tokens.shape[0] or start_pos > cache.length:
            return False  # let the model's forward raise its own clear error, or start afresh
        if any(mod._tap_fn is not None for mod in self.tappable):
            return False  # a hook is installed: every tap must run
        return all(layer.attention.impl == "sdpa" for layer in m.layers)

    def __call__(self, tokens: torch.Tensor, start_pos: int = 0, last_only: bool = False) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or not self._eligible(tokens, start_pos):
            return self.eager(tokens, start_pos, last_only)
        m = self.model
        m._check_input(tokens, start_pos)
        for layer in m.layers:
            cache = layer.attention.cache
            if cache.k.shape[2] <= start_pos:  # outgrown: double it (the next step recompiles)
                cache.reserve(cache.k.shape[0], min(m.args.max_seq_len, 2 * cache.k.shape[2]), cache.k)
        if not self.kernel_names:
            self._fix_kernels(tokens, start_pos)
        pos = torch.tensor([start_pos])
        try:
            logits = self.compiled(tokens, pos)
        except Exception as e:  # noqa: BLE001 - no working compiler: eager from now on
            self.failed = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            warnings.warn(f"llama.speed: the compiled decode step failed, running eagerly ({self.failed})", stacklevel=2)
            return self.eager(tokens, start_pos, last_only)
        for layer in m.layers:
            layer.attention.cache.length = start_pos + 1
        self.steps += 1
        return logits

    def _fix_kernels(self, tokens: torch.Tensor, start_pos: int) -> None:
        """Run one eager step (so every Plan calibrates its one-row kernel), note the choices,
        then rewind the cache so the compiled step redoes that token."""
        length = self.model.cache_length
        with torch.no_grad():
            self.eager(tokens, start_pos)
        for layer in self.model.layers:
            layer.attention.cache.length = length
        for module in self.model.modules():
            if type(module) is FastLinear and module._plan is not None:
                key = ("1", torch.get_num_threads(), module.weight.dtype)
                kernel = module._plan.choices.get(key, kernels.LINEAR)
                self.kernel_names[id(module)] = kernel.name

    def _linear(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        name = self.kernel_names.get(id(module))
        if name is None or type(module) is not FastLinear:
            return module(x)  # nn.Linear, or a StoredLinear: its own forward
        return _linear_op(x, module.weight, module.bias, name)

    # -- the step itself ---------------------------------------------------------------
    def _step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        m = self.model
        B = tokens.shape[0]
        h = m.tok_embeddings(tokens)  # (B, 1) -> (B, 1, D)
        cos, sin = self.cos.index_select(0, pos), self.sin.index_select(0, pos)  # (1, Hd/2)
        for layer in m.layers:
            a = layer.attention
            x = layer.attention_norm(h)  # (B, 1, D)
            q = self._linear(a.wq, x).view(B, 1, a.n_heads, a.head_dim)  # (B, 1, H, Hd)
            k = self._linear(a.wk, x).view(B, 1, a.n_kv_heads, a.head_dim)  # (B, 1, KV, Hd)
            v = self._linear(a.wv, x).view(B, 1, a.n_kv_heads, a.head_dim)  # (B, 1, KV, Hd)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, 1, Hd)
            cache_k, cache_v = a.cache.k, a.cache.v  # (B, KV, C, Hd): C fixed capacity
            cache_k.index_copy_(2, pos, k)
            cache_v.index_copy_(2, pos, v)
            capacity = cache_k.shape[2]
            # 0 up to and including the token's position, -inf after: (1, 1, 1, C)
            visible = torch.arange(capacity, device=pos.device) <= pos
            mask = torch.zeros(capacity, dtype=q.dtype).masked_fill(~visible, float("-inf"))
            out = F.scaled_dot_product_attention(
                q, cache_k, cache_v, attn_mask=mask[None, None, None, :], enable_gqa=a.n_rep > 1
            )  # (B, H, 1, Hd)
            out = out.transpose(1, 2).reshape(B, 1, -1)  # (B, H, 1, Hd) -> (B, 1, H*Hd)
            h = h + self._linear(a.wo, out)
            ff = layer.feed_forward
            x = layer.ffn_norm(h)
            act = F.silu(self._linear(ff.w1, x)) * self._linear(ff.w3, x)  # (B, 1, F)
            h = h + self._linear(ff.w2, act)
        h = m.norm(h)
        return self._linear(m.output, h).float()  # (B, 1, V)


def compile_decode(model: nn.Module, backend: str = "inductor") -> CompiledDecode:
    """Install a compiled one-token step as model.forward (undo: uncompile_decode)."""
    uncompile_decode(model)
    step = CompiledDecode(model, backend)
    model.forward = step  # an instance attribute: nn.Module.__call__ finds it first
    return step


def uncompile_decode(model: nn.Module) -> None:
    if isinstance(model.__dict__.get("forward"), CompiledDecode):
        del model.forward


def compiled_step(model: nn.Module) -> CompiledDecode | None:
    step = model.__dict__.get("forward")
    return step if isinstance(step, CompiledDecode) else None


__all__ = ["CompiledDecode", "compile_decode", "uncompile_decode", "compiled_step"]
