"""Tools from typed Python functions: name, description, generated JSON Schema, validation.

>>> from typing import Literal
>>> @tool
... def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
...     '''Current weather for a city.
...
...     Args:
...         city: City name, e.g. "Paris".
...         unit: Temperature unit.
...     '''
...     return {"city": city, "temp": 21, "unit": unit}
>>> get_weather.spec.parameters["properties"]["city"]
{'type': 'string', 'description': 'City name, e.g. "Paris".'}
>>> get_weather.validate({"city": 42})
Traceback (most recent call last):
...
tokenwire.errors.ToolArgumentsInvalid: tool 'get_weather' argument 'city': expected str, got int (42)

The schema is generated from the signature (msgspec; pydantic models and msgspec Structs work as
parameter types), never written by hand. Arguments are validated strictly (no "3" for 3) and
unknown arguments are rejected, so what reaches the function is what its signature says.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, get_type_hints

import msgspec

from tokenwire.core.request import ToolSpec
from tokenwire.errors import ToolArgumentsInvalid

__all__ = ["Progress", "Tool", "ToolArgumentsInvalid", "Toolset", "tool"]


class Progress(msgspec.Struct, frozen=True):
    """Yield this from an async-generator tool to report progress (it becomes a ``step`` event).

    Such a tool may also yield :class:`~tokenwire.events.Data`, ``StateSnapshot`` and
    ``StateDelta`` events, which go into the run's stream as they are. The last value the
    generator yields that is none of these is the tool's result.
    """

    detail: Any = None
    """JSON-serialisable progress detail (a percentage, a message, partial results)."""


_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def _is_pydantic_model(annotation: Any) -> bool:
    base = getattr(annotation, "__pydantic_fields__", None)
    return base is not None and isinstance(annotation, type)


def _docstring_parts(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description and the per-argument descriptions of a docstring in any common style —
    Google (``Args:``), NumPy (``Parameters`` / ``----------``) or Sphinx (``:param x:``) — as
    griffe reads them (its ``auto`` style, as Pydantic AI does).

    >>> _docstring_parts("The weather.\\n\\n:param city: City name.\\n:returns: the weather.")
    ('The weather.', {'city': 'City name.'})
    """
    if not doc:
        return "", {}
    import griffe  # loaded with the first tool, not with tokenwire

    quiet = logging.getLogger("griffe")  # it warns of parameters it cannot match to a signature
    level, quiet.level = quiet.level, logging.CRITICAL + 1
    try:
        sections = griffe.Docstring(inspect.cleandoc(doc), lineno=1, parser="auto").parse()
    finally:
        quiet.level = level
    texts: list[str] = []
    args: dict[str, str] = {}
    for section in sections:
        if section.kind is griffe.DocstringSectionKind.text:
            texts.append(str(section.value).strip())
        elif section.kind is griffe.DocstringSectionKind.parameters:
            for param in section.value:
                args[param.name.lstrip("*")] = " ".join(param.description.split())
    return (texts[0] if texts else ""), args


