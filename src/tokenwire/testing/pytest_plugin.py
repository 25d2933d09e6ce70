"""pytest plugin (registered through the ``pytest11`` entry point): fixtures for stream tests.

- ``scripted``: a factory ``scripted(items, **kw) -> Scripted``; at teardown it fails the test if
  any stream left a provider generator open.
- ``transcript``: a fresh :class:`~tokenwire.testing.Transcript` to pass as an observer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokenwire.providers.scripted import Scripted, ScriptItem
from tokenwire.testing.transcript import Transcript


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    """Factory of scripted providers that checks, at teardown, that every generator was closed."""
    made: list[Scripted] = []

    def make(items: list[ScriptItem], **kwargs: Any) -> Scripted:
        provider = Scripted(items, **kwargs)
        made.append(provider)
        return provider

    yield make
    leaked = [p for p in made if p.started != p.closed]
    assert not leaked, f"provider generators left open: {[(p.started, p.closed) for p in leaked]}"


@pytest.fixture
def transcript() -> Transcript:
    """A fresh transcript observer."""
    return Transcript()
