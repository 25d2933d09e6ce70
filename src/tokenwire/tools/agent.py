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
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from tokenwire.core.fold import RunState, TurnState, child_usage, tool_messages
from tokenwire.core.provider import Part, Provider, Suspend
from tokenwire.core.request import Message, Request
from tokenwire.events import Done, Error, Step, TokenUsage, ToolCall, ToolCallDelta, ToolResult, Usage
from tokenwire.tools.definition import Tool, Toolset
from tokenwire.tools.options import ToolOptions
from tokenwire.tools.runner import AwaitingApproval, ToolRunner, client_wait

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
        if getattr(provider, "runs_own_tools", False):
            raise ValueError(
                f"{provider.model!r} runs its own tools (another framework's agent): tokenwire's agent loop "
                "would run its calls a second time; give it its tools in its own framework"
            )
        self.provider = provider
        self.tools = tools if isinstance(tools, Toolset) else Toolset(tools)
        self.model = provider.model
        self.options = options or ToolOptions()
        self.max_steps = self.options.max_steps
        self._runners: list[ToolRunner] = []
        self._resume: tuple[RunState, dict[str, tuple[bool, str]], dict[str, tuple[Any, bool]]] | None = None

    def submit(self, call_id: str, result: Any, *, is_error: bool = False) -> None:
        """Deliver the result of a client-side tool call to the run waiting for it."""
        for runner in self._runners:
            with contextlib.suppress(KeyError):
                runner.submit(call_id, result, is_error=is_error)
                return
        raise KeyError(f"no client-side tool call {call_id!r} is waiting for a result")

    def resume(
        self,
        state: RunState,
        decisions: Mapping[str, tuple[bool, str]] | None = None,
        results: Mapping[str, tuple[Any, bool]] | None = None,
    ) -> Agent:
        """Carry a durable run on from its folded log (:func:`tokenwire.core.fold.fold`) instead of
        starting it: a node that took the run over, or an answer that resumes a suspended run
        (``decisions``: call id -> (approved, by whom); ``results``: a client-side call's id ->
        (its result, is_error)). Returns this agent; its next :meth:`stream` continues the run
        (give it the run's original request)."""
        self._resume = (state, dict(decisions or {}), dict(results or {}))
        return self

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        runner = ToolRunner(self.tools, self.options)
        self._runners.append(runner)
        allowed = runner.allow
        own = {t.name for t in self.tools}
        specs = [t.spec for t in self.tools if allowed is None or t.name in allowed]
        # Tools the request declares that the agent does not own are the caller's: the model sees
        # them beside the agent's, and a turn that calls one ends the run (finish "tool_calls")
        # once the agent's own calls are answered; the caller sends the result in its next request
        # (or, ``caller_waits``, the call waits for its result as a client-side tool's does).
        deferred = {t.name for t in request.tools if t.name not in own}
        declared = {t.name for t in request.tools}
        tools = [*(s for s in specs if s.name not in declared), *request.tools]
        base = msgspec.structs.replace(request, tools=tools)
        messages = list(request.messages)
        usage = [0, 0]
        first = 1
        resume, self._resume = self._resume, None
        try:
            if resume is not None:  # a durable run carried on from its log
                state, decisions, results = resume
                messages, usage, first = state.messages(messages), list(state.usage), state.turn + 1
                last = state.open
                if state.turns and not last.finished:
                    outcome: dict[str, Any] = {}
                    turn_request = msgspec.structs.replace(base, messages=messages, tool_choice="auto")
                    answers = (decisions, results)
                    resumed = self._resumed_turn(last, state, answers, turn_request, runner, usage, outcome, deferred)
                    async for part in resumed:
                        yield part
                    if outcome.get("suspend") is not None:
                        yield outcome["suspend"]
                        return
                    if last.number:  # a run without the agent loop (turn 0) has no turn steps
                        detail = {"turn": last.number, "tool_calls": len(outcome["calls"])}
                        yield Step(name="turn", status="finished", detail=detail)
                    end = self._decide(outcome, usage, deferred)
                    if end is not None:
                        yield end
                        return
                    messages = [
                        *messages,
                        *tool_messages("".join(outcome["text"]), outcome["calls"], outcome["results"]),
                    ]
                elif state.turns and not last.calls:
                    yield Done(finish_reason="stop", usage=TokenUsage(usage[0], usage[1]) if usage != [0, 0] else None)
                    return
                base = msgspec.structs.replace(base, tool_choice="auto")
            for turn in range(first, self.max_steps + 1):
                yield Step(name="turn", status="started", detail={"turn": turn})
                outcome = {}
                turn_request = msgspec.structs.replace(base, messages=messages)
                async for part in self._turn(turn_request, runner, usage, outcome, deferred):
                    yield part
                if outcome.get("suspend") is not None:
                    yield outcome["suspend"]  # the turn waits in the log for its approvals
                    return
                calls: list[ToolCall] = outcome["calls"]
                yield Step(name="turn", status="finished", detail={"turn": turn, "tool_calls": len(calls)})
                end = self._decide(outcome, usage, deferred)
                if end is not None:
                    yield end
                    return
                messages = [*messages, *tool_messages("".join(outcome["text"]), calls, outcome["results"])]
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

    @staticmethod
    def _decide(outcome: dict[str, Any], usage: list[int], deferred: set[str]) -> Done | Error | None:
        """How the run goes on after a turn: its end (an error, an answer, the caller's calls),
        or None: another turn."""
        if outcome.get("error") is not None:
            error: Error = outcome["error"]
            return error
        total = TokenUsage(usage[0], usage[1]) if usage != [0, 0] else None
        finish = outcome.get("finish")
        calls: list[ToolCall] = outcome["calls"]
        if not calls or finish == "length":
            return Done(finish_reason=finish or "stop", usage=total)
        if any(c.name in deferred and c.call_id not in outcome["results"] for c in calls):
            return Done(finish_reason="tool_calls", usage=total)  # the caller answers those
        return None

    def _suspension(self, waiting: list[str], expires: Mapping[str, Any], clients: Iterable[str] = ()) -> Suspend:
        """The run waits for these calls' answers (approvals; the client's result for those in
        ``clients``) until the first of them expires (``expires``: call id -> wall time)."""
        default = time.time() + self.options.approval_timeout_s
        until = min(float(e) if isinstance(e := expires.get(cid), int | float) else default for cid in waiting)
        results = [cid for cid in waiting if cid in set(clients)]
        approvals = [cid for cid in waiting if cid not in results]
        what = [f"approval of {', '.join(approvals)}"] if approvals else []
        what += [f"the client's result of {', '.join(results)}"] if results else []
        return Suspend(f"waiting for {' and '.join(what)}", until)

    async def _resumed_turn(
        self,
        turn: TurnState,
        state: RunState,
        answers: tuple[dict[str, tuple[bool, str]], dict[str, tuple[Any, bool]]],
        request: Request,
        runner: ToolRunner,
        usage: list[int],
        outcome: dict[str, Any],
        deferred: set[str],
    ) -> AsyncIterator[Any]:
        """Finish a turn the log holds unfinished (see :meth:`resume`): the answered calls keep
        their results; a call whose approval is answered now runs (or is denied); a client-side
        call answered now gets its result; one still waiting for either suspends the run again;
        one that may have started runs again
        only if its tool is ``retry_safe``, else the model is told it was interrupted. A turn cut
        off while the model wrote text continues from that text (providers that can), else it
        is asked again."""
        decisions, given = answers
        calls = list(turn.calls.values())
        results: dict[str, ToolResult] = dict(turn.results)
        outcome.update(calls=calls, results=results, text=[turn.text])
        pending: list[str] = []
        send, receive = anyio.create_memory_object_stream[Any](max_buffer_size=64)
        for call in turn.unanswered():
            approval = state.approvals.get(call.call_id)
            tool = self.tools.get(call.name)
            wait = state.waits.get(call.call_id)
            if wait is not None and not wait["answered"]:  # the client's result, over the wire
                if call.call_id not in given:
                    pending.append(call.call_id)
                    continue
                value, is_error = given[call.call_id]
                detail = {"call_id": call.call_id, "tool": call.name}
                send.send_nowait(Step(name="client_tool", status="finished", detail=detail))
                send.send_nowait(ToolResult(call_id=call.call_id, name=call.name, result=value, is_error=is_error))
                continue
            if call.name in deferred:
                continue  # the caller's own tool: the caller answers it (the run ends with its call)
            if approval is not None and approval["approved"] is None:
                if call.call_id in decisions:
                    runner.start(call, send.clone(), decision=decisions[call.call_id])
                else:
                    pending.append(call.call_id)
            elif approval is not None and approval["approved"] is False:
                runner.start(call, send.clone(), decision=(False, "log"))  # denied before the node stopped
            elif tool is not None and tool.retry_safe:
                # Approved before the node stopped (if it needed approval): never asked twice.
                runner.start(call, send.clone(), decision=(True, "log") if approval is not None else None)
            else:
                what = repr(call.name)
                send.send_nowait(
                    ToolResult(
                        call_id=call.call_id,
                        name=call.name,
                        result=f"the call to tool {what} was interrupted (its node stopped) and may not have run; "
                        "it is not safe to retry automatically",
                        is_error=True,
                    )
                )
        send.close()
        async with receive:
            async for item in receive:
                if isinstance(item, AwaitingApproval):
                    pending.append(item.call_id)
                    continue
                if isinstance(item, ToolResult):
                    results[item.call_id] = item
                yield item
        if pending:
            expires = {c: a["expires"] for c, a in [*state.approvals.items(), *state.waits.items()]}
            outcome["suspend"] = self._suspension(pending, expires, state.waits)
            return
        if calls:
            return  # the model's part of the turn is in the log (a call it was still writing is dropped)
        prefix = turn.text
        if getattr(self.provider, "continues_prefix", False) and prefix and not turn.partial_calls:
            request = msgspec.structs.replace(request, messages=[*request.messages, Message("assistant", prefix)])
        else:
            prefix = ""
            if turn.text or turn.partial_calls:  # its first attempt is void: readers drop it
                yield Step(name="turn", status="started", detail={"turn": turn.number, "restarted": True})
        model_outcome: dict[str, Any] = {}
        async for part in self._turn(request, runner, usage, model_outcome, deferred):
            yield part
        outcome.update(model_outcome, text=[prefix, *model_outcome["text"]])

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
        waiting: list[str] = []
        expires: dict[str, Any] = {}  # what the calls waiting for an answer said of their deadline
        clients: set[str] = set()  # those waiting for the client's result
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
                    if isinstance(item, AwaitingApproval):
                        waiting.append(item.call_id)
                        continue
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
                        elif self.options.caller_waits and self.options.durable:  # the caller's: it answers
                            wait = client_wait(item, self.options.client_timeout_s)
                            expires[item.call_id] = wait.detail["expires"]
                            clients.add(item.call_id)
                            waiting.append(item.call_id)
                            yield item
                            yield wait
                            continue
                    elif isinstance(item, Usage):
                        usage[0] += item.input_tokens
                        usage[1] += item.output_tokens
                    elif isinstance(item, Step) and (rolled := child_usage(item)) is not None:
                        usage[0] += rolled[0]  # a child run's tokens count in its parent's
                        usage[1] += rolled[1]
                    elif isinstance(item, Step) and item.status == "started" and isinstance(item.detail, dict):
                        if item.name in ("approval", "client_tool") and "call_id" in item.detail:
                            expires[item.detail["call_id"]] = item.detail.get("expires")
                            if item.name == "client_tool":
                                clients.add(item.detail["call_id"])
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
        if waiting:
            outcome["suspend"] = self._suspension(waiting, expires, clients)

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
