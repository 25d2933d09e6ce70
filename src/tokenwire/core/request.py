"""What a model run is asked to do: messages, tools and generation parameters.

Providers read a :class:`Request`; the engine only passes it through (it fills ``max_tokens`` from
``Limits.max_output_tokens`` when the request leaves it unset). Plain prompt strings are accepted
everywhere a request is and become one user message.

>>> from tokenwire.core.request import Request, Message, as_request
>>> as_request("Hi").messages
[Message(role='user', content='Hi', tool_call_id=None, name=None, tool_calls=None)]
>>> Request([Message("system", "Be brief."), Message("user", "Hi")], temperature=0.2).temperature
0.2
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = ["Message", "Request", "ToolChoice", "ToolSpec", "as_request"]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
ToolChoice: TypeAlias = str
"""``"auto"``, ``"none"``, ``"required"`` or the name of one tool."""


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool the model may call, described by name, description and JSON Schema."""

    name: str
    """Tool name as the model sees it."""
    description: str = ""
    """What the tool does, for the model."""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON Schema of the arguments object."""


class Message(msgspec.Struct, frozen=True):
    """One chat message."""

    role: Role
    """``system``, ``user``, ``assistant`` or ``tool``."""
    content: str
    """The message text (for ``tool`` messages, the tool's result as text)."""
    tool_call_id: str | None = None
    """For ``tool`` messages: the call this result answers."""
    name: str | None = None
    """For ``tool`` messages: the tool's name."""
    tool_calls: list[dict[str, Any]] | None = None
    """For ``assistant`` messages: calls made (``{"call_id", "name", "args"}``)."""


class Request(msgspec.Struct, frozen=True):
    """A model run's input."""

    messages: list[Message]
    """The conversation so far."""
    tools: list[ToolSpec] = []
    """Tools the model may call."""
    tool_choice: ToolChoice = "auto"
    """``auto``, ``none``, ``required`` or a tool name."""
    temperature: float | None = None
    """Sampling temperature; None for the provider's default."""
    max_tokens: int | None = None
    """Cap on generated tokens; None for the provider's default."""
    stop: list[str] = []
    """Stop sequences."""
    seed: int | None = None
    """Sampling seed, where the provider supports one."""
    model: str | None = None
    """Overrides the provider's default model."""
    extra: dict[str, Any] = {}
    """Provider-specific parameters passed through unchanged."""


def as_request(request: str | Request) -> Request:
    """Turn a prompt string into a one-message request; pass requests through."""
    if isinstance(request, Request):
        return request
    if isinstance(request, str):
        return Request([Message("user", request)])
    raise TypeError(f"request must be a str prompt or a tokenwire.Request, got {type(request).__name__}")
