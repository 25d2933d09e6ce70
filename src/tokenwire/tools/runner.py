"""Executes tool calls the moment they arrive: validated, bounded, concurrent, cancellable.

The agent loop hands every ``tool_call`` to :meth:`ToolRunner.start` as soon as the model
produces it, before the model's turn ends, with the send side of a channel (an anyio memory
object stream); the runner answers each call with exactly one ``tool_result`` on it (plus
``step`` events for approvals, client-side waits and progress) and closes it when the call is
answered, so the reader sees the end of the stream only once every result has arrived.

Nothing invalid reaches a function: unknown or disallowed tools, calls over ``max_tool_calls``,
oversized or malformed arguments and schema violations all become error results with a message
for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from anyio.abc import ObjectSendStream

from tokenwire.core.provider import Checkpoint
from tokenwire.core.tasks import TaskSet
from tokenwire.engine.stream import current_run
from tokenwire.events import Data, StateDelta, StateSnapshot, Step, ToolCall, ToolResult
from tokenwire.tools.definition import CURRENT_CALL, Progress, Tool, ToolArgumentsInvalid, Toolset
from tokenwire.tools.options import ToolOptions
from tokenwire.tools.tree import CallScope, Sender, TreeBudget

__all__ = ["AwaitingApproval", "ToolRunner", "client_wait"]


class AwaitingApproval:
    """Sent by a durable run's call that waits for an answer over the wire (an approval, or a
    client-side tool's result; it has no result yet): once the turn has nothing else to do, the
    run suspends."""

    __slots__ = ("call_id",)

    def __init__(self, call_id: str):
        self.call_id = call_id


def client_wait(call: ToolCall, timeout_s: float) -> Step:
    """The ``step client_tool started`` of a durable run's call that the client answers: its
    result is due within ``timeout_s`` (wall time ``expires``)."""
    detail = {"call_id": call.call_id, "tool": call.name, "args": call.args}
    return Step(name="client_tool", status="started", detail={**detail, "expires": round(time.time() + timeout_s, 3)})


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    return msgspec.to_builtins(value)


class ToolRunner:
    """Runs tool calls concurrently under the bounds of :class:`~tokenwire.tools.ToolOptions`
    (concurrency, per-call timeout, calls per run, argument size, the allowed names, the approver,
    the client-side wait)."""

    def __init__(self, tools: Toolset, options: ToolOptions | None = None):
        opts = options or ToolOptions()
        self.tools = tools
        self.options = opts
        self.timeout_s = opts.timeout_s
        self.max_tool_calls = opts.max_tool_calls
        self.max_args_bytes = opts.max_args_bytes
        self.allow = opts.allow
        self.approve = opts.approve
        self.client_timeout_s = opts.client_timeout_s
        self.calls = 0
        """Calls started in this run."""
        self._max_concurrency = opts.max_concurrency
        self._semaphore = asyncio.Semaphore(opts.max_concurrency)
        self._tasks = TaskSet("tool runner")
        self._client: dict[str, asyncio.Future[tuple[Any, bool]]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._children = [0]  # child runs this run's tools started (ToolOptions.max_children)
        self._budget: TreeBudget | None = None  # made with the first call (ToolOptions.max_tree_output_tokens)

    @property
    def running(self) -> int:
        """Calls started and not answered yet."""
        return len(self._tasks)

    def start(
        self,
        call: ToolCall,
        out: ObjectSendStream[Any],
        raw_args: str | None = None,
        *,
        decision: tuple[bool, str] | None = None,
    ) -> asyncio.Task[None]:
        """Start executing ``call`` now; its events go to ``out``, which the call closes when answered.

        ``raw_args`` is the JSON text the model streamed, when the provider had it: malformed
        JSON there is reported to the model instead of being hidden behind ``args={}``.
        ``decision`` (approved, by whom) answers an approval that a suspended durable run asked
        for. In a durable run, a call that needs an approval nobody can give here sends
        :class:`AwaitingApproval` and ends without a result, and a tool that is not
        ``retry_safe`` first sends a :class:`~tokenwire.core.provider.Checkpoint` and starts once
        the engine made its call durable. The task is owned by this runner (:meth:`aclose` cancels it).
        """
        self.calls += 1
        return self._tasks.start(self._answer(call, out, raw_args, self.calls, decision), name=f"tool-{call.name}")

    async def wait(self) -> None:
        """Wait until every started call has been answered."""
        await self._tasks.wait()

    def submit(self, call_id: str, result: Any, *, is_error: bool = False) -> None:
        """Deliver the result of a client-side tool call."""
        fut = self._client.get(call_id)
        if fut is None:
            raise KeyError(f"no client-side tool call {call_id!r} is waiting for a result")
        if not fut.done():
            fut.set_result((result, is_error))

    async def aclose(self) -> None:
        """Cancel running calls and wait for them; release the worker threads of sync tools."""
        self._tasks.cancel()
        await self._tasks.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- one call ------------------------------------------------------------------------------

    async def _answer(
        self,
        call: ToolCall,
        out: ObjectSendStream[Any],
        raw_args: str | None,
        n: int,
        decision: tuple[bool, str] | None,
    ) -> None:
        CURRENT_CALL.set(call.call_id)  # this task's own context: the tool reads it with call_id()
        parent = current_run.get()
        async with out:  # closed when answered (or cancelled): the reader counts on it
            if parent is None:
                await self._run(call, out, raw_args, n, decision)
                return
            limit = self.options.max_tree_output_tokens
            if limit is not None and self._budget is None:
                self._budget = TreeBudget.of_run(limit, parent.stream_id)
            scope = CallScope(call.call_id, out.send, parent, self.options, self._children, self._budget)
            scope.bind()  # the runs the tool starts are this call's children
            try:
                await self._run(call, _Answering(out, scope), raw_args, n, decision)
            finally:  # cancelled with the parent run: so are the children, marked ended
                await scope.settle("the tool call that started it was cancelled")

    async def _run(
        self,
        call: ToolCall,
        out: Sender,
        raw_args: str | None,
        number: int,
        decision: tuple[bool, str] | None,
    ) -> None:
        send = out.send
        try:
            tool, kwargs = self._check(call, raw_args, number)
        except ToolArgumentsInvalid as exc:
            await send(ToolResult(call_id=call.call_id, name=call.name, result=str(exc), is_error=True))
            return
        if decision is not None and decision[1] == "log":  # answered before, and logged then
            if not decision[0]:
                await self._error(out, call, f"the call to tool {tool.name!r} was denied")
                return
        elif decision is not None:
            detail = {"call_id": call.call_id, "tool": tool.name, "args": call.args}
            await send(
                Step(name="approval", status="finished", detail={**detail, "approved": decision[0], "by": decision[1]})
            )
            if not decision[0]:
                await self._error(out, call, f"the call to tool {tool.name!r} was denied ({decision[1]})")
                return
        elif tool.requires_approval:
            approved = await self._approved(tool, call, out)
            if approved is None:
                return  # the run suspends until the answer comes over the wire
            if not approved:
                await self._error(out, call, f"the call to tool {tool.name!r} was denied by the approver")
                return
        if tool.client_side:
            await self._client_side(tool, call, out)
            return
        if self.options.durable and not tool.retry_safe:
            logged: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def reached() -> None:
                if not logged.done():
                    logged.set_result(None)

            await send(Checkpoint(reached))
            await logged  # the call is in the log: a node taking the run over will not run it again
        timeout = tool.timeout_s if tool.timeout_s is not None else self.timeout_s
        try:
            async with self._semaphore, asyncio.timeout(timeout):
                result = await self._execute(tool, call, kwargs, out)
        except TimeoutError:
            await self._error(out, call, f"tool {tool.name!r} timed out after {timeout} s")
            return
        except Exception as exc:
            await self._error(out, call, f"tool {tool.name!r} raised {type(exc).__name__}: {exc}")
            return
        try:
            value = _jsonable(result)
        except (TypeError, msgspec.EncodeError) as exc:
            await self._error(out, call, f"tool {tool.name!r} returned a value that is not JSON-serialisable: {exc}")
            return
        await send(ToolResult(call_id=call.call_id, name=tool.name, result=value))

    def _check(self, call: ToolCall, raw_args: str | None, number: int) -> tuple[Tool, dict[str, Any]]:
        tool = self.tools.get(call.name)
        if tool is None or (self.allow is not None and call.name not in self.allow):
            names = [n for n in self.tools.names if self.allow is None or n in self.allow]
            raise ToolArgumentsInvalid(
                f"there is no tool {call.name!r} here; available tools: {', '.join(names) or 'none'}"
            )
        if self.max_tool_calls is not None and number > self.max_tool_calls:
            raise ToolArgumentsInvalid(f"this run allows at most {self.max_tool_calls} tool calls; answer without more")
        size = len(raw_args.encode()) if raw_args is not None else len(msgspec.json.encode(call.args))
        if size > self.max_args_bytes:
            raise ToolArgumentsInvalid(
                f"tool {call.name!r} arguments are {size} bytes; the limit is {self.max_args_bytes} bytes"
            )
        args: Any = call.args
        if raw_args is not None and raw_args.strip():
            try:
                args = json.loads(raw_args)
            except ValueError as exc:
                raise ToolArgumentsInvalid(
                    f"tool {call.name!r} arguments are not valid JSON ({exc}): {raw_args[:200]!r}"
                ) from None
        return tool, tool.validate(args)

    async def _approved(self, tool: Tool, call: ToolCall, out: Sender) -> bool | None:
        detail: dict[str, Any] = {"call_id": call.call_id, "tool": tool.name, "args": call.args}
        suspends = self.approve is None and self.options.durable
        if suspends:  # answered over the wire, by then (else a denial)
            detail["expires"] = round(time.time() + self.options.approval_timeout_s, 3)
        await out.send(Step(name="approval", status="started", detail=detail))
        if suspends:
            await out.send(AwaitingApproval(call.call_id))
            return None
        approved = False
        if self.approve is not None:
            try:
                verdict = self.approve(call)
                approved = bool(await verdict if inspect.isawaitable(verdict) else verdict)
            except Exception as exc:
                detail = {**detail, "error": f"{type(exc).__name__}: {exc}"}
        await out.send(Step(name="approval", status="finished", detail={**detail, "approved": approved}))
        return approved

    async def _client_side(self, tool: Tool, call: ToolCall, out: Sender) -> None:
        if self.options.durable:  # the client answers over the wire, on any node: the run suspends
            await out.send(client_wait(call, self.client_timeout_s))
            await out.send(AwaitingApproval(call.call_id))
            return
        fut: asyncio.Future[tuple[Any, bool]] = asyncio.get_running_loop().create_future()
        self._client[call.call_id] = fut
        detail = {"call_id": call.call_id, "tool": tool.name, "args": call.args}
        await out.send(Step(name="client_tool", status="started", detail=detail))
        try:
            result, is_error = await asyncio.wait_for(fut, self.client_timeout_s)
        except TimeoutError:
            waited = self.client_timeout_s
            await self._error(out, call, f"client-side tool {tool.name!r} got no result within {waited} s")
            return
        finally:
            self._client.pop(call.call_id, None)
        await out.send(Step(name="client_tool", status="finished", detail=detail))
        await out.send(ToolResult(call_id=call.call_id, name=tool.name, result=result, is_error=is_error))

    async def _execute(self, tool: Tool, call: ToolCall, kwargs: dict[str, Any], out: Sender) -> Any:
        if tool.is_async_gen:
            result: Any = None
            gen = tool.fn(**kwargs)
            try:
                async for item in gen:
                    if isinstance(item, Progress):
                        detail = {"call_id": call.call_id, "progress": _jsonable(item.detail)}
                        await out.send(Step(name=f"tool:{tool.name}", status="started", detail=detail))
                    elif isinstance(item, Data | StateSnapshot | StateDelta):
                        await out.send(item)  # the application's own data, into the run's stream
                    else:
                        result = item
            finally:
                with contextlib.suppress(Exception):
                    await gen.aclose()
            return result
        if tool.is_async:
            return await tool.fn(**kwargs)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="tokenwire-tool")
        context = contextvars.copy_context()  # call_id() works in the worker thread too
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(context.run, tool.fn, **kwargs)
        )

    async def _error(self, out: Sender, call: ToolCall, message: str) -> None:
        await out.send(ToolResult(call_id=call.call_id, name=call.name, result=message, is_error=True))


class _Answering:
    """A call's send side that, before the call's result, ends its children (their marks first)."""

    __slots__ = ("_out", "_scope")

    def __init__(self, out: ObjectSendStream[Any], scope: CallScope):
        self._out = out
        self._scope = scope

    async def send(self, item: Any, /) -> None:
        if isinstance(item, ToolResult):
            await self._scope.settle("the tool call that started it was answered")
        await self._out.send(item)
