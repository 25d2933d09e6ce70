"""The clients for synchronous code: :class:`SyncClient` (HTTP + SSE) and :class:`SyncGrpcClient`,
each an async client run on a private loop thread.

>>> # with SyncClient("http://127.0.0.1:8000", api_key="k") as client:
>>> #     for event in client.run("Hi"): print(event.type)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from tokenwire.client.http import Client
from tokenwire.core.bridge import Bridge
from tokenwire.core.snapshot import Snapshot
from tokenwire.events import Event
from tokenwire.log import TreeCursor

__all__ = ["GrpcClient", "GrpcRunInfo", "SyncClient", "SyncGrpcClient"]


class SyncClient:
    """The same API for synchronous code; runs an async :class:`Client` on a private loop thread
    (:class:`~tokenwire.core.bridge.Bridge`).

    Use it as a context manager (or call :meth:`close`) to stop the thread.
    """

    _client_class: Any = Client

    def __init__(self, base_url: str, **kwargs: Any):
        self._bridge = Bridge("tokenwire-client")

        async def make() -> Any:
            return self._client_class(base_url, **kwargs)

        self._client: Any = self._bridge.call(make)

    def _call(self, coro: Any) -> Any:
        async def awaited() -> Any:
            return await coro

        return self._bridge.call(awaited)

    def _iterate(self, agen: AsyncIterator[Event]) -> Iterator[Event]:
        try:
            while True:
                try:
                    yield self._bridge.call(anext, agen)
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._bridge.call(agen.aclose)  # type: ignore[attr-defined]

    def create_run(self, request: str | dict[str, Any], **options: Any) -> Any:
        """:class:`RunInfo` (:class:`GrpcRunInfo` for :class:`SyncGrpcClient`)."""
        return self._call(self._client.create_run(request, **options))

    def run(self, request: str | dict[str, Any], **options: Any) -> Iterator[Event]:
        return self._iterate(self._client.run(request, **options))

    def subscribe(
        self,
        stream_id: str,
        token: str,
        *,
        from_seq: int = 0,
        tree: bool = False,
        cursor: TreeCursor | None = None,
        snapshot: Snapshot | None = None,
    ) -> Iterator[Event]:
        events = self._client.subscribe(
            stream_id, token, from_seq=from_seq, tree=tree, cursor=cursor, snapshot=snapshot
        )
        return self._iterate(events)

    def subscribe_many(
        self,
        streams: Mapping[str, str | None] | None = None,
        *,
        mine: bool = False,
        cursor: TreeCursor | None = None,
    ) -> Iterator[Event]:
        """Many streams on one connection: see :meth:`Client.subscribe_many`."""
        return self._iterate(self._client.subscribe_many(streams, mine=mine, cursor=cursor))

    def cancel(self, stream_id: str, token: str) -> None:
        self._call(self._client.cancel(stream_id, token))

    def approve(self, stream_id: str, call_id: str, approved: bool = True, *, token: str | None = None) -> None:
        self._call(self._client.approve(stream_id, call_id, approved, token=token))

    def submit_tool_result(
        self, stream_id: str, call_id: str, result: Any, *, is_error: bool = False, token: str | None = None
    ) -> None:
        self._call(self._client.submit_tool_result(stream_id, call_id, result, is_error=is_error, token=token))

    def status(self, stream_id: str, token: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self._client.status(stream_id, token))
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._bridge.call(self._client.aclose)
        self._bridge.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


try:
    from tokenwire.grpc.client import GrpcClient, GrpcRunInfo
except ImportError:  # the grpc extra is not installed
    GrpcClient = GrpcRunInfo = None  # type: ignore[assignment,misc]


class SyncGrpcClient(SyncClient):
    """:class:`GrpcClient` for synchronous code (``target``: ``host:port``).

    >>> # with SyncGrpcClient("127.0.0.1:50051", api_key="k") as client:
    >>> #     for event in client.run("Hi"): print(event.type)
    """

    _client_class = GrpcClient
