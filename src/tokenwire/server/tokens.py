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
import secrets
from collections.abc import Iterable

import msgspec

from tokenwire.errors import Forbidden, Unauthorized

__all__ = ["Permission", "StreamTokens", "TokenClaims", "check_api_key", "new_secret"]

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
            raise ValueError("the token secret must be at least 16 bytes; use tokenwire.server.tokens.new_secret()")
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
