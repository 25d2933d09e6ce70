"""Run trees: the runs a tool call starts are its children.

A tool of a running agent that starts a run (:func:`tokenwire.generate`, ``run``, ``stream`` or
a :func:`tokenwire.sub_agent`) starts a *child run*, a stream of its own:

- its ``start`` names its parent (:class:`~tokenwire.events.Parent`: the stream, the tool call,
  the depth), and it goes to the parent's log unless it names another;
- the parent's stream marks it: ``step child started`` (``stream_id``, ``call_id``) and, once it
  ended, ``step child finished`` with its ``outcome`` (``done``, ``error`` or ``suspended``), its
  ``finish_reason`` or error ``code``, and its ``usage``, which the agent adds to the parent's;
- it does not outlive the call that started it: once the call is answered, or cancelled with the
  parent, the children still running are cancelled, and their ``finished`` marks come before the
  call's ``tool_result``. Cancelling a parent therefore ends its whole subtree;
- :class:`~tokenwire.ToolOptions` bounds a tree: ``max_child_depth``, ``max_children`` (per
  run) and ``max_tree_output_tokens`` (a :class:`TreeBudget` every run below shares: each run
  that ends counts its own output tokens, a child starts with no more than are left). Past them,
  starting
  a run raises :class:`~tokenwire.errors.TreeLimitExceeded` in the tool, which the model reads as
  the tool's error.

Only tools running on the agent's event loop start children (an async tool; a sync tool runs in
a worker thread, where a run it starts is a root run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol

import anyio
import msgspec

from tokenwire.core.limits import Limits
from tokenwire.engine import RunOptions, StreamHandle
from tokenwire.engine.stream import current_run
from tokenwire.errors import TreeLimitExceeded
from tokenwire.events import Done, Error, Parent, Step
from tokenwire.tools.options import ToolOptions

__all__ = ["CallScope", "Sender", "TreeBudget", "current_call"]


class Sender(Protocol):
    """The send side a tool call's events go to (an anyio memory object stream)."""

    async def send(self, item: Any, /) -> None: ...


class TreeBudget:
    """The output tokens the runs below ``owner`` may generate (``ToolOptions.max_tree_output_tokens``),
    shared by every run of that subtree and bounded by the budgets above it (``above``): each run
    counts its own output as it ends, here and above. A child starts capped (``max_output_tokens``)
    at the least left along the chain, so one child never passes the bound; children running at
    the same time are each capped at what was left when they started, and together may pass it
    by what they generate in parallel (a reservation would leave a child nothing for its own
    children)."""

    __slots__ = ("above", "limit", "owner", "used")

    def __init__(self, limit: int, owner: str, above: TreeBudget | None = None):
        self.limit = limit
        self.owner = owner
        self.above = above
        self.used = 0
        """Output tokens the runs that ended generated."""

    @classmethod
    def of_run(cls, limit: int, owner: str) -> TreeBudget:
        """A run's own budget, under the budget of the tree it is in (the current call's)."""
        return cls(limit, owner, _BUDGET.get())

    @property
    def left(self) -> int:
        """What a new child may still generate: the least left in this budget and those above."""
        budget: TreeBudget | None = self
        left = self.limit
        while budget is not None:
            left = min(left, budget.limit - budget.used)
            budget = budget.above
        return max(0, left)

    def charge(self, tokens: int) -> None:
        """Count ``tokens`` (negative: give them back) here and in every budget above."""
        budget: TreeBudget | None = self
        while budget is not None:
            budget.used += tokens
            budget = budget.above


_BUDGET: ContextVar[TreeBudget | None] = ContextVar("tokenwire_tree_budget", default=None)


