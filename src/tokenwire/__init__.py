"""tokenwire: stream LLM output to application code as typed events, and notify observers.

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> tokenwire.run_sync(Scripted(["Hello", " world"]), "Say hello").text
'Hello world'

The public API is what ``__all__`` lists; submodules hold one concept each (DESIGN.md).
"""

from typing import TYPE_CHECKING, Any

from tokenwire.api import ObjectUpdate, generate, run, run_sync, stream, stream_object, stream_sync
from tokenwire.consumers.coalesce import coalesce, coalesce_events
from tokenwire.consumers.delivery import EventIterator, Overflow, Queued, queued
from tokenwire.consumers.observers import Observer, observe
from tokenwire.core.limits import Limits
from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.core.response import Response
from tokenwire.engine import StreamHandle, SyncStream
from tokenwire.errors import (
    EventDecodeError,
    ModelLoadError,
    ObjectInvalid,
    ObserverOverflow,
    ProviderError,
    SeqEvicted,
    StreamFailed,
    StreamNotFound,
    TokenwireError,
)
from tokenwire.events import (
    SCHEMA_VERSION,
    Done,
    Error,
    Event,
    ReasoningDelta,
    Start,
    Stats,
    Step,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    decode,
    encode,
)
from tokenwire.log import EventLog, MemoryLog, StreamWriter
from tokenwire.tools import Progress, Tool, ToolArgumentsInvalid, Toolset, tool

if TYPE_CHECKING:
    from tokenwire import providers

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``tokenwire.providers`` loads on first use: importing the core never
    # pulls in a model backend (tests/test_layers.py checks this in a fresh interpreter).
    if name == "providers":
        import importlib

        return importlib.import_module(f"tokenwire.{name}")
    raise AttributeError(f"module 'tokenwire' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "Done",
    "Error",
    "Event",
    "EventDecodeError",
    "EventIterator",
    "EventLog",
    "Limits",
    "MemoryLog",
    "ModelLoadError",
    "Message",
    "ObjectInvalid",
    "ObjectUpdate",
    "Observer",
    "ObserverOverflow",
    "Overflow",
    "ProviderError",
    "Queued",
    "ReasoningDelta",
    "Request",
    "Response",
    "SeqEvicted",
    "Start",
    "Stats",
    "Step",
    "StreamFailed",
    "StreamHandle",
    "StreamNotFound",
    "StreamWriter",
    "SyncStream",
    "TextDelta",
    "TokenUsage",
    "TokenwireError",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "Progress",
    "Tool",
    "ToolArgumentsInvalid",
    "Toolset",
    "__version__",
    "tool",
    "coalesce",
    "coalesce_events",
    "decode",
    "encode",
    "generate",
    "observe",
    "providers",
    "queued",
    "run",
    "run_sync",
    "stream",
    "stream_object",
    "stream_sync",
]
