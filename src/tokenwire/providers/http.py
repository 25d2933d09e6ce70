"""The I/O shell shared by HTTP providers: retries before output, SSE decoding, error mapping.

An adapter supplies ``open()`` (an async context manager for the streaming response, made with
the user's own SDK client or httpx), a sans-I/O mapper (SSE data → parts) and ``classify`` (an
exception → :class:`Failure`). :func:`stream_sse` then:

- retries 429, 5xx, connection failures and retryable in-stream errors with exponential backoff
  and full jitter, honouring ``Retry-After``, at most ``RetryPolicy.max_retries`` times — and only
  before the first part was emitted: once output began, a failure ends the stream with an
  ``error`` event whose ``retryable`` says whether the request may be retried;
- reports failures as ``error`` parts: ``source="transport"`` for the connection (connect errors,
  resets, truncated streams), ``source="provider"`` for API errors with the provider's code;
- closes the HTTP response whenever the stream ends, is cancelled or is stopped by a limit.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import msgspec

from tokenwire.core.provider import Part
from tokenwire.errors import Failure
from tokenwire.events import Error, ToolCall
from tokenwire.wire.sse import SSEDecoder

__all__ = [
    "Failure",
    "Mapper",
    "RetryPolicy",
    "finished_tool_call",
    "malformed_chunk",
    "parse_retry_after",
    "stream_sse",
    "truncated_stream",
]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Retries before the first event: ``max_retries`` attempts after the first, backoff
    ``min(max_s, base_s * 2**n)`` with full jitter, or the server's ``Retry-After`` if it is
    longer (capped at ``max_retry_after_s``)."""

    max_retries: int = 2
    base_s: float = 0.5
    max_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.max_s, self.base_s * 2**attempt))
        if retry_after is not None:
            return min(max(retry_after, backoff), self.max_retry_after_s)
        return backoff


class Mapper(Protocol):
    """Sans-I/O mapping of one provider's SSE payloads to parts.

    ``finished`` turns True at the format's end marker (``[DONE]``, ``message_stop``,
    ``response.completed``): the shell then stops reading, so a server that keeps the body open
    after it does not turn a complete answer into a stall or a lost connection.
    """

    @property
    def finished(self) -> bool: ...

    def feed(self, event: str, data: str) -> list[Part]: ...

    def close(self) -> list[Part]: ...


def malformed_chunk(data: str, exc: Exception) -> Error:
    """The ``error`` for a payload that is not the JSON the format promises."""
    return Error(code="malformed_chunk", message=f"unreadable chunk ({exc}): {data[:200]!r}", source="provider")


def truncated_stream(expected: str) -> Error:
    """The ``error`` for a stream that stopped before its end marker: never accept it silently."""
    return Error(
        code="incomplete_stream",
        message=f"the stream ended before {expected}: it was cut",
        retryable=True,
        source="transport",
    )


def finished_tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    """A complete tool call from its raw JSON arguments.

    Unparseable arguments give ``args={}``: the raw fragments already went out as
    ``tool_call.delta`` and the agent's tool runner reports them to the model precisely.
    """
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError:
        args = {}
    return ToolCall(call_id=call_id, name=name, args=args if isinstance(args, dict) else {})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``) header value in seconds."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class _ByteStream(Protocol):
    def iter_bytes(self) -> AsyncIterator[bytes]: ...


async def stream_sse(
    open_response: Callable[[], AbstractAsyncContextManager[Any]],
    new_mapper: Callable[[], Mapper],
    classify: Callable[[BaseException], Failure | None],
    policy: RetryPolicy,
    *,
    iter_bytes: Callable[[Any], AsyncIterator[bytes]] = lambda r: r.iter_bytes(),
) -> AsyncIterator[Part]:
    """Stream parts from an SSE endpoint with the retry and error rules above."""
    attempt = 0
    while True:
        emitted = False
        mapper = new_mapper()
        try:
            async with open_response() as response:
                decoder = SSEDecoder()
                async for chunk in iter_bytes(response):
                    for sse in decoder.feed(chunk):
                        parts = mapper.feed(sse.event, sse.data)
                        if parts:
                            first_error = _retryable_error_before_output(parts, emitted)
                            if first_error is not None:
                                raise first_error
                            for part in parts:
                                yield part
                            emitted = True
                            if isinstance(parts[-1], Error):
                                return
                        if mapper.finished:
                            break
                    if mapper.finished:
                        break
                for part in mapper.close():
                    yield part
                return
        except Failure as failure:
            outcome = failure
        except Exception as exc:
            classified = classify(exc)
            if classified is None:
                raise
            outcome = classified
        if not emitted and outcome.retryable and attempt < policy.max_retries:
            await asyncio.sleep(policy.delay(attempt, outcome.retry_after))
            attempt += 1
            continue
        if emitted and outcome.source == "transport" and outcome.code == "connect_error":
            outcome = Failure("connection_lost", outcome.message, "transport", True)
        yield Error(code=outcome.code, message=outcome.message, retryable=outcome.retryable, source=outcome.source)  # type: ignore[arg-type]
        return


def _retryable_error_before_output(parts: Iterable[Part], emitted: bool) -> Failure | None:
    """An in-stream error as the very first output (a 200 that says "overloaded") is retried."""
    if emitted:
        return None
    for part in parts:
        if isinstance(part, Error):
            if part.retryable:
                return Failure(part.code, part.message, part.source, True)
            return None
        return None
    return None
