"""Weights as stored: linear layers that keep their weights as 8- or 4-bit integers.

Decoding one token reads every weight once, so the bytes per weight decide its speed once
the weights outgrow the caches (a 7B model: 13.5 GB in bfloat16, 3.8 GB in 4 bits). torch
has CPU kernels that multiply bfloat16 activations by integer weights directly:

    torch._weight_int8pack_mm(x, q, scales)          q int8 (out, in), one scale per row
    torch._weight_int4pack_mm_for_cpu(x, packed, G, scales_and_zeros)
        4-bit values q in 0..15 in groups of G along `in`, weight = (q - 8) * scale + zero

Both want bfloat16 activations: with float32 ones they take a slow path (measured on the
AMD box, a 4096x4096 product: 20 ms for int8 and 42 ms for int4 against 0.9 and 0.45 ms
with bfloat16, and 3.7 ms for F.linear on float32 weights).

So a StoredLinear rounds its input row(s) to bfloat16, runs the integer kernel and hands
back the result in the input's dtype. Everything else in the model (embeddings, RMSNorm,
RoPE, attention, the residual stream) stays as it was, so every hook still sees floating
point activations. The results are not F.linear's: the weights are the quantized ones, and
activations and outputs of each product are rounded to bfloat16. docs/PERFORMANCE.md
gives the measured logit difference from the dequantized float32 model, and
tests/test_speed_stored.py holds it to a tolerance.

`weight` is still there for code that reads it (logit attribution, parameter plots): the
dequantized float32 matrix, computed when asked for. With autograd recording, the product
is F.linear on that matrix, so gradients (saliency) still work, slowly.

Where the layers come from:
- `quantize_model(model, "int8" | "int4")`: any float model, row-wise int8 or 4-bit
  groups of 32, computed from its float weights (llama.speed.optimize(quantize=...));
- `weights.stored.load_stored(path)`: a GGUF file's own Q4_0 / Q4_1 / Q4_K blocks, bit for
  bit (their scales rounded to bfloat16, the kernel's scale dtype); other tensors int8.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

COMPUTE_DTYPE = torch.bfloat16  # the activations' dtype inside the integer kernels
GROUP_SIZE = 32  # 4-bit group size for quantize_model: the same as GGUF's Q4_0 / Q4_1


# Both kernels are in torch 2.6 and later; with an older torch nothing is converted.
HAVE_INT8 = hasattr(torch, "_weight_int8pack_mm")
HAVE_INT4 = hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_convert_weight_to_int4pack_for_cpu")


def int8_fits(out_features: int, in_features: int) -> bool:
    """torch's int8 kernel gives wrong results (or crashes) unless `in` is a multiple of 16."""
    return HAVE_INT8 and in_features % 16 == 0 and out_features > 0


def int4_fits(out_features: int, in_features: int, group_size: int = GROUP_SIZE) -> bool:
    """torch's int4 CPU kernel needs out % 16 == 0 and whole groups along in."""
    return (HAVE_INT4 and out_features % 16 == 0 and in_features % group_size == 0
            and group_size in (32, 64, 128, 256))


class StoredLinear(nn.Linear):
    """A linear layer whose weight lives in integer buffers (see Int8Linear, Int4Linear)."""

    def __init__(self, out_features: int, in_features: int, bias: torch.Tensor | None) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a float weight
        self.in_features, self.out_features = in_features, out_features
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    @property
    def compute_dtype(self) -> torch.dtype:
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The dequantized weight, float32 (out, in): computed on every access."""
        raise NotImplementedError

    def _product(self, rows: torch.Tensor) -> torch.Tensor:  # (n, in) compute dtype -> (n, out)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if x.device.type != "cpu":
            raise RuntimeError(
                "weights-as-stored layers run on the CPU only: load the model with "
                "weights.load_model(path, device=...) for other devices."
            )
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:  # gradients: through the float weight
            return F.linear(x, self.weight.to(x.dtype), bias)
        rows = x.reshape(-1, self.in_features).to(self.compute_dtype).contiguous()  # (n, in)
        y = self._product(rows).to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if bias is None else y + bias

    def stored_bytes(self) -> int:
        """Bytes of weight data one product reads (integers plus scales)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.kind}"

    kind = "stored"


