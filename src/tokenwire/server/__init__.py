"""The tokenwire server: one run service under HTTP/SSE, the OpenAI / AI SDK / AG-UI endpoints,
WebSocket, gRPC and speech, and a web UI.

>>> from tokenwire.server import create_app
"""

from tokenwire.server.app import create_app, listen
from tokenwire.server.schema import RunBody, ServerConfig
from tokenwire.server.service import RunService, RunTokens

__all__ = ["RunBody", "RunService", "RunTokens", "ServerConfig", "create_app", "listen"]
