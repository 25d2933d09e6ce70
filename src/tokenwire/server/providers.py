"""The server's model backends by name: made from factories on first use, the default one
loaded at start-up, the ones it made closed at shutdown; and which one serves a foreign
protocol's ``model``.

>>> from tokenwire.providers import Scripted
>>> providers = Providers({"a": Scripted(["x"]), "b": Scripted(["y"])}, "b")
>>> providers.route(None), providers.route("a"), list(providers)
('b', 'a', ['a', 'b'])
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

from tokenwire.core.provider import Provider
from tokenwire.errors import InvalidRequest, ModelNotFound

__all__ = ["Providers"]


class Providers:
    """Named providers or factories (see the module docstring); iterating gives the names."""

    def __init__(self, providers: Mapping[str, Provider | Callable[[], Provider]], default: str | None = None):
        if not providers:
            raise ValueError("a server needs at least one provider")
        self._given = dict(providers)
        self.default = default or next(iter(self._given))
        self._instances: dict[str, Provider] = {}
        self.loaded = False
        """True once :meth:`preload` ran."""

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __contains__(self, name: object) -> bool:
        return name in self._given

    def get(self, name: str | None) -> Provider:
        """The provider called ``name`` (the default for None), made on first use; InvalidRequest when unknown."""
        key = name or self.default
        if key not in self._given:
            raise InvalidRequest(f"unknown provider {key!r}; this server has: {', '.join(self._given)}")
        if key not in self._instances:
            p = self._given[key]
            self._instances[key] = p if isinstance(p, Provider) else p()
        return self._instances[key]

    def route(self, model: str | None) -> str:
        """The provider that serves a foreign protocol's ``model``: the one of that name, the
        default for none, the only one whatever the name (as llama.cpp's server does); else
        :class:`ModelNotFound`."""
        if not model:
            return self.default
        if model in self._given:
            return model
        if len(self._given) == 1:
            return self.default
        raise ModelNotFound(f"The model `{model}` does not exist; this server has: {', '.join(self._given)}")

    async def preload(self) -> None:
        """Make the default provider and load its model now (``load()`` in a thread, when it has
        one), so the first run's time to first token is the model's, not the load's."""
        load = getattr(self.get(None), "load", None)
        if callable(load):
            await asyncio.to_thread(load)
        self.loaded = True

    async def aclose(self) -> None:
        """Close the providers made from factories (instances passed in are the caller's)."""
        made = [p for key, p in self._instances.items() if p is not self._given[key]]
        self._instances.clear()
        for provider in made:
            aclose = getattr(provider, "aclose", None)
            close = getattr(provider, "close", None)
            if aclose is not None:
                await aclose()
            elif close is not None:
                await asyncio.to_thread(close)