class Tool:
    """A callable the model may invoke. Build one with :func:`tool`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        client_side: bool = False,
        timeout_s: float | None = None,
        retry_safe: bool = False,
    ):
        self.fn = fn
        self.name = name or fn.__name__
        doc_description, arg_docs = _docstring_parts(fn.__doc__)
        self.description = description if description is not None else doc_description
        self.requires_approval = requires_approval
        self.client_side = client_side
        self.timeout_s = timeout_s
        self.retry_safe = retry_safe
        """Safe to run again for a call that may already have run (a node that takes a durable run
        over after a crash re-runs it; other tools get an "interrupted" error result instead, and
        start only once their call is in the log)."""
        self.is_async = inspect.iscoroutinefunction(fn)
        self.is_async_gen = inspect.isasyncgenfunction(fn)
        hints = get_type_hints(fn, include_extras=True)
        fields: list[tuple[Any, ...]] = []
        self._pydantic: dict[str, Any] = {}
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(
                    f"tool {self.name!r}: *args/**kwargs cannot be described to a model; name every argument"
                )
            annotation = hints.get(pname, Any)
            if _is_pydantic_model(annotation):
                self._pydantic[pname] = annotation
                annotation = dict[str, Any]
            if param.default is inspect.Parameter.empty:
                fields.append((pname, annotation))
            else:
                fields.append((pname, annotation, param.default))
        self._args_type = msgspec.defstruct(f"{self.name}_arguments", fields, kw_only=True, forbid_unknown_fields=True)
        self.parameters = self._schema(arg_docs)

    def _schema(self, arg_docs: Mapping[str, str]) -> dict[str, Any]:
        generated = msgspec.json.schema(self._args_type)
        defs: dict[str, Any] = generated.pop("$defs", {})
        ref = generated["$ref"].rsplit("/", 1)[-1]
        schema: dict[str, Any] = defs.pop(ref)
        schema.pop("title", None)
        properties: dict[str, Any] = schema.setdefault("properties", {})
        for pname, model in self._pydantic.items():
            from pydantic import TypeAdapter

            sub = TypeAdapter(model).json_schema(ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            properties[pname] = sub
        for pname, text in arg_docs.items():
            if pname in properties and text:
                properties[pname] = {**properties[pname], "description": text}
        if defs:
            schema["$defs"] = defs
        return schema

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        return ToolSpec(self.name, self.description, self.parameters)

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments against the signature; returns the keyword arguments to call with.

        Raises :class:`ToolArgumentsInvalid` with a message meant for the model.
        """
        if not isinstance(args, Mapping):
            raise ToolArgumentsInvalid(f"tool {self.name!r} arguments must be a JSON object, got {type(args).__name__}")
        try:
            converted = msgspec.convert(dict(args), self._args_type)
        except msgspec.ValidationError as exc:
            raise ToolArgumentsInvalid(self._explain(str(exc), args)) from None
        kwargs = {f: getattr(converted, f) for f in converted.__struct_fields__}
        for pname, model in self._pydantic.items():
            if pname in kwargs:
                import pydantic

                try:
                    kwargs[pname] = model.model_validate(kwargs[pname], strict=True)
                except pydantic.ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in (pname, *first["loc"]))
                    raise ToolArgumentsInvalid(
                        f"tool {self.name!r} argument {where!r}: {first['msg'].lower()}"
                    ) from None
        return kwargs

    def _explain(self, message: str, args: Mapping[str, Any]) -> str:
        m = _PATH.search(message)
        if m:
            path = m.group(1)
            what = message[: m.start()]
            what = re.sub(r"`([^`]*)`", r"\1", what)
            what = what[0].lower() + what[1:]
            top = re.split(r"[.\[]", path, maxsplit=1)[0]
            got = args.get(top, None) if path == top else None
            shown = f" ({got!r})" if got is not None and "got" in what else ""
            return f"tool {self.name!r} argument {path!r}: {what}{shown}"
        m = re.match(r"Object missing required field `([^`]*)`", message)
        if m:
            return f"tool {self.name!r} is missing required argument {m.group(1)!r}"
        m = re.match(r"Object contains unknown field `([^`]*)`", message)
        if m:
            known = ", ".join(self._args_type.__struct_fields__) or "no arguments"
            return f"tool {self.name!r} got unknown argument {m.group(1)!r}; it takes: {known}"
        return f"tool {self.name!r} arguments: {message}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name}>"


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    client_side: bool = False,
    timeout_s: float | None = None,
    retry_safe: bool = False,
) -> Any:
    """Turn a sync or async function (or async generator) with type hints into a :class:`Tool`.

    Usable bare (``@tool``) or with options (``@tool(requires_approval=True, timeout_s=5)``).
    ``client_side`` tools are never run here: the client executes them and submits the result.
    ``retry_safe`` tools (reads, idempotent writes) may run again when a durable run is taken
    over after a crash; :func:`call_id` gives a running tool its call's id, an idempotency key.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            requires_approval=requires_approval,
            client_side=client_side,
            timeout_s=timeout_s,
            retry_safe=retry_safe,
        )

    return wrap(fn) if fn is not None else wrap


CURRENT_CALL: contextvars.ContextVar[str] = contextvars.ContextVar("tokenwire_tool_call_id", default="")


def call_id() -> str:
    """The id of the tool call being executed ("" outside a tool): the same on every node and
    every retry of that call, so a tool with side effects can use it as an idempotency key.

    >>> @tool
    ... def charge(amount: int) -> str:
    ...     "Charge the card once per call."
    ...     return f"charged {amount} (key {call_id() or 'none'})"
    >>> charge.fn(5)
    'charged 5 (key none)'
    """
    return CURRENT_CALL.get()


class Toolset:
    """A named group of tools, passed to the agent loop.

    >>> @tool
    ... def ping() -> str:
    ...     '''Reply pong.'''
    ...     return "pong"
    >>> Toolset([ping]).names
    ['ping']
    """

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool | Callable[..., Any]) -> Tool:
        """Add a tool (a plain function is wrapped with :func:`tool`)."""
        item = t if isinstance(t, Tool) else Tool(t)
        if item.name in self._tools:
            raise ValueError(f"two tools are named {item.name!r}; tool names must be unique")
        self._tools[item.name] = item
        return item

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    @property
    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools
