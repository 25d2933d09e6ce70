"""pytest plugin (registered through the ``pytest11`` entry point): fixtures for stream tests.

- ``scripted``: a factory ``scripted(items, **kw) -> Scripted``. Right after the test function
  returns (before the event loop shuts down and would close stray generators itself) the test
  fails if a stream left a provider generator open.
- ``transcript``: a fresh :class:`~tokenwire.testing.Transcript` to pass as an observer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from tokenwire.providers.scripted import Scripted, ScriptItem
from tokenwire.testing.transcript import Transcript

_MADE = pytest.StashKey[list[Scripted]]()


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Callable[..., Scripted]:
    """Factory of scripted providers; the test fails if one of their generators is left open."""
    made: list[Scripted] = []
    request.node.stash[_MADE] = made

    def make(items: list[ScriptItem], **kwargs: Any) -> Scripted:
        provider = Scripted(items, **kwargs)
        made.append(provider)
        return provider

    return make


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    result = yield
    made = pyfuncitem.stash.get(_MADE, [])
    leaked = [p for p in made if p.started != p.closed]
    if leaked:
        pytest.fail(
            "provider generators left open when the test returned: "
            + ", ".join(f"{p.started - p.closed} of {p.started} for {p.items[:3]!r}" for p in leaked)
        )
    return result


@pytest.fixture
def transcript() -> Transcript:
    """A fresh transcript observer."""
    return Transcript()
