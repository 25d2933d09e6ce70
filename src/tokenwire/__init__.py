"""tokenwire: stream LLM output to application code as typed events, and notify observers.

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> tokenwire.run_sync(Scripted(["Hello", " world"]), "Say hello").text
'Hello world'

The public API is what ``__all__`` lists; the event types are in :mod:`tokenwire.events`, every
exception in :mod:`tokenwire.errors`, and each folder is a layer (``docs/architecture.md``).
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # before the imports: telemetry reads it while the API layer loads

from tokenwire import errors, events
from tokenwire.api import ObjectUpdate, generate, run, run_sync, stream, stream_object, stream_sync, sub_agent
from tokenwire.consumers.coalesce import coalesce, coalesce_events
from tokenwire.consumers.delivery import EventIterator, queued
from tokenwire.consumers.observers import Observer, observe
from tokenwire.core.limits import Limits
from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.core.response import Response
from tokenwire.engine import StreamHandle
from tokenwire.errors import ProviderError, StreamFailed, TokenwireError
from tokenwire.events import Event
from tokenwire.log import EventLog, MemoryLog
from tokenwire.tools import Progress, Tool, ToolOptions, Toolset, tool

if TYPE_CHECKING:
    from tokenwire import providers


def __getattr__(name: str) -> Any:
    # ``tokenwire.providers`` loads on first use: importing the core never
    # pulls in a model backend (tests/test_layers.py checks this in a fresh interpreter).
    if name == "providers":
        import importlib

        return importlib.import_module(f"tokenwire.{name}")
    raise AttributeError(f"module 'tokenwire' has no attribute {name!r}")


__all__ = [
    # start a run, read it, or run it to the end
    "generate",
    "stream",
    "stream_sync",
    "sub_agent",
    "run",
    "run_sync",
    "stream_object",
    "ObjectUpdate",
    "StreamHandle",
    "Response",
    # what a run is asked
    "Request",
    "Message",
    "ToolSpec",
    "Limits",
    # reading events
    "Event",
    "Observer",
    "observe",
    "queued",
    "EventIterator",
    "coalesce",
    "coalesce_events",
    # where events are kept
    "EventLog",
    "MemoryLog",
    # tools
    "tool",
    "Tool",
    "Toolset",
    "Progress",
    "ToolOptions",
    # errors (every one is in tokenwire.errors)
    "TokenwireError",
    "ProviderError",
    "StreamFailed",
    # modules: the event types (tokenwire.events), the exceptions, the model backends
    "events",
    "errors",
    "providers",
    "__version__",
]
