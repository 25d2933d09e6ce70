"""Wire formats: our events encoded as each transport and client ecosystem expects them.

A :class:`WireFormat` names an encoder (event → frame). :class:`FrameCache` keeps the encoded
frames of the recent events of each stream per format, so each event is encoded once per format
however many connections read it. The native formats (:mod:`tokenwire.wire.native`) are the SSE
frame with the seq as ``id:`` and the event's JSON text for WebSocket messages. The other
ecosystems' formats (OpenAI Chat Completions and Responses, AG-UI, the AI SDK's UI message stream)
are stateful encoders (:class:`~tokenwire.wire.encoder.StreamEncoder`), shared by a stream's
readers through :meth:`FrameCache.reader`.

>>> from tokenwire.events import TextDelta
>>> from tokenwire.wire import SSE
>>> SSE.encode(TextDelta("Hi", stream_id="s", seq=3, ts=1.5))
b'id: 3\\nevent: text.delta\\ndata: {"type":"text.delta","text":"Hi","stream_id":"s","seq":3,"ts":1.5}\\n\\n'
"""

from tokenwire.wire.cache import FrameCache, SharedEncoder, SharedReader, WireFormat
from tokenwire.wire.native import JSON_TEXT, SSE

__all__ = ["JSON_TEXT", "SSE", "FrameCache", "SharedEncoder", "SharedReader", "WireFormat"]
