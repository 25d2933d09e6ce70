"""The provider protocol: the one thing every model backend implements.

A provider maps its backend's native stream to tokenwire events and nothing else: no seq, no
timestamps, no limits, no observers (the engine does all of that). ``stream(request)`` is an async
iterator of *parts*:

- a ``str`` — a text delta (the fast path: the engine builds the ``text.delta`` event);
- any event built without an envelope (``ReasoningDelta("…")``, ``ToolCall(...)``, ``Usage(...)``);
- ``Done(finish_reason=…)`` — the provider finished for this reason (the engine stops reading and
  emits the real terminal with usage and stats);
- ``Error(code=…, message=…, source="provider")`` — an in-stream error reported by the backend.

Raising an exception ends the stream with an ``error`` event (source ``provider``; a
:class:`~tokenwire.errors.ProviderError` supplies ``code`` and ``retryable``). Closing the iterator
(``aclose``) must stop generation and release connections: the engine closes it on cancel and on
every limit.

>>> from tokenwire.core.provider import Provider
>>> class Echo:
...     model = "echo"
...     async def stream(self, request):
...         for word in request.messages[-1].content.split():
...             yield word + " "
>>> isinstance(Echo(), Provider)
True
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeAlias, runtime_checkable

from tokenwire.core.request import Request
from tokenwire.events import EventBase

__all__ = ["Checkpoint", "Control", "Part", "Provider", "Suspend", "model_name"]


class Control:
    """A part that is an instruction to the engine, not an event (the agent loop's, for durable runs)."""

    __slots__ = ()


class Checkpoint(Control):
    """Make every event so far durable in the log, then call ``reached()``: a tool that must not
    run twice starts only once its call is in the log (a node that takes the run over then
    knows it may have run)."""

    __slots__ = ("reached",)

    def __init__(self, reached: Callable[[], None]):
        self.reached = reached


class Suspend(Control):
    """Stop producing without ending the stream: the run waits in the log (for an approval, a
    client-side tool's result) until any node resumes it, or until wall time ``until`` when a
    supervisor resumes it with the timeout policy."""

    __slots__ = ("reason", "until")

    def __init__(self, reason: str, until: float):
        self.reason = reason
        self.until = until


Part: TypeAlias = "str | EventBase | Control"
"""What a provider yields: a text delta string, an event without envelope, or a :class:`Control`."""


@runtime_checkable
class Provider(Protocol):
    """A model backend. ``model`` names the model; ``stream`` yields parts for one request.

    Optional class attributes a server reads with ``getattr``: ``chooses_model`` (default True:
    a request's ``model`` picks the backend's model, as the cloud APIs do; a provider of one fixed
    model sets it False, and the native API refuses a run that names another model with
    ``model_not_found``), ``continues_prefix`` (a trailing assistant message is continued, not
    answered) and ``runs_own_tools`` (another framework's agent, :mod:`tokenwire.adapters`: the
    tool calls it streams are its own, so tokenwire's agent loop cannot wrap it; another node
    carries its run on from the log only through its own ``resume(state, decisions)``, which
    returns the provider that goes on).
    """

    model: str

    def stream(self, request: Request) -> AsyncIterator[Part]: ...


def model_name(provider: object) -> str:
    """``start.model``: the provider's ``model`` when it is a name (a wrapper that keeps the model
    it wraps in ``.model`` gets that one's name, not an unencodable object)."""
    model = getattr(provider, "model", "unknown")
    if isinstance(model, str):
        return model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, str) else type(model).__name__