class CallScope:
    """The tool call running now, as the parent of the runs it starts (see the module docstring)."""

    __slots__ = (
        "_children",
        "_loop",
        "_marks",
        "_send",
        "answered",
        "budget",
        "call_id",
        "counted",
        "options",
        "parent",
    )

    def __init__(
        self,
        call_id: str,
        send: Callable[[Any], Awaitable[None]],
        parent: StreamHandle,
        options: ToolOptions,
        counted: list[int],
        budget: TreeBudget | None = None,
    ):
        self.call_id = call_id
        self.parent = parent
        self.options = options
        self.counted = counted
        """Children started in the parent run so far (shared by its calls: ``max_children``)."""
        self.budget = budget if budget is not None else _BUDGET.get()
        """The parent run's own token budget, or the one of a run above it (inherited), or None."""
        self._send = send
        self._children: list[StreamHandle] = []
        self._marks: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()
        self.answered = False
        """The call was answered (or cancelled): no run may start as its child any more."""

    def bind(self) -> None:
        """Make this the current call of the running task (:func:`current_call`); the runs it
        starts (and the calls of those) share its token budget."""
        _CALL.set(self)
        _BUDGET.set(self.budget)

    def child_options(self, options: RunOptions) -> RunOptions:
        """``options`` for a child of this call, or :class:`TreeLimitExceeded` past a bound."""
        if self.answered:  # a task the tool left behind: its run would outlive the call, unmarked
            raise TreeLimitExceeded(f"tool call {self.call_id!r} was answered: it can start no more runs")
        above = self.parent.options.parent
        depth = (above.depth if above is not None else 0) + 1
        if depth > self.options.max_child_depth:
            raise TreeLimitExceeded(
                f"a run at depth {depth - 1} may not start another run (max_child_depth="
                f"{self.options.max_child_depth}); do the work here instead"
            )
        if self.counted[0] >= self.options.max_children:
            raise TreeLimitExceeded(
                f"this run already started {self.counted[0]} runs (max_children={self.options.max_children})"
            )
        budget, limits = self.budget, options.limits
        if budget is not None:
            left = budget.left
            if not left:
                raise TreeLimitExceeded(
                    f"the runs below this one used up their output tokens (max_tree_output_tokens={budget.limit}, "
                    f"{budget.used} generated); answer with what you have"
                )
            cap = limits.max_output_tokens if limits is not None else None
            if cap is None or cap > left:
                limits = msgspec.structs.replace(limits or Limits(), max_output_tokens=left)
        self.counted[0] += 1
        parent = Parent(stream_id=self.parent.stream_id, call_id=self.call_id, depth=depth)
        log = options.log if options.log is not None else self.parent.log
        return msgspec.structs.replace(options, parent=parent, log=log, limits=limits)

    def adopt(self, child: StreamHandle) -> None:
        """Mark ``child`` in the parent's stream now and when it ends; it ends with this call."""
        self._children.append(child)
        mark = self._loop.create_task(self._mark(child), name=f"tokenwire-child-{child.stream_id}")
        self._marks.append(mark)

    async def settle(self, reason: str) -> None:
        """Cancel the children still running (``reason``) and wait until each one is marked ended."""
        self.answered = True
        for child in self._children:
            child.cancel(reason)
        if self._marks:
            await asyncio.wait(self._marks)

    async def _mark(self, child: StreamHandle) -> None:
        ids = {"stream_id": child.stream_id, "call_id": self.call_id}
        await child.ready()  # in the log before the mark: a reader of the tree can read it at once
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._send(Step(name="child", status="started", detail=ids))
        await child.settled()
        end = child.terminal
        detail: dict[str, Any] = {**ids, "outcome": "suspended" if end is None else end.type}
        if isinstance(end, Done):
            detail["finish_reason"] = end.finish_reason
        elif isinstance(end, Error):
            detail["code"] = end.code
        result = child.result()
        usage = result.usage
        detail["usage"] = None if usage is None else msgspec.to_builtins(usage)
        if self.budget is not None and result.stats is not None:  # its own (its children count theirs)
            self.budget.charge(result.stats.output_tokens)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._send(Step(name="child", status="finished", detail=detail))


_CALL: ContextVar[CallScope | None] = ContextVar("tokenwire_call_scope", default=None)


def current_call() -> CallScope | None:
    """The tool call running on this task (the parent of a run started here), or None."""
    scope = _CALL.get()
    if scope is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None  # a worker thread: no children from there
    if scope._loop is not loop or scope.parent is not current_run.get():
        return None  # a worker thread, or code of a child run's own task (not inside a tool call of it)
    return scope
