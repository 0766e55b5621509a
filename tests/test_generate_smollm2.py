"""Greedy generation on the real SmolLM2-135M-Instruct (Q4_1 GGUF) equals transformers'
generate(do_sample=False) token for token, with transformers loading the same GGUF file
itself (dequantised to float32). Also: streamed text equals the decoded ids, and seeded
sampling reproduces on a real model."""


import pytest
import torch

from llama.generate import generate, generate_ids
from real_models import SMOLLM2_GGUF, needs_smollm2


GGUF = SMOLLM2_GGUF
pytestmark = [needs_smollm2, pytest.mark.usefixtures("one_thread")]
N_NEW = 20


@pytest.fixture(scope="module")
def ours():
    from tokenizer import load_tokenizer
    from weights import load_model

    return load_model(GGUF, dtype="float32"), load_tokenizer(GGUF)


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32
    )
    return model.eval()


def _hf_greedy(hf, ids, n, eos):
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[0] if isinstance(eos, list) else eos,
        )
    return out[0, len(ids) :].tolist()


def test_greedy_equals_transformers_plain_prompt(ours, hf):
    model, tok = ours
    ids = tok.encode("The capital of France is")
    got = list(generate(model, ids, N_NEW, tokenizer=tok))
    assert got[0].id == 7042 and tok.id_to_piece(got[0].id) == " Paris"
    assert abs(got[0].prob - 0.7725) < 5e-4
    expected = _hf_greedy(hf, ids, N_NEW, eos=sorted(tok.stop_ids))
    assert [s.id for s in got] == expected
    assert len(expected) >= 10


def test_greedy_equals_transformers_chat_prompt(ours, hf):
    """The chat template, and stopping at <|im_end|> like transformers' eos_token_id."""
    model, tok = ours
    ids = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    got = list(generate(model, ids, N_NEW, tokenizer=tok))
    expected = _hf_greedy(hf, ids, N_NEW, eos=sorted(tok.stop_ids))
    assert [s.id for s in got] == expected
    assert got[-1].is_stop and tok.id_to_piece(got[-1].id) == "<|im_end|>"
    text = "".join(s.text for s in got)
    assert "Paris" in text
    assert text == tok.decode([s.id for s in got], skip_special=True)


def test_streamed_text_equals_decode_and_sampling_reproduces(ours):
    model, tok = ours
    prompt = "Once upon a time"
    kw = dict(tokenizer=tok, temperature=0.9, top_p=0.95, top_k=50)
    steps = list(generate(model, prompt, 12, seed=1234, **kw))
    ids = [s.id for s in steps if s.id >= 0]
    assert "".join(s.text for s in steps) == tok.decode(ids, skip_special=True)
    assert generate_ids(model, tok.encode(prompt), 12, seed=1234, **kw) == ids
    assert generate_ids(model, tok.encode(prompt), 12, seed=4321, **kw) != ids
