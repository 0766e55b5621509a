"""The numbers behind the GPT-2 views: the model summary and the learned positions.

    gpt2_summary(model_or_config)     layers, width, heads, positions, parameters by part
    position_embeddings(model)        the learned position matrix (P, D), each position's
                                      norm, the cosine similarity of every pair of
                                      positions, and its average by distance

Numbers only (no drawing, no matplotlib); plots and the studio render them. These will
move into llama/analysis once that package exists.

GPT-2 learns one vector per position (pos_embeddings, Hugging Face's wpe) where Llama
rotates q and k by fixed angles (RoPE). Trained GPT-2 position vectors are known to form
a smooth curve: neighbouring positions are similar, and similarity falls with distance,
which the cosine matrix shows as a bright band along its diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .gpt2 import GPT2, GPT2Config


def gpt2_param_counts(args: GPT2Config) -> dict[str, int]:
    """Parameters by part, from the config alone (a tied output matrix counts zero)."""
    D, F, L, V, P = args.n_embd, args.hidden_dim, args.n_layer, args.vocab_size, args.n_positions
    return {
        "token embeddings": V * D,
        "position embeddings": P * D,
        "attention": L * (D * 3 * D + 3 * D + D * D + D),  # wqkv and wo, with biases
        "mlp": L * (D * F + F + F * D + D),  # w1 and w2, with biases
        "layer norms": (2 * L + 1) * 2 * D,  # two per block and the final one; weight + bias
        "output": 0 if args.tie_word_embeddings else V * D,
    }


@dataclass
class GPT2Summary:
    n_layers: int
    dim: int
    n_heads: int
    head_dim: int
    hidden_dim: int
    n_positions: int
    vocab_size: int
    tied: bool
    params: dict[str, int] = field(default_factory=dict)  # by part, see gpt2_param_counts
    total: int = 0


def gpt2_summary(model_or_config: GPT2 | GPT2Config) -> GPT2Summary:
    """The summary of a GPT2 (its real tensors are counted) or a GPT2Config (by formula)."""
    if isinstance(model_or_config, GPT2Config):
        args, total = model_or_config, None
    elif isinstance(model_or_config, GPT2):
        args, total = model_or_config.args, model_or_config.num_params()
    else:
        raise TypeError(f"gpt2_summary needs a llama.gpt2.GPT2 or a GPT2Config, got {type(model_or_config).__name__}")
    params = gpt2_param_counts(args)
    if total is not None and total != sum(params.values()):  # pragma: no cover - a bug if so
        raise AssertionError(f"the model has {total} parameters but the formula gives {sum(params.values())}")
    return GPT2Summary(
        n_layers=args.n_layers,
        dim=args.dim,
        n_heads=args.n_heads,
        head_dim=args.head_dim,
        hidden_dim=args.hidden_dim,
        n_positions=args.n_positions,
        vocab_size=args.vocab_size,
        tied=args.tie_word_embeddings,
        params=params,
        total=sum(params.values()),
    )


@dataclass
class PositionEmbeddings:
    matrix: torch.Tensor  # (P, D) float32: row p is the vector added at position p
    norms: torch.Tensor  # (P,) length of each position's vector
    cosine: torch.Tensor  # (P, P) cosine similarity of positions i and j (1 on the diagonal)
    by_offset: torch.Tensor  # (P,) mean cosine of positions i and i+k, for k = 0 .. P-1

    @property
    def n_positions(self) -> int:
        return self.matrix.shape[0]


def position_embeddings(model: torch.nn.Module, positions: int | None = None) -> PositionEmbeddings:
    """The learned position matrix of a GPT-2 model and its similarity structure.

    positions: look at the first `positions` positions only (default: all n_positions).
    """
    table = getattr(model, "pos_embeddings", None)
    if not isinstance(table, torch.nn.Embedding):
        raise TypeError(
            f"{type(model).__name__} has no learned position embeddings: Llama-family models "
            "encode positions by rotating q and k (RoPE), see the rope view instead."
        )
    P = table.num_embeddings
    if positions is None:
        positions = P
    if isinstance(positions, bool) or not isinstance(positions, int) or not 1 <= positions <= P:
        raise ValueError(f"positions must be an integer in 1..{P} (this model learned {P}), got {positions!r}")
    with torch.no_grad():
        matrix = table.weight[:positions].detach().float().cpu()  # (P, D)
        norms = matrix.norm(dim=-1)  # (P,)
        unit = matrix / norms.clamp_min(1e-12)[:, None]  # (P, D), rows of length 1
        cosine = unit @ unit.T  # (P, P)
        # Average along each diagonal k of the upper triangle: similarity at distance k.
        by_offset = torch.stack([cosine.diagonal(k).mean() for k in range(positions)])  # (P,)
    return PositionEmbeddings(matrix=matrix, norms=norms, cosine=cosine, by_offset=by_offset)


__all__ = ["gpt2_param_counts", "GPT2Summary", "gpt2_summary", "PositionEmbeddings", "position_embeddings"]
