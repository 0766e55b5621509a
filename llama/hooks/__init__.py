"""Named intermediates: capture them, export them, edit them, differentiate through them.

Every intermediate of the forward pass goes through a "tap" (see llama/taps.py and
llama/model.py): `self.tap("probs", probs)` returns the value untouched unless this package
installed a hook there. A hook point's full name is the module's path plus the tap's local
name. A Llama model's, in forward order (docs/HOOKS.md has the same table; a test checks
both against `model.hook_names()`):

    tok_embeddings                               (B, T, D)
    layers.i.attention_norm                      (B, T, D)
    layers.i.attention.q                         (B, T, H, Hd)   before RoPE
    layers.i.attention.k / v                     (B, T, KV, Hd)  before RoPE
    layers.i.attention.q_rot                     (B, T, H, Hd)   after RoPE
    layers.i.attention.k_rot                     (B, T, KV, Hd)  after RoPE
    layers.i.attention.scores                    (B, H, T, S)    pre-softmax, masked (-inf)
    layers.i.attention.probs                     (B, H, T, S)
    layers.i.attention.heads                     (B, T, H, Hd)   each head's output, before wo
    layers.i.attention.out                       (B, T, D)       after wo
    layers.i.resid_mid                           (B, T, D)       residual after attention
    layers.i.ffn_norm                            (B, T, D)
    layers.i.feed_forward.gate / up / act        (B, T, F)       w1 x, w3 x, silu(w1 x) * w3 x
    layers.i.feed_forward.out                    (B, T, D)       after w2
    layers.i.resid_post                          (B, T, D)       residual after the block
    norm                                         (B, T, D)       final RMSNorm
    logits                                       (B, T, V)       float32

`model.hook_names()` lists them in forward order (`llama.taps.hook_order`, which also
serves other model families); `hook_shapes(model, tokens)` gives each one's shape.

What this package offers (all of it scoped: whatever a context installs, it removes on
exit, also when the forward raises):

    with capture(model, names) as cache: model(tokens)      # record intermediates
    logits, cache = run_with_cache(model, tokens, names)     # the same in one call
    with intervene(model, {name: fn}): model(tokens)         # replace / edit intermediates
    grads = gradients(model, tokens, scalar_fn, names)       # d scalar / d intermediate
    save_capture(path, cache, ...); load_capture(path)       # one .safetensors file

Names may be given as an exact name, a glob pattern ("layers.*.resid_post",
"layers.3.attention.*"), a list of those, or a callable name -> bool.

One module per job:

    names.py         which hook points a names= argument selects (and the errors for typos)
    dispatch.py      installing hooks on modules and always removing them; how contexts
                     compose (edits first, in entry order, then observers)
    record.py        capture, run_with_cache, hook_shapes, ActivationCache
    edits.py         intervene, ablate_heads, patch_from, add_vector
    gradient.py      gradients
    capture_file.py  save_capture, load_capture, Capture (the .safetensors capture format)

Attention scores and probabilities exist as tensors only in the explicit attention path:
a context that names any `scores`/`probs` switches just those layers to
`attention.impl = "explicit"` and restores each layer's previous setting on exit. All
other captures keep the fused (sdpa) path.
"""

from __future__ import annotations

from .capture_file import CAPTURE_FORMAT, CAPTURE_VERSION, Capture, capture_order, load_capture, save_capture
from .dispatch import EXPLICIT_ONLY, active_hooks, tap_hooks
from .edits import EditFn, ablate_heads, add_vector, intervene, patch_from
from .gradient import gradients
from .names import HookError, NameSpec, resolve_names
from .record import ActivationCache, capture, hook_shapes, run_with_cache

__all__ = [
    "HookError",
    "NameSpec",
    "EditFn",
    "EXPLICIT_ONLY",
    "resolve_names",
    "active_hooks",
    "tap_hooks",
    "ActivationCache",
    "capture",
    "run_with_cache",
    "hook_shapes",
    "intervene",
    "ablate_heads",
    "patch_from",
    "add_vector",
    "gradients",
    "Capture",
    "save_capture",
    "load_capture",
    "capture_order",
    "CAPTURE_FORMAT",
    "CAPTURE_VERSION",
]
