"""Python clients for a tokenwire server: SSE with reconnect-and-resume (:class:`Client`,
:class:`SyncClient`), WebSocket (:class:`WebSocketClient`) and gRPC (:class:`SyncGrpcClient`;
the async one is :class:`tokenwire.grpc.client.GrpcClient`). The top layer beside the server: it
imports no server module.
"""

from tokenwire.client.http import Client, ClientError, ConnectionLost, RunInfo
from tokenwire.client.sync import GrpcClient, GrpcRunInfo, SyncClient, SyncGrpcClient
from tokenwire.client.ws import WebSocketClient

__all__ = [
    "Client",
    "ClientError",
    "ConnectionLost",
    "GrpcClient",
    "GrpcRunInfo",
    "RunInfo",
    "SyncClient",
    "SyncGrpcClient",
    "WebSocketClient",
]
