"""Public exceptions of tokenwire.

Every exception the library raises on purpose derives from :class:`TokenwireError`, so callers can
catch one base class. Messages name what was wrong, with the offending value, and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Conflict",
    "RunSuspended",
    "BodyTooLarge",
    "ClientError",
    "ConnectionLost",
    "EventDecodeError",
    "Failure",
    "Forbidden",
    "InvalidRequest",
    "ModelLoadError",
    "MalformedBody",
    "ModelNotFound",
    "ObjectInvalid",
    "ObserverOverflow",
    "PartialJSONError",
    "ProviderError",
    "SeqEvicted",
    "SessionError",
    "ShuttingDown",
    "OverCapacity",
    "LogUnavailable",
    "StreamClosed",
    "StreamFailed",
    "StreamNotFound",
    "TokenwireError",
    "ToolArgumentsInvalid",
    "TreeLimitExceeded",
    "InvalidStateDelta",
    "Unauthorized",
    "Unsupported",
]


class TokenwireError(Exception):
    """Base class of every error tokenwire raises on purpose."""


class EventDecodeError(TokenwireError, ValueError):
    """Bytes or a dict could not be decoded into an event.

    The message says what was wrong (malformed JSON, unknown ``type``, missing or mistyped field)
    and quotes the start of the offending input.
    """


class ProviderError(TokenwireError):
    """A model provider failed; the engine turns it into an ``error`` event.

    Providers raise it (or any exception) from their stream; ``code`` and ``retryable`` are
    copied into the terminal ``error`` event. Other exceptions get code ``provider_error``.

    >>> raise ProviderError("upstream overloaded", code="overloaded", retryable=True)
    Traceback (most recent call last):
    ...
    tokenwire.errors.ProviderError: upstream overloaded
    """

    def __init__(self, message: str, *, code: str = "provider_error", retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class ModelLoadError(ProviderError):
    """A local model could not be loaded (missing file, corrupt GGUF, missing extra).

    Raised by the constructor for a missing file; a model that fails to load during a stream ends
    it with an ``error`` event (code ``model_load_failed``).
    """

    def __init__(self, message: str):
        super().__init__(message, code="model_load_failed")


class StreamNotFound(TokenwireError, LookupError):
    """An event log has no stream with this id (never created, or evicted by retention)."""


class SeqEvicted(TokenwireError, LookupError):
    """A reader asked for a sequence number the log no longer retains.

    ``first_available`` is the oldest seq still readable; resume from there or restart the run.
    """

    def __init__(self, stream_id: str, requested: int, first_available: int):
        super().__init__(
            f"stream {stream_id!r}: seq {requested} is no longer retained "
            f"(oldest retained seq is {first_available}); read from {first_available} "
            "or raise the log's max_events"
        )
        self.stream_id = stream_id
        self.requested = requested
        self.first_available = first_available


class ObjectInvalid(TokenwireError, ValueError):
    """Structured output that cannot be used: malformed JSON, an object that does not match the
    schema, or a stream that ended without the object (:func:`tokenwire.stream_object`)."""


class ObserverOverflow(TokenwireError):
    """A queued observer with overflow policy ``disconnect`` fell too far behind and was detached.

    It can resume from the event log at the last seq it saw.
    """


class Conflict(TokenwireError):
    """The request contradicts the run's state: an approval already answered, a run not waiting for one."""


class RunSuspended(TokenwireError):
    """Raised by ``StreamHandle.wait()`` for a durable run that suspended instead of ending: it
    waits in the log (an approval, a hand-over to another node) and any node may resume it."""

    def __init__(self, stream_id: str, reason: str):
        super().__init__(f"run {stream_id!r} suspended: {reason}")
        self.stream_id = stream_id
        self.reason = reason


class StreamFailed(TokenwireError):
    """Raised by ``Response.raise_for_error()`` for a stream that ended with an ``error`` event."""

    def __init__(self, error: object):
        code = getattr(error, "code", "?")
        source = getattr(error, "source", "?")
        message = getattr(error, "message", "")
        super().__init__(f"stream failed ({source}/{code}): {message}")
        self.error = error


