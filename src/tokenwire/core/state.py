"""A run's shared state: a ``state.snapshot`` sets it, each ``state.delta`` (RFC 6902 JSON Patch,
applied by the ``jsonpatch`` library) changes it. :class:`SharedState` keeps the current value
for anyone who reads a stream: the run's :class:`~tokenwire.Response`, the AI SDK encoder (which
sends the state whole), a client.

>>> from tokenwire.events import StateDelta, StateSnapshot
>>> state = SharedState()
>>> state.apply(StateSnapshot(snapshot={"step": 1, "found": []}))
{'step': 1, 'found': []}
>>> state.apply(StateDelta(delta=[{"op": "replace", "path": "/step", "value": 2},
...                               {"op": "add", "path": "/found/-", "value": "a.md"}]))
{'step': 2, 'found': ['a.md']}
>>> state.apply(StateDelta(delta=[{"op": "remove", "path": "/missing"}]))
Traceback (most recent call last):
...
tokenwire.errors.InvalidStateDelta: state.delta cannot be applied: can't remove a non-existent object 'missing'
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from tokenwire.errors import InvalidStateDelta
from tokenwire.events import StateDelta, StateSnapshot

__all__ = ["SharedState"]


class SharedState:
    """The current value of a run's shared state (``None`` before any snapshot)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None):
        self.value: Any = value
        """The state now."""

    def apply(self, event: StateSnapshot | StateDelta) -> Any:
        """Apply one state event and return the new value; :class:`InvalidStateDelta` when a
        delta is not a JSON Patch or does not apply (the value is then unchanged)."""
        if isinstance(event, StateSnapshot):
            self.value = copy.deepcopy(event.snapshot)
            return self.value
        try:
            patch = jsonpatch.JsonPatch(event.delta)
            self.value = patch.apply(self.value, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as exc:
            raise InvalidStateDelta(f"state.delta cannot be applied: {exc}") from None
        return self.value
