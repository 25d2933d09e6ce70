"""The ``tokenwire`` command: chat, serve, replay, stats, schema, version."""

from tokenwire.cli.commands import app, main

__all__ = ["app", "main"]
