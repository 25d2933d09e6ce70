"""The stream engine: the async shell that runs a provider under the lifecycle's rules and appends
every event to the stream's log (:mod:`tokenwire.engine.stream`), and the bridge that iterates a
stream from synchronous code (:mod:`tokenwire.engine.sync`). Above the log and the consumers,
below the providers, tools and the public entry points (:mod:`tokenwire.api`).
"""

from tokenwire.engine.options import RunOptions
from tokenwire.engine.stream import StreamHandle, start_stream
from tokenwire.engine.sync import SyncStream

__all__ = ["RunOptions", "StreamHandle", "SyncStream", "start_stream"]
