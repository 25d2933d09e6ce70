"""Incremental partial-JSON parsing: the best-effort value of streamed tool-call arguments.

Feed the raw ``tool_call.delta`` fragments as they arrive; :attr:`PartialJSON.value` is the value
parsed so far — objects and arrays with the members received, the string being received included
as far as it goes; numbers once they can be read; keys and ``true`` / ``false`` / ``null`` once
complete.

>>> p = PartialJSON()
>>> p.feed('{"city": "Par')
False
>>> p.value
{'city': 'Par'}
>>> p.feed('is", "days": [1, 2')
False
>>> p.value
{'city': 'Paris', 'days': [1, 2]}
>>> p.feed("]}")
True
>>> p.value
{'city': 'Paris', 'days': [1, 2]}

Cost: ``feed`` examines each character once (string contents are skipped with ``str.find``) and
decodes each string once, when it closes, so a whole stream costs O(total length) whatever the
fragment size. Reading :attr:`value` materialises the scalar being received (O(its length so far)),
so read it when you render, not per fragment of a long string. ``feed`` only returns
:attr:`complete`; it never builds the value.

The value is one object updated in place (copy it if you keep snapshots). Malformed JSON raises
:class:`PartialJSONError` at the offending character.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tokenwire.errors import PartialJSONError

__all__ = ["JSONEnd", "PartialArguments", "PartialJSON", "PartialJSONError", "parse_partial"]

_WS = " \t\n\r"
_NUMBER_CHARS = frozenset("-+0123456789.eE")
_LITERALS = {"true": True, "false": False, "null": None}
_MISSING = object()


class _Frame:
    __slots__ = ("container", "key", "state")

    def __init__(self, container: dict[str, Any] | list[Any]):
        self.container = container
        self.key: str | None = None
        # dict: "key" (expect key or '}'), "colon", "value", "comma"; list: "value", "comma"
        self.state = "key" if isinstance(container, dict) else "value"


class PartialJSON:
    """Incremental parser of one JSON value fed in fragments."""

    def __init__(self) -> None:
        self._stack: list[_Frame] = []
        self._root: Any = _MISSING
        self._token: list[str] = []  # raw text of the string / number / literal being read
        self._kind: str | None = None  # "string", "key", "number", "literal"
        self._escape = False
        self._provisional = False  # the open list's last item is a partial scalar shown by `value`
        self._offset = 0
        self.complete = False
        """True once a whole JSON value was read."""

    # -- public --------------------------------------------------------------------------------

    def feed(self, fragment: str) -> bool:
        """Parse the next fragment; True once the value is complete (read it with :attr:`value`)."""
        i = 0
        n = len(fragment)
        while i < n:
            kind = self._kind
            if kind == "string" or kind == "key":
                i = self._string(fragment, i)
                continue
            ch = fragment[i]
            if kind == "number":
                if ch in _NUMBER_CHARS:
                    self._token.append(ch)
                    i += 1
                    continue
                self._finish_scalar()
                continue  # re-examine ch as a structural character
            if kind == "literal":
                if ch.isalpha():
                    self._token.append(ch)
                    i += 1
                    text = "".join(self._token)
                    if not any(lit.startswith(text) for lit in _LITERALS):
                        self._fail(f"unknown literal {text!r}")
                    if text in _LITERALS:
                        self._finish_scalar()
                    continue
                self._fail(f"incomplete literal {''.join(self._token)!r}")
            self._structural(ch)
            i += 1
        self._offset += n
        return self.complete

    @property
    def value(self) -> Any:
        """The value so far (None before anything could be read)."""
        partial = self._partial_token()
        if not self._stack:
            if self._root is not _MISSING:
                return self._root
            return None if partial is _MISSING else partial
        top = self._stack[-1]
        if partial is not _MISSING and self._kind != "key":
            container = top.container
            if isinstance(container, dict):
                if top.key is not None:
                    container[top.key] = partial
            elif self._provisional:
                container[-1] = partial
            else:
                container.append(partial)  # a provisional last item, replaced when complete
                self._provisional = True
        return self._root

    def _fail(self, what: str) -> None:
        raise PartialJSONError(f"invalid JSON at character {self._offset}: {what}")

    def _string(self, fragment: str, i: int) -> int:
        token = self._token
        n = len(fragment)
        while i < n:
            if self._escape:
                token.append(fragment[i])
                self._escape = False
                i += 1
                continue
            q = fragment.find('"', i)
            b = fragment.find("\\", i)
            if b != -1 and (q == -1 or b < q):
                token.append(fragment[i : b + 1])
                self._escape = True
                i = b + 1
                continue
            if q == -1:
                token.append(fragment[i:])
                return n
            token.append(fragment[i:q])
            self._finish_string()
            return q + 1
        return i

    def _decode_string(self, raw: str) -> str:
        try:
            value: str = json.loads('"' + raw + '"')
        except ValueError:
            self._fail(f"bad string escape in {raw[-20:]!r}")
            raise  # unreachable: _fail raises
        return value

    @staticmethod
    def _decode_partial_string(raw: str) -> Any:
        # An unfinished escape (a backslash, or a short unicode escape) is at most 5 characters.
        for cut in range(6):
            try:
                text: str = json.loads('"' + raw[: len(raw) - cut] + '"')
            except ValueError:
                continue
            if text and "\ud800" <= text[-1] <= "\udbff":
                text = text[:-1]  # the first half of a surrogate pair
            return text
        return _MISSING

    def _partial_token(self) -> Any:
        kind = self._kind
        if kind is None or not self._token:
            return "" if kind == "string" else _MISSING
        raw = "".join(self._token)
        if kind == "string":
            return self._decode_partial_string(raw)
        if kind == "number":
            try:
                return json.loads(raw)
            except ValueError:
                return _MISSING
        return _MISSING

    def _finish_string(self) -> None:
        raw = "".join(self._token)
        kind = self._kind
        self._token = []
        self._kind = None
        text = self._decode_string(raw)
        if kind == "key":
            top = self._stack[-1]
            top.key = text
            top.state = "colon"
        else:
            self._put(text)

    def _finish_scalar(self) -> None:
        raw = "".join(self._token)
        kind = self._kind
        self._token = []
        self._kind = None
        if kind == "literal":
            self._put(_LITERALS[raw])
            return
        try:
            self._put(json.loads(raw))
        except ValueError:
            self._fail(f"bad number {raw!r}")

    def _put(self, value: Any) -> None:
        if not self._stack:
            self._root = value
            self.complete = True
            return
        top = self._stack[-1]
        if isinstance(top.container, dict):
            assert top.key is not None
            top.container[top.key] = value
        elif self._provisional:
            top.container[-1] = value
            self._provisional = False
        else:
            top.container.append(value)
        top.state = "comma"

    def _open(self, container: dict[str, Any] | list[Any]) -> None:
        if self._stack:
            top = self._stack[-1]
            if isinstance(top.container, dict):
                assert top.key is not None
                top.container[top.key] = container
            else:
                top.container.append(container)
            top.state = "comma"
        else:
            self._root = container
        self._stack.append(_Frame(container))

    def _structural(self, ch: str) -> None:
        if ch in _WS:
            return
        if self.complete:
            self._fail(f"unexpected {ch!r} after the end of the value")
        top = self._stack[-1] if self._stack else None
        state = top.state if top is not None else "value"
        if state == "key":
            if ch == '"':
                self._kind = "key"
                return
            if ch == "}" and top is not None and not top.container:
                self._close(top)
                return
            self._fail(f"expected a key, got {ch!r}")
        if state == "colon":
            if ch == ":":
                assert top is not None
                top.state = "value"
                return
            self._fail(f"expected ':', got {ch!r}")
        if state == "comma":
            assert top is not None
            if ch == ",":
                top.state = "key" if isinstance(top.container, dict) else "value"
                return
            if ch == ("}" if isinstance(top.container, dict) else "]"):
                self._close(top)
                return
            self._fail(f"expected ',' or a closing bracket, got {ch!r}")
        # state == "value"
        if ch == "{":
            self._open({})
        elif ch == "[":
            self._open([])
        elif ch == '"':
            self._kind = "string"
        elif ch in _NUMBER_CHARS:
            self._kind = "number"
            self._token.append(ch)
        elif ch in "tfn":
            self._kind = "literal"
            self._token.append(ch)
        elif ch == "]" and top is not None and isinstance(top.container, list) and not top.container:
            self._close(top)
        else:
            self._fail(f"unexpected {ch!r}")

    def _close(self, frame: _Frame) -> None:
        self._stack.pop()
        if not self._stack:
            self.complete = True

    def close(self) -> Any:
        """End of input: returns the complete value, or raises if the JSON is unfinished."""
        if self._kind == "number":
            self._finish_scalar()
        if not self.complete:
            self._fail("the JSON value is incomplete")
        return self._root


_STRUCTURE = re.compile(r'[\\"{}\[\]]')


class JSONEnd:
    """Tells when a JSON object or array streamed in fragments is complete (sans-I/O, linear).

    Only the structure is tracked (strings, escapes, nesting), not the values: a provider's tool
    call is complete the moment its arguments close, even while other calls are still streaming.

    >>> end = JSONEnd()
    >>> [end.feed(f) for f in ['{"a": "}', ']"', ', "b": [1', ']', '}']]
    [False, False, False, False, True]
    """

    __slots__ = ("_depth", "_escape", "_in_string", "_started", "complete")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False
        self.complete = False
        """True once the top-level object or array closed."""

    def feed(self, text: str) -> bool:
        """Scan one fragment; returns :attr:`complete`."""
        if self.complete:
            return True
        pos, n = 0, len(text)
        if self._escape and n:
            pos, self._escape = 1, False  # the character a backslash escaped
        search = _STRUCTURE.search
        while True:
            m = search(text, pos)
            if m is None:
                return False
            c, p = m.group(), m.start()
            pos = p + 1
            if self._in_string:
                if c == "\\":
                    if p + 1 >= n:
                        self._escape = True
                        return False
                    pos = p + 2
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c == "{" or c == "[":
                self._depth += 1
                self._started = True
            elif c == "}" or c == "]":
                self._depth -= 1
                if self._depth <= 0 and self._started:
                    self.complete = True
                    return True


def parse_partial(text: str) -> Any:
    """The best-effort value of a JSON prefix (one-shot :class:`PartialJSON`)."""
    parser = PartialJSON()
    parser.feed(text)
    return parser.value


class PartialArguments:
    """Observer: the best-effort arguments of every tool call in a stream, as they stream.

    >>> import tokenwire
    >>> from tokenwire.events import ToolCallStart, ToolCallDelta
    >>> from tokenwire.providers import Scripted
    >>> args = PartialArguments()
    >>> script = [ToolCallStart(call_id="c1", name="search"), ToolCallDelta(call_id="c1", args_delta='{"q": "tok')]
    >>> _ = tokenwire.run_sync(Scripted(script), "hi", observers=[args])
    >>> args["c1"]
    {'q': 'tok'}

    One :class:`PartialJSON` per call: each fragment is parsed once, whatever the number of
    fragments (the arguments are never re-parsed from the start).
    """

    def __init__(self) -> None:
        self._parsers: dict[str, PartialJSON] = {}
        self._final: dict[str, Any] = {}

    def on_tool_call_delta(self, event: Any) -> None:
        parser = self._parsers.get(event.call_id)
        if parser is None:
            parser = self._parsers[event.call_id] = PartialJSON()
        try:
            parser.feed(event.args_delta)
        except PartialJSONError:
            self._final.setdefault(event.call_id, None)  # malformed: the runner reports it to the model

    def on_tool_call(self, event: Any) -> None:
        self._final[event.call_id] = event.args
        self._parsers.pop(event.call_id, None)

    def __getitem__(self, call_id: str) -> Any:
        """The complete arguments once the call is complete, else the partial value so far."""
        if call_id in self._final:
            return self._final[call_id]
        parser = self._parsers.get(call_id)
        return None if parser is None else parser.value
