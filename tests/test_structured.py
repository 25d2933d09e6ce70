"""Structured output, streamed: partial objects while the arguments stream, the validated object
at the end, clear errors otherwise; on the embedded model under a JSON-Schema grammar."""

from __future__ import annotations

from typing import Any

import msgspec
import pydantic
import pytest

from tokenwire.api.structured import TOOL, json_schema_of, stream_object
from tokenwire.errors import ObjectInvalid
from tokenwire.events import ToolCall, ToolCallDelta, ToolCallStart
from tokenwire.providers import Scripted


class Recipe(pydantic.BaseModel):
    title: str
    steps: list[str]
    minutes: int


def streamed(*fragments: str, args: Any = None) -> Scripted:
    parts: list[Any] = [ToolCallStart(call_id="c", name=TOOL)]
    parts += [ToolCallDelta(call_id="c", args_delta=f) for f in fragments]
    if args is not None:
        parts.append(ToolCall(call_id="c", name=TOOL, args=args))
    return Scripted(parts)


async def collect(model: Scripted, schema: Any) -> list[Any]:
    return [u async for u in stream_object(model, "a recipe", schema=schema)]


async def test_partial_objects_grow_and_the_last_one_is_validated() -> None:
    whole = {"title": "Tea", "steps": ["boil", "steep"], "minutes": 5}
    model = streamed('{"title": "Te', 'a", "steps": ["bo', 'il", "steep"], ', '"minutes": 5}', args=whole)
    updates = await collect(model, Recipe)
    assert [u.partial for u in updates] == [
        {"title": "Te"},
        {"title": "Tea", "steps": ["bo"]},
        {"title": "Tea", "steps": ["boil", "steep"]},
        whole,
        whole,
    ]
    assert [u.complete for u in updates] == [False] * 4 + [True]
    assert updates[-1].value == Recipe(title="Tea", steps=["boil", "steep"], minutes=5)
    request = model.requests[0]
    assert request.tool_choice == TOOL and request.tools[0].parameters == Recipe.model_json_schema()


async def test_an_object_off_the_schema_malformed_or_missing_is_object_invalid() -> None:
    with pytest.raises(ObjectInvalid, match="does not match the schema"):
        await collect(streamed('{"title": 1}', args={"title": 1}), Recipe)
    with pytest.raises(ObjectInvalid, match="not JSON"):
        await collect(streamed('{"title": ]'), Recipe)
    with pytest.raises(ObjectInvalid, match=r"ended \(stop\) without the object"):
        await collect(Scripted(["I would rather chat."]), Recipe)
    with pytest.raises(ObjectInvalid, match="provider_error"):
        await collect(Scripted([RuntimeError("down")]), Recipe)


def test_schemas_of_pydantic_msgspec_and_plain_dicts() -> None:
    class Point(msgspec.Struct):
        x: int
        y: int

    schema = json_schema_of(Point)
    assert schema["type"] == "object" and set(schema["properties"]) == {"x", "y"} and "$ref" not in schema
    assert json_schema_of({"type": "object"}) == {"type": "object"}
    assert json_schema_of(Recipe)["required"] == ["title", "steps", "minutes"]


@pytest.mark.e2e  # the embedded model
async def test_the_embedded_model_streams_a_valid_object_under_the_schema_grammar() -> None:
    from tokenwire.core.request import Message, Request
    from tokenwire.providers import LlamaCpp

    class City(msgspec.Struct):
        name: str
        country: str
        population: int

    request = Request([Message("user", "Describe Paris as JSON.")], max_tokens=80, seed=3)
    with LlamaCpp.default() as model:
        updates = [u async for u in stream_object(model, request, schema=City)]
    assert updates[-1].complete and isinstance(updates[-1].value, City)
    assert len(updates) > 2  # it streamed: partial objects came before the end
    assert all(not u.complete for u in updates[:-1])
