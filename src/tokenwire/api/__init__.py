"""The public entry points: start a run, iterate it, or run it to the end — async or sync
(:mod:`tokenwire.api.start`), and stream structured output (:mod:`tokenwire.api.structured`). Above the
engine and the tools; ``tokenwire`` re-exports every name.
"""

from tokenwire.api.start import generate, run, run_sync, stream, stream_sync
from tokenwire.api.structured import ObjectUpdate, stream_object
from tokenwire.api.subagent import sub_agent

__all__ = ["ObjectUpdate", "generate", "run", "run_sync", "stream", "stream_object", "stream_sync", "sub_agent"]
