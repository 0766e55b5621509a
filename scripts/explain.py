"""llama-explain: step through one forward pass of a prompt, with its real tensors.

    llama-explain "Cricket is a"                        # default model (SmolLM2-135M GGUF), layer 0
    llama-explain "Cricket is a" --layer 3 --layer 29 --head 4 --pair 10
    llama-explain "Cricket is a" --layer all --model path/to/checkpoint

Each stage prints the file:line of llama/model.py (llama/gpt2.py for a GPT-2 checkpoint)
that computes it (found from the source itself, so it never goes stale): set a breakpoint
there to watch the same tensor in a debugger (see docs/WALKTHROUGH.md).
"""

from __future__ import annotations

import argparse
import sys

from llama.dtypes import DTYPE_NAMES
from llama.explain import ExplainError, render, walkthrough


def _layer(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layer takes a layer index (0, 5, -1 for the last) or 'all', got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-explain",
        description="Print each stage of one forward pass (tokenization, embedding, RMSNorm, "
        "q/k/v, RoPE, scores, causal mask, softmax, weighted sum, output projection, "
        "residuals, SwiGLU, final norm, logits, top-5) with the prompt's real tensors and "
        "the llama/model.py line that computes each (GPT-2: its own stages and llama/gpt2.py).",
    )
    p.add_argument("prompt", help='the text to run, e.g. "Cricket is a"')
    p.add_argument(
        "--model",
        help="checkpoint: a .gguf file, a Hugging Face folder or a Meta folder "
        "(default: the bundled SmolLM2-135M-Instruct Q4_1 GGUF)",
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer file or folder, if not the one inside --model (default: --model)",
    )
    p.add_argument(
        "--layer",
        type=_layer,
        action="append",
        metavar="L",
        help="layer to open up; repeat for several, negative counts from the end, 'all' for "
        "every layer (default: 0, the first layer, which reads the embeddings directly)",
    )
    p.add_argument("--head", type=int, default=0,
                   help="query head whose q, scores, probabilities and output are shown (default 0)")
    p.add_argument("--pair", type=int, default=0,
                   help="RoPE dimension pair j (dims 2j, 2j+1 of each head) whose angles are "
                   "shown; 0 turns fastest (default 0; GPT-2 has no RoPE)")
    p.add_argument("--token", type=int, default=-1,
                   help="token position whose vectors are shown and whose next token is "
                   "predicted (default -1, the last)")
    p.add_argument("--values", type=int, default=6,
                   help="values printed from each vector (default 6)")
    p.add_argument("--tokens", type=int, default=6,
                   help="tokens shown in the score/probability matrices, ending at --token "
                   "(default 6)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                   help="weights' dtype (default float32; values are printed in float32)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"llama-explain: error: {message}", file=sys.stderr)
        return 2

    if not args.prompt:
        return fail('the prompt is empty: give some text, e.g. llama-explain "Cricket is a"')
    layers = args.layer or [0]
    if "all" in layers:
        if len(layers) > 1:
            return fail("--layer all shows every layer; do not combine it with indices")
        layers = "all"

    from tokenizer import load_tokenizer
    from weights import default_model_path, load_model

    try:
        path = args.model or default_model_path()
    except Exception as e:  # the bundled model is not installed: say so, and what to do
        return fail(f"{e} (or pass --model PATH)")
    try:
        model = load_model(path, dtype=args.dtype)
    except Exception as e:  # any loader failure: say which file and why, not a traceback
        return fail(f"could not load a model from {str(path)!r}: {e}")
    try:
        tok = load_tokenizer(args.tokenizer or path)
    except Exception as e:
        hint = "" if args.tokenizer else " (pass --tokenizer PATH if it is elsewhere)"
        return fail(f"could not load a tokenizer from {str(args.tokenizer or path)!r}: {e}{hint}")

    try:
        w = walkthrough(
            model, tok, args.prompt, layers=layers, head=args.head, pair=args.pair,
            position=args.token, n_values=args.values, n_tokens=args.tokens,
            model_label=str(path),
        )
    except ExplainError as e:
        return fail(str(e))
    sys.stdout.write(render(w))
    return 0


if __name__ == "__main__":
    sys.exit(main())
