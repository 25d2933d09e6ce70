"""Stream tokens and API keys (sans-I/O: no clocks inside, pass ``now``).

A stream token is scoped to one stream and a set of permissions (``read``, ``cancel``) and
expires. It is ``<payload>.<signature>``, both base64url: the payload is compact JSON
``{"sid", "perm", "exp"}`` and the signature is HMAC-SHA256 over it with the server's secret.
Browsers can pass it as ``?token=`` (EventSource cannot set headers).

>>> tokens = StreamTokens(b"a-server-secret-of-32-bytes-long")
>>> t = tokens.issue("s1", {"read"}, now=1000.0, ttl_s=60)
>>> tokens.verify(t, "s1", "read", now=1010.0).perm
frozenset({'read'})
>>> tokens.verify(t, "s1", "cancel", now=1010.0)
Traceback (most recent call last):
...
tokenwire.errors.Forbidden: this token does not allow 'cancel' on stream 's1' (it allows: read)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Mapping

import msgspec

from tokenwire.errors import Forbidden, Unauthorized

__all__ = [
    "Forbidden",
    "Permission",
    "RedactingFilter",
    "Redactor",
    "StreamTokens",
    "TokenClaims",
    "Unauthorized",
    "check_api_key",
    "new_secret",
]

Permission = str
"""``"read"`` or ``"cancel"``."""


class TokenClaims(msgspec.Struct, frozen=True):
    sid: str
    """The stream the token is for."""
    perm: frozenset[str]
    """What it allows: ``read``, ``cancel``."""
    exp: float
    """Expiry, seconds since the epoch."""


_encode_claims = msgspec.json.Encoder().encode
_decode_claims = msgspec.json.Decoder(TokenClaims).decode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret() -> bytes:
    """A random 32-byte signing secret."""
    return secrets.token_bytes(32)


class StreamTokens:
    """Issues and verifies stream tokens with one secret."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes; use tokenwire.security.new_secret()")
        self._secret = secret

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, stream_id: str, perm: Iterable[Permission], *, now: float, ttl_s: float) -> str:
        """A token for ``stream_id`` allowing ``perm`` until ``now + ttl_s``."""
        claims = TokenClaims(sid=stream_id, perm=frozenset(perm), exp=now + ttl_s)
        payload = _b64(_encode_claims(claims))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None, stream_id: str, needed: Permission, *, now: float) -> TokenClaims:
        """The token's claims if it grants ``needed`` on ``stream_id`` now.

        Raises :class:`Unauthorized` (missing, malformed, bad signature, expired) or
        :class:`Forbidden` (another stream, or without that permission).
        """
        if not token:
            raise Unauthorized("a stream token is required: pass it as 'Authorization: Bearer <token>' or ?token=")
        if not token.isascii():  # tokens are base64url: anything else is forged (and would not compare)
            raise Unauthorized("invalid stream token (malformed or not signed by this server)")
        payload, sep, signature = token.partition(".")
        if not sep or not hmac.compare_digest(signature, self._sign(payload)):
            raise Unauthorized("invalid stream token (malformed or not signed by this server)")
        try:
            claims = _decode_claims(_unb64(payload))
        except (ValueError, msgspec.DecodeError):
            raise Unauthorized("invalid stream token payload") from None
        if claims.exp <= now:
            raise Unauthorized(f"the stream token expired {now - claims.exp:.0f} s ago; ask for a new one")
        if claims.sid != stream_id:
            raise Forbidden(f"this token is for stream {claims.sid!r}, not {stream_id!r}")
        if needed not in claims.perm:
            allowed = ", ".join(sorted(claims.perm)) or "nothing"
            raise Forbidden(f"this token does not allow {needed!r} on stream {stream_id!r} (it allows: {allowed})")
        return claims


def check_api_key(presented: str | None, keys: Iterable[str]) -> None:
    """Raise :class:`Unauthorized` unless ``presented`` is one of ``keys`` (constant-time compare)."""
    if not presented:
        raise Unauthorized("an API key is required: 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys):
        raise Unauthorized("invalid API key")


_SECRET_PARAMS = r"(?:token|read_token|api_key|apikey|access_token|key|ticket)"
_PATTERNS = (
    # ?token=… / &api_key=… in URLs and query strings (also percent-encoded '=' as %3D)
    # (also a bare query string, as in the ASGI scope that trace level prints: b'token=…')
    (re.compile(r"(?i)((?:^|[?&;\s'\"])" + _SECRET_PARAMS + r"(?:=|%3D))[^&\s\"';]*"), r"\1[redacted]"),
    # Authorization: Bearer …, in log text and in header reprs (b'authorization', b'Bearer …')
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=%-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(authorization['\"]?\s*[,:=]\s*b?['\"])[^'\"]*"), r"\1[redacted]"),
    # "token": "…" / "read_token": "…" in JSON bodies echoed at trace level
    (re.compile(r"(?i)([\"']" + _SECRET_PARAMS + r"[\"']\s*:\s*[\"'])[^\"']*"), r"\1[redacted]"),
)


class Redactor:
    """Masks credentials in text: URL parameters named like a credential (``token``,
    ``api_key`` …), bearer values, authorization headers, JSON fields named like a credential, any
    literal secret registered with :meth:`add` (the server registers its API keys), and whatever
    the ``patterns`` (regular expressions) match. The one redactor of logs and of transcripts
    written to disk.

    >>> r = Redactor(["k-123456"], patterns=[r"sk-[A-Za-z0-9]{8,}"])
    >>> r("GET /v1/streams/s/events?token=abc.def&from_seq=3 HTTP/1.1 key k-123456")
    'GET /v1/streams/s/events?token=[redacted]&from_seq=3 HTTP/1.1 key [redacted]'
    >>> r("(b'authorization', b'Bearer xyz')")
    "(b'authorization', b'[redacted]')"
    >>> r("my key is sk-abcdefgh12")
    'my key is [redacted]'
    """

    def __init__(self, secrets: Iterable[str] = (), *, patterns: Iterable[str | re.Pattern[str]] = ()):
        self._literals: set[str] = set()
        for secret in secrets:
            self.add(secret)
        self._patterns = [re.compile(p) if isinstance(p, str) else p for p in patterns]

    def add(self, secret: str) -> None:
        """Also mask this exact string wherever it appears (ignored when shorter than 6 characters)."""
        if len(secret) >= 6:
            self._literals.add(secret)

    def __call__(self, text: str) -> str:
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        for pattern in self._patterns:
            text = pattern.sub("[redacted]", text)
        for secret in self._literals:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's final message (install it on handlers).

    ``tokenwire serve`` puts it on every handler of its logging configuration, so uvicorn's access
    log (which prints query strings) and its trace output (which prints WebSocket handshake
    headers) never show a credential.
    """

    def __init__(self, redactor: Redactor | None = None):
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are redacted one by one, keeping their place: formatters such as uvicorn's
        # access formatter unpack them.
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self._clean(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: self._clean(v) for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = self.redactor(record.msg)
        if record.exc_info and record.exc_text is None and record.exc_info[0] is not None:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
        return True

    def _clean(self, value: object) -> object:
        if value is None or isinstance(value, int | float):
            return value
        text = value if isinstance(value, str) else str(value)
        redacted = self.redactor(text)
        return value if redacted == text else redacted