class Int8Linear(StoredLinear):
    """Weights as int8, one scale per output row: weight[o] = q[o] * scales[o]."""

    kind = "int8"

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        out_features, in_features = q.shape
        if q.dtype != torch.int8 or scales.shape != (out_features,):
            raise ValueError(f"Int8Linear needs int8 q (out, in) and scales (out,), got {q.dtype} {tuple(scales.shape)}")
        if not int8_fits(out_features, in_features):
            raise ValueError(f"torch's int8 kernel needs in_features % 16 == 0, got {in_features}")
        super().__init__(out_features, in_features, bias)
        self.register_buffer("q", q.contiguous())
        self.register_buffer("scales", scales.to(COMPUTE_DTYPE).contiguous())

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int8Linear":
        """Symmetric row-wise int8: scale = max |w| / 127 (rounded to bfloat16 first, so the
        integers are computed against the scale the kernel will really use)."""
        w = weight.detach().float()
        scales = (w.abs().amax(1) / 127).clamp_min(1e-30).to(COMPUTE_DTYPE)
        q = torch.round(w / scales.float()[:, None]).clamp_(-128, 127).to(torch.int8)
        return cls(q, scales, bias)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.scales.dtype

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.q.float() * self.scales.float()[:, None]  # (out, in)

    def _product(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(rows, self.q, self.scales)


# ---------------------------------------------------------------------------------------
# 4-bit: torch's packed layout
# ---------------------------------------------------------------------------------------
# torch._convert_weight_to_int4pack_for_cpu packs an (out, in) matrix of values 0..15 into
# (out, in/2) bytes in a layout that depends on the CPU (AVX-512: blocks of 64 rows, each
# byte holding rows j and j+32 of one column; AVX2: blocks of 32; elsewhere others, and
# other blocks for a tail of rows). `weight` needs the values back. Rather than assume a
# layout, it is learned from torch's own packer on a small probe (which two rows and which
# column each byte holds), and every unpacked matrix is checked against the kernel itself
# on a few columns; if either fails, the values are read through the kernel (slow, exact).


def _torch_pack(q: torch.Tensor) -> torch.Tensor:  # (out, in) 0..15 -> (out, in/2) uint8
    return torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)


