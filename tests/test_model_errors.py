"""Mistakes users make with the model get messages, not deep torch tracebacks."""

import pytest
import torch

from llama.config import ModelArgs
from llama.model import Transformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(ModelArgs(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=16)).eval()


@pytest.mark.parametrize(
    "tokens, start_pos, error, message",
    [
        ([1, 2, 3], 0, TypeError, "torch.Tensor"),
        (torch.tensor([1, 2, 3]), 0, ValueError, r"shape \(batch, seq\)"),
        (torch.tensor([[1.0, 2.0]]), 0, TypeError, "integer ids"),
        (torch.zeros(1, 0, dtype=torch.long), 0, ValueError, "empty"),
        (torch.tensor([[1, 50]]), 0, ValueError, r"\[0, 50\).*max 50"),
        (torch.tensor([[-1, 2]]), 0, ValueError, "min -1"),
        (torch.ones(1, 17, dtype=torch.long), 0, ValueError, "exceeds the model's max_seq_len 16"),
        (torch.ones(1, 1, dtype=torch.long), -1, ValueError, "non-negative"),
    ],
)
def test_bad_input(model, tokens, start_pos, error, message):
    with pytest.raises(error, match=message):
        model(tokens, start_pos=start_pos)


def test_decode_without_prefix(model):
    model.reset_cache()
    with pytest.raises(ValueError, match="run the prefix first"):
        model(torch.tensor([[3]]), start_pos=5)


def test_start_pos_past_cache(model):
    model(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="past the 3 tokens"):
        model(torch.tensor([[4]]), start_pos=5)


def test_batch_change_mid_sequence(model):
    model(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="different batch size"):
        model(torch.tensor([[4], [5]]), start_pos=3)


def test_cache_grows_past_initial_capacity():
    torch.manual_seed(0)
    m = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=50, max_seq_len=600)).eval()
    tokens = torch.randint(0, 50, (1, 600))
    with torch.no_grad():
        full = m(tokens)
        m.reset_cache()
        a = m(tokens[:, :250])
        b = m(tokens[:, 250:], start_pos=250)  # forces the cache to grow beyond 256
    assert m.layers[0].attention.cache.k.shape[2] == 600
    assert (torch.cat([a, b], 1) - full).abs().max() <= 1e-4


def test_cache_keeps_no_autograd_graph():
    import copy

    torch.manual_seed(0)
    m = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=50, max_seq_len=16))
    tokens = torch.tensor([[1, 2, 3, 4]])
    logits = m(tokens)  # parameters require grad: this forward builds a graph
    logits[0, -1, 5].backward()
    assert m.layers[0].attention.wk.weight.grad.abs().sum() > 0  # gradients reach the keys
    cache = m.layers[0].attention.cache
    assert cache.k.grad_fn is None and not cache.k.requires_grad
    copy.deepcopy(m)  # fails if the cache still holds graph tensors