class PartialJSONError(TokenwireError, ValueError):
    """The fragments are not a prefix of valid JSON."""


class ClientError(TokenwireError):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


class ConnectionLost(TokenwireError):
    """The stream could not be resumed within the reconnect budget."""


class ToolArgumentsInvalid(TokenwireError, ValueError):
    """A tool call's arguments do not match the tool's signature.

    The message names the tool, the argument, what was expected and what was received; it is
    sent back to the model as an error result so the model can correct itself.
    """


class Unauthorized(TokenwireError):
    """Missing, malformed, forged or expired credentials (HTTP 401, WebSocket 1008)."""


class Forbidden(TokenwireError):
    """Valid credentials for something else: another stream or permission (HTTP 403)."""


class SessionError(TokenwireError):
    """A message a multiplexed connection (WebSocket, gRPC ``Session``) cannot act on: ``code``
    (``bad_message``, ``not_found``, ``forbidden``, ``gone``, ``over_capacity`` …) and why. The
    connection reports it and stays open."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class ShuttingDown(TokenwireError):
    """The server is shutting down and accepts no new runs (HTTP 503)."""


@dataclass
class Failure(TokenwireError):
    """A provider's transport or API failure, classified: the ``error`` event it becomes and
    whether to retry it before any output (raised and caught inside the providers' HTTP shell)."""

    code: str
    message: str
    source: str = "provider"
    retryable: bool = False
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


class StreamClosed(TokenwireError):
    """Something was appended to a stream's log after its terminal event (a producer bug: a
    stream ends exactly once)."""


class OverCapacity(TokenwireError):
    """A capacity cap is reached (live runs or connections, globally or per API key): HTTP 429
    with ``Retry-After``, WebSocket close 1013 or an error message. ``retry_after_s`` says when
    to try again."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LogUnavailable(TokenwireError):
    """A shared event log stayed unwritable past its bound (time or buffered events); the stream
    ends with ``error(source=transport, code=log_unavailable, retryable=True)``. Raised by the
    server's run service for a run whose start the log could not take (HTTP 503 with
    ``Retry-After``, gRPC UNAVAILABLE): ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidRequest(TokenwireError, ValueError):
    """A request the server cannot act on: malformed JSON, a field of the wrong type, a value
    above a ceiling, an unknown tool or provider (HTTP 422 on the native API, 400 on the
    OpenAI-compatible ones, gRPC INVALID_ARGUMENT, a session error ``invalid_request``).

    >>> raise InvalidRequest("max_tokens 9000 is above this server's ceiling (8192)")
    Traceback (most recent call last):
    ...
    tokenwire.errors.InvalidRequest: max_tokens 9000 is above this server's ceiling (8192)
    """


class MalformedBody(InvalidRequest):
    """A body that is not JSON at all, or empty (HTTP 400 ``invalid_json`` on every API; a body
    that is JSON but not a valid request is a 422 on the native API)."""


class BodyTooLarge(InvalidRequest):
    """A request body over the server's ``max_body_bytes`` (HTTP 413)."""


class ModelNotFound(InvalidRequest, LookupError):
    """A request named a model the server does not serve (HTTP 404 ``model_not_found``)."""


class TreeLimitExceeded(TokenwireError):
    """A tool tried to start a child run past its tree's bounds (``ToolOptions.max_child_depth``,
    ``max_children``); the model reads it as the tool's error."""


class InvalidStateDelta(TokenwireError, ValueError):
    """A ``state.delta`` that is not an RFC 6902 JSON Patch, or that does not apply to the state
    so far (a path that is not there, a failed ``test``). In a run it ends the stream with
    ``error(bad_provider_output)``, before any reader sees it, rather than a state readers disagree on."""


class Unsupported(TokenwireError):
    """The server cannot do this at all, e.g. speech without a text-to-speech engine (HTTP 501)."""
