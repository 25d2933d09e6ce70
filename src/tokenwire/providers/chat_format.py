"""Chat messages → prompt text for local models (sans-I/O: strings in, strings out).

A GGUF that carries a chat template (``tokenizer.chat_template``) is formatted with it (Jinja2, as
llama.cpp and transformers do). The bundled Gemma 3 270M GGUF carries none, so
:func:`gemma_prompt` applies Gemma's turn format itself: ``user`` and ``model`` turns, no system
role (the system prompt opens the first user turn), tool results as user turns.

>>> from tokenwire.core.request import Message
>>> print(gemma_prompt([Message("system", "Be brief."), Message("user", "Hi")]), end="")
<start_of_turn>user
Be brief.
<BLANKLINE>
Hi<end_of_turn>
<start_of_turn>model
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from tokenwire.core.request import Message, ToolSpec

__all__ = [
    "GEMMA_END_OF_TURN",
    "TOOL_CALL_PREFIX",
    "gemma_prompt",
    "jinja_formatter",
    "tool_instructions",
]

GEMMA_END_OF_TURN = "<end_of_turn>"
TOOL_CALL_PREFIX = '{"tool": "'
"""How a tool call starts in the model's turn; the name and arguments follow under grammars."""


def tool_instructions(tools: Sequence[ToolSpec]) -> str:
    """The system text that tells a local model which tools exist and how a call looks."""
    specs = [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools]
    return (
        "You can call these tools:\n"
        + json.dumps(specs, ensure_ascii=False)
        + '\nTo call one, reply with {"tool": "<name>", "arguments": {...}} only.'
    )


def _message_text(m: Message) -> str:
    if m.role == "tool":
        return f"Result of tool {m.name or ''} (call {m.tool_call_id or ''}):\n{m.content}"
    if m.role == "assistant" and m.tool_calls:
        calls = "\n".join(
            json.dumps({"tool": c.get("name"), "arguments": c.get("args", {})}, ensure_ascii=False)
            for c in m.tool_calls
        )
        return f"{m.content}\n{calls}" if m.content else calls
    return m.content


def gemma_prompt(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
    """Format messages in Gemma's turn format, ending with an open model turn."""
    system = [m.content for m in messages if m.role == "system"]
    if tools:
        system.append(tool_instructions(tools))
    turns: list[tuple[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "model" if m.role == "assistant" else "user"
        text = _message_text(m)
        if turns and turns[-1][0] == role:  # Gemma alternates turns: merge consecutive ones
            turns[-1] = (role, turns[-1][1] + "\n\n" + text)
        else:
            turns.append((role, text))
    if system:
        preamble = "\n\n".join(system)
        if turns and turns[0][0] == "user":
            turns[0] = ("user", preamble + "\n\n" + turns[0][1])
        else:
            turns.insert(0, ("user", preamble))
    out = [f"<start_of_turn>{role}\n{text}{GEMMA_END_OF_TURN}\n" for role, text in turns]
    out.append("<start_of_turn>model\n")
    return "".join(out)


def jinja_formatter(template: str, *, bos_token: str = "", eos_token: str = "") -> Callable[..., str]:
    """A formatter from a GGUF's Jinja chat template: ``fmt(messages, tools) -> prompt``.

    The BOS token is left out of the rendered text when the tokenizer adds it itself.
    """
    import jinja2
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template error: {message}")

    compiled = env.from_string(template)

    def fmt(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        msgs: list[dict[str, Any]] = [{"role": m.role, "content": _message_text(m)} for m in messages]
        if tools:
            if msgs and msgs[0]["role"] == "system":
                msgs[0]["content"] += "\n\n" + tool_instructions(tools)
            else:
                msgs.insert(0, {"role": "system", "content": tool_instructions(tools)})
        return compiled.render(
            messages=msgs,
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
            raise_exception=raise_exception,
        )

    return fmt
