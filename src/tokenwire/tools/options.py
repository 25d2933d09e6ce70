"""How the agent loop runs tools: one frozen value, like :class:`~tokenwire.Limits` for a stream.

>>> opts = ToolOptions(max_steps=3, timeout_s=5, allow=frozenset({"search"}))
>>> opts.max_steps, opts.max_concurrency
(3, 8)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from tokenwire.events import ToolCall

__all__ = ["Approver", "ToolOptions"]

Approver = Callable[[ToolCall], "bool | Awaitable[bool]"]
"""``approve(call) -> bool`` (sync or async): may this call run? Called for tools marked ``requires_approval``."""


class ToolOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The agent loop's bounds and policy (``generate(tools=…, tool_options=…)``,
    :class:`~tokenwire.tools.Agent`, :class:`~tokenwire.tools.ToolRunner`)."""

    max_steps: int = 8
    """Model turns at most; the run then ends with ``done(tool_calls)`` and says why."""
    max_concurrency: int = 8
    """Tools running at once (the rest wait their turn)."""
    timeout_s: float | None = 60.0
    """Per-call bound, unless the tool sets its own ``timeout_s``."""
    max_tool_calls: int | None = None
    """Calls per run; later ones get an error result."""
    max_args_bytes: int = 65_536
    """Size bound on a call's JSON arguments."""
    allow: frozenset[str] | None = None
    """Names allowed in this run (default: every tool in the set)."""
    approve: Any = None
    """An :data:`Approver` for calls to tools marked ``requires_approval`` (none given: denied)."""
    client_timeout_s: float = 300.0
    """How long to wait for a client-side tool's submitted result (a durable run: until the run
    is resumed with an error result saying none came)."""
    durable: bool = False
    """The run is durable (its log is its source of truth; the server's runs): a call that needs
    approval and has no ``approve`` callback, or a client-side tool's call, *suspends* the run
    until an answer arrives over the wire, and a tool that is not ``retry_safe`` starts only once
    its call is in the log."""
    caller_waits: bool = False
    """A call to one of the caller's own tools (declared in the request, not the agent's) waits
    for its result like a client-side tool's (a durable run suspends) instead of ending the run
    with ``finish_reason="tool_calls"`` for the caller to send the result in a new request."""
    approval_timeout_s: float = 3600.0
    """A suspended run whose approval has not come within this long is resumed with the call
    denied (the model gets an error result saying so)."""

    max_child_depth: int = 3
    """How deep a run tree may grow below a root run (:mod:`tokenwire.tools.tree`): a tool of a
    run this deep may not start another run."""
    max_children: int = 16
    """Child runs one run's tools may start, in all."""
    max_tree_output_tokens: int | None = None
    """Output tokens the runs below this one may generate together, children and theirs (each
    run's own, as the engine counts them, so also with a model that reports no usage), within any
    budget above: a child may not start once they are spent, and starts with ``max_output_tokens``
    no more than what is left (children running at once may pass it only by what they generate in
    parallel). None: no bound."""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_tree_output_tokens is not None and self.max_tree_output_tokens < 1:
            raise ValueError(f"max_tree_output_tokens must be >= 1 or None, got {self.max_tree_output_tokens}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
