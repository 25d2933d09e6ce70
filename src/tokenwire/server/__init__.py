"""The tokenwire server: runs over HTTP, SSE with resume, WebSocket, and a web UI.

>>> from tokenwire.server import create_app
"""

from tokenwire.server.app import RunBody, ServerConfig, create_app, listen

__all__ = ["RunBody", "ServerConfig", "create_app", "listen"]
