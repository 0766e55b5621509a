"""Chat formatting: a conversation -> the prompt text an instruct model was trained on.

Where the model files carry a chat template (GGUF ``tokenizer.chat_template``,
tokenizer_config.json's ``chat_template``, chat_template.jinja), we render it with Jinja2
the way transformers does, so model-specific details (SmolLM2's default system prompt, for
instance) come out right. Otherwise we write one of three well-known formats ourselves:

    llama3  <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>
            <|start_header_id|>assistant<|end_header_id|>\\n\\n
    llama2  <s>[INST] <<SYS>>\\nsystem\\n<</SYS>>\\n\\nHi [/INST] Hello </s><s>[INST] More [/INST]
    chatml  <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n        (Qwen2, SmolLM2)

The result is text with special tokens written out (including BOS where the format has
one), so it must be encoded with ``allow_special=True`` and ``bos=False``, which is what
``Tokenizer.encode_chat`` does.
"""

from __future__ import annotations

import json
from datetime import datetime

from .errors import TokenizerError


def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise TokenizerError("messages must be a list of dicts like {'role': 'user', 'content': 'Hi'}")
    for m in messages:
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TokenizerError(f"each message needs a str 'role' and a str 'content', got {m!r}")
    return list(messages)


def llama3_format(messages: list[dict], add_generation_prompt: bool) -> str:
    # Meta's ChatFormat: BOS, then per message a header with the role, the stripped content
    # and <|eot_id|>; an empty assistant header invites the model's reply.
    out = ["<|begin_of_text|>"]
    for m in messages:
        out.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>")
    if add_generation_prompt:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def llama2_format(messages: list[dict], add_generation_prompt: bool) -> str:
    # Meta's Llama 2 chat_completion: an optional system message is folded into the first
    # user message between <<SYS>> markers; then each (user, assistant) pair is
    # "<s>[INST] user [/INST] assistant </s>", and a final user message is
    # "<s>[INST] user [/INST]". The reply always follows [/INST], so add_generation_prompt
    # changes nothing here.
    messages = list(messages)
    if messages and messages[0]["role"] == "system":
        system = messages.pop(0)["content"]
        if not messages:
            messages = [{"role": "user", "content": ""}]
        first = messages[0]
        messages[0] = {
            "role": first["role"],
            "content": f"<<SYS>>\n{system}\n<</SYS>>\n\n{first['content']}",
        }
    roles = [m["role"] for m in messages]
    if any(r != ("user" if k % 2 == 0 else "assistant") for k, r in enumerate(roles)):
        raise TokenizerError(
            "the Llama 2 chat format needs roles user/assistant/user/... (after an optional system message), "
            f"got {roles}"
        )
    out = []
    for k in range(0, len(messages) - 1, 2):
        user, answer = messages[k]["content"].strip(), messages[k + 1]["content"].strip()
        out.append(f"<s>[INST] {user} [/INST] {answer} </s>")
    if len(messages) % 2 == 1:
        out.append(f"<s>[INST] {messages[-1]['content'].strip()} [/INST]")
    return "".join(out)


def chatml_format(messages: list[dict], add_generation_prompt: bool) -> str:
    out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


BUILTIN_FORMATS = {"llama3": llama3_format, "llama2": llama2_format, "chatml": chatml_format}


def render_jinja(template: str, messages: list[dict], add_generation_prompt: bool, **variables) -> str:
    """Render a Hugging Face / GGUF chat template with the settings transformers uses:
    trim_blocks and lstrip_blocks, loop controls, a sandbox, raise_exception() and
    strftime_now() available to the template."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TokenizerError(f"the chat template refused these messages: {message}")

    def tojson(value, indent=None):
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        compiled = env.from_string(template)
    except jinja2.TemplateError as e:
        raise TokenizerError(f"the model's chat template is not valid Jinja: {e}") from None
    return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)


def render_chat(tok, messages, add_generation_prompt: bool = True) -> str:
    messages = _check_messages(messages)
    if tok.chat_template:
        try:
            import jinja2  # noqa: F401  (optional: only needed for templates from model files)
        except ImportError:
            if tok.chat_format is None:
                raise TokenizerError(
                    "this model's chat template is a Jinja template; install jinja2 (pip install jinja2)"
                ) from None
        else:
            def name(i):
                return tok.special_name(i) if i is not None else ""

            return render_jinja(
                tok.chat_template,
                messages,
                add_generation_prompt,
                bos_token=name(tok.bos_id),
                eos_token=name(tok.eos_id),
            )
    if tok.chat_format in BUILTIN_FORMATS:
        return BUILTIN_FORMATS[tok.chat_format](messages, add_generation_prompt)
    raise TokenizerError(
        f"{tok.source}: this tokenizer has no chat template and no known chat format "
        "(base models usually have none); encode plain text instead"
    )
