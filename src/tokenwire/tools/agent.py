"""The agent loop: model turns and tool executions as one continuous stream.

:class:`Agent` wraps a provider. Each model turn is bracketed by ``step`` events (``name="turn"``).
While the model streams, every ``tool_call`` starts executing at once (through a
:class:`~tokenwire.tools.ToolRunner`), concurrently with the rest of the turn and with other
calls; ``tool_result`` events join the stream as they complete. When the turn ends and all its
calls are answered, the results go back to the model as ``tool`` messages and the next turn
streams, until the model answers without calling a tool (``done``, finish_reason ``stop``) or
``max_steps`` turns were used (``done``, finish_reason ``tool_calls``, with the reason). A forced
``tool_choice`` (``"required"`` or a tool's name) applies to the first turn; later turns use
``"auto"`` so the model can answer with the results.

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> from tokenwire.events import ToolCall
>>> @tokenwire.tool
... def add(a: int, b: int) -> int:
...     '''Add two integers.'''
...     return a + b
>>> model = Scripted.turns([ToolCall(call_id="c1", name="add", args={"a": 2, "b": 3})], ["The sum is 5."])
>>> response = tokenwire.run_sync(tokenwire.tools.Agent(model, [add]), "What is 2+3?")
>>> [r.result for r in response.tool_results], response.text, response.finish_reason
([5], 'The sum is 5.', 'stop')

Why a provider wrapper and not a log subscriber: tool results must join the *same* stream, and a
stream has exactly one writer (the engine), which assigns every seq. Wrapping the provider makes
the tools part of the producer, so ordering, cancellation (running tools are cancelled with the
stream) and limits need no second writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from tokenwire.core.provider import Part, Provider
from tokenwire.core.request import Message, Request
from tokenwire.events import Done, Error, Step, TokenUsage, ToolCall, ToolCallDelta, ToolResult, Usage
from tokenwire.tools.definition import Tool, Toolset
from tokenwire.tools.options import ToolOptions
from tokenwire.tools.runner import ToolRunner

__all__ = ["Agent"]

_MODEL_END = object()


class _ModelFailed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Agent:
    """A provider that runs the agent loop around ``provider`` with ``tools``.

    ``options`` (:class:`~tokenwire.tools.ToolOptions`) bounds the turns and the tool runner
    (concurrency, timeouts, ``max_tool_calls``, ``allow``, ``approve``, …).
    ``submit(call_id, result)`` delivers results of client-side tools.
    """

    def __init__(
        self,
        provider: Provider,
        tools: Toolset | Iterable[Tool | Callable[..., Any]],
        options: ToolOptions | None = None,
    ):
        self.provider = provider
        self.tools = tools if isinstance(tools, Toolset) else Toolset(tools)
        self.model = provider.model
        self.options = options or ToolOptions()
        self.max_steps = self.options.max_steps
        self._runners: list[ToolRunner] = []

    def submit(self, call_id: str, result: Any, *, is_error: bool = False) -> None:
        """Deliver the result of a client-side tool call to the run waiting for it."""
        for runner in self._runners:
            with contextlib.suppress(KeyError):
                runner.submit(call_id, result, is_error=is_error)
                return
        raise KeyError(f"no client-side tool call {call_id!r} is waiting for a result")

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        runner = ToolRunner(self.tools, self.options)
        self._runners.append(runner)
        allowed = runner.allow
        own = {t.name for t in self.tools}
        specs = [t.spec for t in self.tools if allowed is None or t.name in allowed]
        # Tools the request declares that the agent does not own are the caller's: the model sees
        # them beside the agent's, and a turn that calls one ends the run (finish "tool_calls")
        # once the agent's own calls are answered; the caller sends the result in its next request.
        deferred = {t.name for t in request.tools if t.name not in own}
        declared = {t.name for t in request.tools}
        tools = [*(s for s in specs if s.name not in declared), *request.tools]
        base = msgspec.structs.replace(request, tools=tools)
        messages = list(request.messages)
        usage = [0, 0]
        try:
            for turn in range(1, self.max_steps + 1):
                yield Step(name="turn", status="started", detail={"turn": turn})
                outcome: dict[str, Any] = {}
                turn_request = msgspec.structs.replace(base, messages=messages)
                async for part in self._turn(turn_request, runner, usage, outcome, deferred):
                    yield part
                calls: list[ToolCall] = outcome["calls"]
                yield Step(name="turn", status="finished", detail={"turn": turn, "tool_calls": len(calls)})
                if outcome.get("error") is not None:
                    yield outcome["error"]
                    return
                total = TokenUsage(usage[0], usage[1]) if usage != [0, 0] else None
                finish = outcome.get("finish")
                if not calls or finish == "length":
                    yield Done(finish_reason=finish or "stop", usage=total)
                    return
                if any(c.name in deferred for c in calls):
                    yield Done(finish_reason="tool_calls", usage=total)  # the caller answers those
                    return
                messages = [*messages, *self._feedback(outcome["text"], calls, outcome["results"])]
                if base.tool_choice not in ("auto", "none"):
                    # A forced call ("required" or a tool's name) is satisfied: let the model answer.
                    base = msgspec.structs.replace(base, tool_choice="auto")
            yield Done(
                finish_reason="tool_calls",
                usage=TokenUsage(usage[0], usage[1]) if usage != [0, 0] else None,
                reason=f"max_steps={self.max_steps} reached while the model was still calling tools",
            )
        finally:
            await runner.aclose()
            self._runners.remove(runner)

    async def _turn(
        self, request: Request, runner: ToolRunner, usage: list[int], outcome: dict[str, Any], deferred: set[str]
    ) -> AsyncIterator[Part]:
        """One model turn merged with tool outputs; fills ``outcome`` (calls, results, text, finish).

        Everything arrives on one bounded channel with several send sides: the model's (closed
        when its stream ends), one per tool call (closed when the call is answered) and the
        turn's own (closed once the model ended, so no call can start after it). The turn ends
        when the channel reports end-of-stream: every sender closed and every item read, so a
        result in transit is never lost.
        """
        calls: list[ToolCall] = []
        results: dict[str, ToolResult] = {}
        text: list[str] = []
        raw_args: dict[str, list[str]] = {}
        outcome.update(calls=calls, results=results, text=text)
        send, receive = anyio.create_memory_object_stream[Any](max_buffer_size=64)
        pump = asyncio.get_running_loop().create_task(self._pump(request, send.clone()))
        try:
            async with receive:
                async for item in receive:
                    if item is _MODEL_END:
                        send.close()  # the model is done: no call can start any more
                        continue
                    if isinstance(item, _ModelFailed):
                        raise item.exc
                    if isinstance(item, ToolResult):
                        results[item.call_id] = item
                    elif isinstance(item, str):
                        text.append(item)
                    elif isinstance(item, ToolCallDelta):
                        raw_args.setdefault(item.call_id, []).append(item.args_delta)
                    elif isinstance(item, ToolCall):
                        calls.append(item)
                        raw = "".join(raw_args.pop(item.call_id, [])) or None
                        if item.name not in deferred:
                            runner.start(item, send.clone(), raw)
                    elif isinstance(item, Usage):
                        usage[0] += item.input_tokens
                        usage[1] += item.output_tokens
                    elif isinstance(item, Done):
                        outcome["finish"] = item.finish_reason
                        continue  # the loop decides how the stream ends
                    elif isinstance(item, Error):
                        outcome["error"] = item
                        continue
                    yield item
        finally:
            send.close()
            pump.cancel()
            await asyncio.wait([pump])

    async def _pump(self, request: Request, out: MemoryObjectSendStream[Any]) -> None:
        """Task body: the model's stream onto the turn's channel (owned by the turn, which cancels it)."""
        stream = self.provider.stream(request)
        async with out:
            try:
                async for part in stream:
                    await out.send(part)
                await out.send(_MODEL_END)
            except anyio.BrokenResourceError:
                pass  # the turn stopped reading (it failed or was cancelled)
            except Exception as exc:
                with contextlib.suppress(anyio.BrokenResourceError):
                    await out.send(_ModelFailed(exc))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

    @staticmethod
    def _feedback(text: list[str], calls: list[ToolCall], results: dict[str, ToolResult]) -> list[Message]:
        assistant = Message(
            "assistant",
            "".join(text),
            tool_calls=[{"call_id": c.call_id, "name": c.name, "args": c.args} for c in calls],
        )
        tool_messages = []
        for call in calls:
            result = results.get(call.call_id)
            content = "no result" if result is None else json.dumps(result.result, ensure_ascii=False, default=str)
            if result is not None and result.is_error:
                content = f"error: {result.result}"
            tool_messages.append(Message("tool", content, tool_call_id=call.call_id, name=call.name))
        return [assistant, *tool_messages]
