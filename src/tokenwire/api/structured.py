"""Structured output, streamed: the partial object while it parses, the validated object at the end.

:func:`stream_object` asks the model for one object of ``schema`` (a pydantic model, a msgspec
Struct, or a JSON Schema dict) and yields :class:`ObjectUpdate` s: the object as parsed so far
(one pass over the arguments with :class:`~tokenwire.wire.partial_json.PartialJSON`), then the final,
validated value. The object travels as a forced call of one tool whose parameters are the schema,
so every provider does what it does best: the embedded model generates it under a grammar made
from the JSON Schema (it cannot produce anything else), OpenAI and Anthropic force the tool call.
The stream stays a tokenwire stream: observers see ``tool_call.start`` / ``tool_call.delta`` /
``tool_call`` events as for any call, and no new event type is needed.

>>> import asyncio, msgspec
>>> from tokenwire.providers import Scripted
>>> from tokenwire.events import ToolCallStart, ToolCallDelta, ToolCall
>>> class City(msgspec.Struct):
...     name: str
...     population: int
>>> model = Scripted([ToolCallStart(call_id="c", name="respond"),
...                   ToolCallDelta(call_id="c", args_delta='{"name": "Par'),
...                   ToolCallDelta(call_id="c", args_delta='is", "population": 2100000}'),
...                   ToolCall(call_id="c", name="respond", args={"name": "Paris", "population": 2100000})])
>>> async def main():
...     return [u async for u in stream_object(model, "The largest city of France?", schema=City)]
>>> updates = asyncio.run(main())
>>> [u.partial for u in updates[:2]], [u.complete for u in updates]
([{'name': 'Par'}, {'name': 'Paris', 'population': 2100000}], [False, False, True])
>>> updates[-1].value
City(name='Paris', population=2100000)
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import msgspec

from tokenwire.api.start import stream
from tokenwire.core.provider import Provider
from tokenwire.core.request import Request, ToolSpec, as_request
from tokenwire.errors import ObjectInvalid, PartialJSONError
from tokenwire.events import Done, Error, ToolCall, ToolCallDelta
from tokenwire.wire.partial_json import PartialJSON

__all__ = ["ObjectUpdate", "json_schema_of", "stream_object"]

T = TypeVar("T")

TOOL = "respond"
"""The name of the tool that carries the object."""


class ObjectUpdate(msgspec.Struct, Generic[T], frozen=True):
    """One step of a streamed object: ``partial`` (the JSON value parsed so far: a snapshot, safe to
    keep); at the end ``complete`` is True and ``value`` is the validated object."""

    partial: Any
    complete: bool = False
    value: T | None = None


def json_schema_of(schema: Any) -> dict[str, Any]:
    """The JSON Schema of a pydantic model, a msgspec Struct (or any type msgspec knows), or a dict."""
    if isinstance(schema, dict):
        return schema
    to_schema = getattr(schema, "model_json_schema", None)  # pydantic
    if callable(to_schema):
        result: dict[str, Any] = to_schema()
        return result
    out: dict[str, Any] = msgspec.json.schema(schema)
    ref = out.get("$ref", "")
    if ref.startswith("#/$defs/") and "$defs" in out:  # inline the top level: tools want an object schema
        name = ref.rsplit("/", 1)[1]
        defs = out["$defs"]
        top = dict(defs[name])
        if len(defs) > 1:
            top["$defs"] = defs
        return top
    return out


def _validate(schema: Any, value: Any) -> Any:
    if isinstance(schema, dict):
        return value
    validate = getattr(schema, "model_validate", None)  # pydantic
    if callable(validate):
        return validate(value)
    return msgspec.convert(value, schema)


async def stream_object(
    provider: Provider,
    request: str | Request,
    *,
    schema: type[T] | dict[str, Any],
    description: str = "Give the answer as this object.",
    **kwargs: Any,
) -> AsyncIterator[ObjectUpdate[T]]:
    """Stream one object of ``schema`` from ``provider`` (see the module docstring).

    Yields an update per argument fragment that changed the object, then a final update with
    ``complete=True`` and the validated ``value``. Raises :class:`~tokenwire.errors.ObjectInvalid`
    when the model's object does not validate, is malformed JSON, or never came (the stream ended
    without it: the message says how it ended). Other arguments are :func:`tokenwire.generate`'s.
    """
    base = as_request(request)
    spec = ToolSpec(TOOL, description, json_schema_of(schema))
    asked = msgspec.structs.replace(base, tools=[spec], tool_choice=TOOL)
    parser = PartialJSON()
    seen = 0
    async with stream(provider, asked, **kwargs) as events:
        async for event in events:
            if isinstance(event, ToolCallDelta):
                try:
                    parser.feed(event.args_delta)
                except PartialJSONError as exc:
                    events.cancel("the object is malformed")
                    raise ObjectInvalid(f"the model's object is not JSON: {exc}") from None
                partial = parser.value
                if partial is not None:
                    seen += 1
                    yield ObjectUpdate(copy.deepcopy(partial))
            elif isinstance(event, ToolCall) and event.name == TOOL:
                try:
                    value = _validate(schema, event.args)
                except (msgspec.ValidationError, ValueError) as exc:
                    raise ObjectInvalid(f"the model's object does not match the schema: {exc}") from None
                yield ObjectUpdate(event.args, complete=True, value=value)
                return
            elif isinstance(event, Error):
                raise ObjectInvalid(f"the stream failed before the object was complete: {event.code}: {event.message}")
            elif isinstance(event, Done):
                raise ObjectInvalid(
                    f"the stream ended ({event.finish_reason}) without the object"
                    + (f" after {seen} partial updates" if seen else "")
                )
