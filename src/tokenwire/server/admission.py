"""What a run request becomes under the server's rules: the native body as a
:class:`~tokenwire.Request` (tools by name, from the server's), ``max_tokens`` and limits with the
server's defaults, and the ceilings no request may pass (:class:`InvalidRequest` says which).

>>> from tokenwire.server.schema import ServerConfig
>>> max_tokens(ServerConfig(), None), run_limits(ServerConfig(), None).max_duration_s
(1024, 300.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from tokenwire.core.limits import Limits
from tokenwire.core.provider import Provider
from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.errors import InvalidRequest, ModelNotFound
from tokenwire.server.schema import RunBody, ServerConfig
from tokenwire.tools import Toolset

__all__ = ["check_model", "check_tools", "max_tokens", "request_for", "run_limits"]


def max_tokens(cfg: ServerConfig, asked: int | None) -> int | None:
    """A run's ``max_tokens``: what it asked for, or the server's default; above the ceiling
    is :class:`InvalidRequest`."""
    if asked is None:
        return cfg.default_max_tokens
    if asked > cfg.max_tokens_ceiling:
        raise InvalidRequest(f"max_tokens {asked} is above this server's ceiling ({cfg.max_tokens_ceiling})")
    return asked


def run_limits(cfg: ServerConfig, asked: Limits | None) -> Limits:
    """A run's limits: what it asked for (or the app's defaults), with the server's default
    duration when it set none; a duration above the ceiling is :class:`InvalidRequest`."""
    limits = asked or Limits()
    if limits.max_duration_s is None and cfg.default_max_duration_s is not None:
        limits = msgspec.structs.replace(limits, max_duration_s=cfg.default_max_duration_s)
    if limits.max_duration_s is not None and limits.max_duration_s > cfg.max_duration_ceiling_s:
        raise InvalidRequest(
            f"limits.max_duration_s {limits.max_duration_s:g} is above this server's ceiling "
            f"({cfg.max_duration_ceiling_s:g} s)"
        )
    return limits


def request_for(body: RunBody, tools: Toolset) -> Request:
    """The native API's run body as our :class:`~tokenwire.Request` (tools by name, from ``tools``)."""
    if (body.prompt is None) == (body.messages is None):
        raise InvalidRequest("give exactly one of 'prompt' and 'messages'")
    messages = list(body.messages or [Message("user", body.prompt or "")])
    if body.system:
        messages.insert(0, Message("system", body.system))
    clash = [t.name for t in body.client_tools if t.name in tools]
    if clash:
        raise InvalidRequest(f"client_tools {clash} have the names of this server's tools")
    specs: list[ToolSpec] = [t.spec for t in tools if t.name in body.tools] + list(body.client_tools)
    return Request(
        messages,
        tools=specs,
        tool_choice=body.tool_choice,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        stop=body.stop,
        seed=body.seed,
        model=body.model,
    )


def check_tools(name: str, provider: Provider, tools: list[str], server: Toolset, *, waits: bool = False) -> None:
    """A run's server tools (by name) must be ``server``'s, and they (and the caller's tools that
    the run ``waits`` for) join a run through tokenwire's agent loop, which cannot wrap another
    framework's agent (it runs its own tools): :class:`InvalidRequest`."""
    unknown = [t for t in tools if t not in server]
    if unknown:
        raise InvalidRequest(f"unknown tools {unknown}; this server has: {', '.join(server.names) or 'none'}")
    if (tools or waits) and getattr(provider, "runs_own_tools", False):
        raise InvalidRequest(f"provider {name!r} is an agent that runs its own tools; other tools cannot join it")


def check_model(asked: str | None, name: str, provider: Provider, names: Iterable[str]) -> None:
    """A native run's ``model`` must be one its provider can answer with: any, for a provider
    that ``chooses_model`` (the default: the cloud APIs pick by name); for one of a fixed model,
    its name, the provider's name or the model file's path or name. Else :class:`ModelNotFound`
    (a local model would otherwise answer a request for ``gpt-4o`` without a word)."""
    if not asked or getattr(provider, "chooses_model", True):
        return
    path = getattr(provider, "model_path", None)
    own = {name, str(provider.model), *((str(path), Path(path).name) if path is not None else ())}
    if asked not in own:
        raise ModelNotFound(
            f"provider {name!r} answers with {str(provider.model)!r} and cannot switch to {asked!r}; leave "
            f"`model` out, or name a provider (`provider`): {', '.join(names)}"
        )
