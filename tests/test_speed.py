"""The speed settings change memory layouts, never results."""

import torch

from llama.config import ModelArgs
from llama.model import Transformer
from llama.speed import decode_layout
from tiny_models import ours_from_hf, tiny_hf_model


def test_decode_layout_keeps_logits_and_ties():
    model = ours_from_hf(tiny_hf_model("llama32"))  # tied embeddings
    tokens = torch.randint(0, model.args.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(tokens)
        n_params = model.num_params()
        decode_layout(model)
        after = model(tokens)
        model.reset_cache()
        steps = [model(tokens[:, :10])] + [model(tokens[:, i : i + 1], start_pos=i) for i in range(10, 20)]
    wq = model.layers[0].attention.wq.weight
    assert wq.t().is_contiguous() and not wq.is_contiguous()  # the layout did change
    assert model.output.weight is model.tok_embeddings.weight  # still one matrix
    assert model.num_params() == n_params
    assert (after - before).abs().max() <= 1e-4
    assert (torch.cat(steps, 1) - before).abs().max() <= 1e-4


def test_decode_layout_leaves_bfloat16_alone():
    model = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=40)).to(torch.bfloat16)
    decode_layout(model)
    assert model.layers[0].attention.wq.weight.is_contiguous()


def test_last_only_logits():
    model = ours_from_hf(tiny_hf_model("qwen2"))
    tokens = torch.randint(0, model.args.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        last = model(tokens, last_only=True)
    assert last.shape == (2, 1, model.args.vocab_size)
    assert (last[:, 0] - full[:, -1]).abs().max() <= 1e-4
