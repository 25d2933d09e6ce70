"""tokenwire: stream LLM output to application code as typed events, and notify observers.

>>> import tokenwire
>>> from tokenwire.providers import Scripted
>>> tokenwire.run_sync(Scripted(["Hello", " world"]), "Say hello").text
'Hello world'

The public API is what ``__all__`` lists; submodules hold one concept each (DESIGN.md).
"""

from tokenwire import agent, providers
from tokenwire.chunking import coalesce, coalesce_events
from tokenwire.delivery import EventIterator, Overflow, Queued, queued
from tokenwire.errors import (
    EventDecodeError,
    ModelLoadError,
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
from tokenwire.limits import Limits
from tokenwire.log import EventLog, MemoryLog, StreamWriter
from tokenwire.observers import Observer, observe
from tokenwire.request import Message, Request, ToolSpec
from tokenwire.response import Response
from tokenwire.stream import StreamHandle, SyncStream, generate, run, run_sync, stream, stream_sync
from tokenwire.tools import Progress, Tool, ToolArgumentsInvalid, Toolset, tool

__version__ = "0.1.0"

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
    "agent",
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
    "stream_sync",
]
