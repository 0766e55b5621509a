"""How accurate is each way of running the model? Logits against a float64 run.

    python -m scripts.bench_accuracy [--model PATH] [--threads N] [--no-transformers]

Comparing two float32 implementations only says how far apart they are, and two correct
ones that sum in different orders can be ~1e-4 apart on a 30-layer model. The exact result
is the yardstick: the same weights run in float64 from end to end (the model's float32
islands -- RMSNorm's mean of squares, RoPE -- lifted to float64 for this run only). For the
prompts of tests/test_weights_smollm2.py, a full forward and token by token, this prints the
largest |logit - float64 logit| of:

  transformers         AutoModelForCausalLM, float32 (when installed and able to read the file)
  plain                our model, every product through F.linear
  optimize             llama.speed.optimize(model), as calibrated on this machine now
  optimize, rounding   optimize(model, same_accuracy=False): kernels within float32 rounding
  <kernel>             each candidate of llama.speed.kernels forced wherever it applies

Nothing is timed. docs/PERFORMANCE.md records what it printed.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn


def _prompts():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_weights_smollm2 import PROMPTS

    return PROMPTS


class _Forced(nn.Linear):
    """Runs one named kernel wherever it applies, F.linear elsewhere."""

    kernel = None

    def forward(self, x):
        k = self.kernel
        return k(x, self.weight, self.bias) if k is not None and k.applies(x, self.weight) else F.linear(x, self.weight, self.bias)


def float64_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Our model in float64 throughout, float32 islands included (patched for this call)."""
    import llama.model as lm

    def rmsnorm64(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def rope64(xq, xk, freqs_cis):
        rot = freqs_cis[None, :, None, :]
        q = torch.view_as_complex(xq.reshape(*xq.shape[:-1], -1, 2).contiguous())
        k = torch.view_as_complex(xk.reshape(*xk.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(q * rot).flatten(3), torch.view_as_real(k * rot).flatten(3)

    saved = lm.RMSNorm.forward, lm.apply_rotary_emb
    inv = lm.rope_inv_freq(model.args.head_dim, model.args.rope_theta, model.rope_scaling()).double()
    angles = torch.outer(torch.arange(model.args.max_seq_len, dtype=torch.float64), inv)
    model.freqs_cis = torch.polar(torch.ones_like(angles), angles)  # complex128
    lm.RMSNorm.forward, lm.apply_rotary_emb = rmsnorm64, rope64
    try:
        model.reset_cache()
        with torch.no_grad():
            return model(ids).double()
    finally:
        lm.RMSNorm.forward, lm.apply_rotary_emb = saved


def full_and_stepped(model, ids):
    """The logits of one forward pass over ids, and of the same ids fed token by token
    through the cache: (full, stepped), both (B, T, V)."""
    with torch.no_grad():
        model.reset_cache()
        full = model(ids)
        model.reset_cache()
        steps = [model(ids[:, :1])] + [model(ids[:, i : i + 1], start_pos=i) for i in range(1, ids.shape[1])]
    return full, torch.cat(steps, 1)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GGUF file or HF folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args(argv)

    from llama.speed import calibrate, kernels, optimize, set_threads, use_standard_kernels
    from tokenizer import load_tokenizer
    from llama.family import family_of
    from weights import default_model_path, load_model

    threads = set_threads(args.threads)
    path = args.model or str(default_model_path())
    model = load_model(path, dtype="float32")
    if family_of(model).name != "llama":
        parser.error(f"{path} is a {family_of(model).name} model: the float64 reference here "
                     "(RMSNorm, RoPE) covers Llama-family models only")
    tok = load_tokenizer(path)
    batches = [torch.tensor([tok.encode(p, bos=False, allow_special=True)]) for p in _prompts()]
    reference = copy.deepcopy(model).double()
    truth = [float64_logits(reference, ids) for ids in batches]
    del reference
    print(f"cpu {calibrate.cpu_model()}, torch {torch.__version__}, {threads} threads; model {path}")
    print(f"max |logit - float64 logit| over {len(batches)} prompts (largest |logit|: "
          f"{max(t.abs().max().item() for t in truth):.1f})")
    print(f"{'':22}{'full forward':>14}{'token by token':>16}")

    def row(name, outputs):
        full = max((o[0].double() - t).abs().max().item() for o, t in zip(outputs, truth))
        steps = "-" if outputs[0][1] is None else f"{max((o[1].double() - t).abs().max().item() for o, t in zip(outputs, truth)):.2e}"
        print(f"{name:22}{full:>14.2e}{steps:>16}", flush=True)

    if not args.no_transformers:
        try:
            from scripts.bench import load_hf

            hf = load_hf(path, "float32")
            with torch.no_grad():
                row("transformers", [(hf(ids).logits, None) for ids in batches])
            del hf
        except Exception as e:  # noqa: BLE001 - not installed, or a file it cannot read
            print(f"transformers skipped: {e}")
    row("plain", [full_and_stepped(model, ids) for ids in batches])
    optimize(model)
    row("optimize", [full_and_stepped(model, ids) for ids in batches])
    use_standard_kernels(model)
    calibrate.forget_choices()
    optimize(model, same_accuracy=False)
    row("optimize, rounding", [full_and_stepped(model, ids) for ids in batches])
    use_standard_kernels(model)
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = _Forced
    for kernel in kernels.CANDIDATES[1:]:
        _Forced.kernel = kernel
        row(kernel.name, [full_and_stepped(model, ids) for ids in batches])
    return 0


if __name__ == "__main__":
    sys.exit(main())