def _where_packed(n_rows: int, n_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every packed byte, the (low, high) nibble's row and column. -> 2 x (bytes, 2)"""
    found = []
    for index in (torch.arange(n_rows)[:, None].expand(n_rows, n_cols),
                  torch.arange(n_cols)[None, :].expand(n_rows, n_cols)):
        total = torch.zeros(n_rows * n_cols // 2, 2, dtype=torch.int64)
        scale, rest = 1, index.clone()
        while True:  # one base-16 digit per packing: every nibble holds one digit
            packed = _torch_pack(rest % 16).reshape(-1)
            total += torch.stack([packed & 15, packed >> 4], -1).long() * scale
            rest, scale = rest // 16, scale * 16
            if not rest.any():
                break
        found.append(total)
    return found[0], found[1]


@functools.lru_cache(maxsize=64)
def int4_layout(n_rows: int) -> tuple[tuple[int, int, torch.Tensor], ...] | None:
    """torch's packing of n_rows rows, as runs of equal blocks: (first row, blocks in the run,
    pairs) where pairs (block/2, 2) says which (low, high) rows of a block each of its bytes
    holds, counted from the block's first row. A block's bytes go column after column.
    None if torch packs in some other way (then its own packer is used)."""
    layouts = []
    for n_cols in (32, 64):  # the same blocks for two widths, or the layout is not this one
        rows, cols = _where_packed(n_rows, n_cols)
        start, blocks = 0, []
        while start < rows.shape[0]:
            later = (cols[start : start + n_rows, 0] != 0).nonzero()
            width = int(later[0]) if len(later) else 0  # the block's bytes of column 0
            pairs = rows[start : start + width]
            chunk = slice(start, start + width * n_cols)
            expect_cols = torch.arange(n_cols).repeat_interleave(width)[:, None].expand(-1, 2)
            first = int(pairs.min()) if width else 0
            if (width == 0 or not torch.equal(rows[chunk], pairs.repeat(n_cols, 1))
                    or not torch.equal(cols[chunk], expect_cols)
                    or not torch.equal(pairs.flatten().sort().values, torch.arange(first, first + 2 * width))):
                return None
            blocks.append((first, pairs - first))
            start += width * n_cols
        layouts.append(blocks)
    if len(layouts[0]) != len(layouts[1]) or not all(
        a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(*layouts)
    ):
        return None
    runs: list[tuple[int, int, torch.Tensor]] = []
    for first, pairs in layouts[0]:  # merge consecutive blocks that are packed alike
        if runs and torch.equal(runs[-1][2], pairs) and runs[-1][0] + runs[-1][1] * 2 * pairs.shape[0] == first:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, pairs)
        else:
            runs.append((first, 1, pairs))
    return tuple(runs)


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor | None:
    """The kernel's packed bytes -> (out, in) uint8 values 0..15, or None if unknown layout."""
    out_features = packed.shape[0]
    layout = int4_layout(out_features)
    if layout is None:
        return None
    q = torch.empty(out_features, in_features, dtype=torch.uint8)
    flat, start = packed.reshape(-1), 0
    for first, count, pairs in layout:
        width = pairs.shape[0]
        size = count * width * in_features
        chunk = flat[start : start + size].view(count, in_features, width).transpose(1, 2)  # (count, block/2, in)
        rows = q[first : first + count * 2 * width].view(count, 2 * width, in_features)
        rows[:, pairs[:, 0]] = chunk & 15
        rows[:, pairs[:, 1]] = chunk >> 4
        start += size
    return q


_PACKING_CHECKED: set[tuple[int, int, int]] = set()


class Int4Linear(StoredLinear):
    """Weights as 4-bit values in groups along `in`: weight = (q - 8) * scale + zero.

    scales_and_zeros is (in / group, out, 2) in the compute dtype: [..., 0] the groups'
    scales, [..., 1] their zeros (the weight where q = 8), as torch's kernel takes them.
    """

    kind = "int4"

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                 group_size: int = GROUP_SIZE, bias: torch.Tensor | None = None) -> None:
        """q (out, in) values 0..15; scale and zero (out, in / group_size), float."""
        out_features, in_features = q.shape
        if not int4_fits(out_features, in_features, group_size):
            raise ValueError(
                f"torch's int4 kernel needs out % 16 == 0 and in % group == 0 (group 32..256), got "
                f"({out_features}, {in_features}) with group {group_size}"
            )
        groups = in_features // group_size
        if scale.shape != (out_features, groups) or zero.shape != (out_features, groups):
            raise ValueError(f"scale and zero must be {(out_features, groups)}, got {tuple(scale.shape)}, {tuple(zero.shape)}")
        super().__init__(out_features, in_features, bias)
        self.group_size = group_size
        # (out, groups) -> (groups, out, 2)
        sz = torch.stack([scale.float(), zero.float()], -1).transpose(0, 1)
        self.register_buffer("scales_and_zeros", sz.to(COMPUTE_DTYPE).contiguous())
        self.register_buffer("packed", _torch_pack(q))
        shape = (out_features, in_features, group_size)
        if shape not in _PACKING_CHECKED:  # once per shape: the packer does not change
            if not self._packed_right(q):
                raise RuntimeError("torch's int4 kernel does not give back the packed weights on this machine")
            _PACKING_CHECKED.add(shape)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, group_size: int = GROUP_SIZE) -> "Int4Linear":
        """Asymmetric 4-bit groups: each group's min..max in 16 steps (scale and zero are
        rounded to bfloat16 first, so q is computed against what the kernel will use)."""
        w = weight.detach().float()
        out_features, in_features = w.shape
        g = w.view(out_features, in_features // group_size, group_size)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo) / 15).clamp_min(1e-30).to(COMPUTE_DTYPE).float()
        zero = (lo + 8 * scale).to(COMPUTE_DTYPE).float()
        q = torch.round((g - zero[..., None]) / scale[..., None] + 8).clamp_(0, 15)
        return cls(q.view(out_features, in_features).to(torch.uint8), scale, zero, group_size, bias)

    def _columns(self, cols: list[int]) -> torch.Tensor:
        """Columns of q as the kernel sees them: unit rows times the weight, with every
        scale 1 and zero 8 (so weight = q). -> (out, len(cols)) float"""
        unit = torch.zeros(len(cols), self.in_features, dtype=COMPUTE_DTYPE)
        unit[range(len(cols)), cols] = 1
        ones = torch.ones_like(self.scales_and_zeros, dtype=COMPUTE_DTYPE)
        ones[..., 1] = 8
        return torch._weight_int4pack_mm_for_cpu(unit, self.packed, self.group_size, ones).T.float()

    def _packed_right(self, q: torch.Tensor) -> bool:
        """Does the kernel give back q? Checked on a few columns (values 0..15 are exact)."""
        cols = sorted({0, self.in_features - 1, self.in_features // 2, self.in_features // 3})
        return torch.equal(self._columns(cols), q[:, cols].float())

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.scales_and_zeros.dtype

    def values(self) -> torch.Tensor:
        """The 4-bit values, (out, in) uint8 0..15."""
        q = unpack_int4(self.packed, self.in_features)
        if q is None or not self._packed_right(q):  # ask the kernel for every column instead
            step = 256
            q = torch.cat([self._columns(list(range(i, min(i + step, self.in_features))))
                           for i in range(0, self.in_features, step)], 1).to(torch.uint8)
        return q

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        q = self.values().float().view(self.out_features, -1, self.group_size)  # (out, groups, G)
        sz = self.scales_and_zeros.float().transpose(0, 1)  # (out, groups, 2)
        return ((q - 8) * sz[..., :1] + sz[..., 1:]).view(self.out_features, self.in_features)

    def _product(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size, self.scales_and_zeros)


# ---------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------

KINDS = ("int8", "int4")


def stored_from_float(weight: torch.Tensor, bias: torch.Tensor | None, kind: str) -> nn.Module | None:
    """A StoredLinear of the given kind for this float weight, or None where the kernels
    cannot take its shape (int4 falls back to int8 first)."""
    out_features, in_features = weight.shape
    if kind == "int4" and int4_fits(out_features, in_features):
        return Int4Linear.from_float(weight, bias)
    if int8_fits(out_features, in_features):
        return Int8Linear.from_float(weight, bias)
    return None


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def quantize_model(model: nn.Module, kind: str = "int8") -> nn.Module:
    """Replace every float CPU nn.Linear by an Int8Linear or Int4Linear, in place.

    Layers the kernels cannot take (an `in` that is not a multiple of 16, say) stay as they
    are. A tied output/embedding matrix stays one float parameter for the embedding, and the
    output layer gets its own quantized copy. Returns the model.
    """
    if kind not in KINDS:
        raise ValueError(f"quantize must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not isinstance(module, StoredLinear):
            w = module.weight
            if w.device.type != "cpu" or not w.is_floating_point():
                continue
            with torch.no_grad():
                new = stored_from_float(w, module.bias, kind)
            if new is not None:
                replace_module(model, name, new)
    return model


def stored_layers(model: nn.Module) -> list[StoredLinear]:
    return [m for m in model.modules() if isinstance(m, StoredLinear)]


__all__ = [
    "StoredLinear",
    "Int8Linear",
    "Int4Linear",
    "quantize_model",
    "stored_from_float",
    "stored_layers",
    "replace_module",
    "unpack_int4",
    "int4_layout",
    "int8_fits",
    "int4_fits",
    "COMPUTE_DTYPE",
    "GROUP_SIZE",
]
