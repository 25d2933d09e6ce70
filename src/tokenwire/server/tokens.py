"""Stream tokens and API keys (sans-I/O: no clocks inside, pass ``now``).

A stream token is scoped to one stream and a set of permissions (``read``, ``cancel``) and
expires. It is ``<payload>.<signature>``, both base64url: the payload is compact JSON
``{"sid", "perm", "exp"}`` and the signature is HMAC-SHA256 over it with the server's secret.
It travels in ``Authorization: Bearer``, never in a URL (URLs reach access logs): what a
browser must put in a URL (EventSource and WebSocket cannot set headers) is a **ticket**, a
single-use credential valid for seconds, exchanged for a token or an API key (:class:`Tickets`).

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
from collections.abc import Iterable, Mapping

import msgspec

from tokenwire.errors import Forbidden, Unauthorized

__all__ = [
    "Permission",
    "StreamTokens",
    "TicketClaims",
    "Tickets",
    "TokenClaims",
    "bearer",
    "check_api_key",
    "is_api_key",
    "new_secret",
]

Permission = str
"""``"read"`` or ``"cancel"``."""


def bearer(headers: Mapping[str, str]) -> str | None:
    """The credential of an ``Authorization: Bearer …`` header (HTTP headers or gRPC metadata), or None."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def is_api_key(credential: str | None, keys: Iterable[str] | None) -> bool:
    """Whether ``credential`` is one of ``keys`` (compared in constant time)."""
    if not credential or keys is None:
        return False
    return any(hmac.compare_digest(credential.encode(), k.encode()) for k in keys)


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


def _approval_mac(secret: bytes, stream_id: str, call_id: str) -> str:
    return _b64(hmac.new(secret, f"approve:{stream_id}:{call_id}".encode(), hashlib.sha256).digest()[:16])


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
            raise Unauthorized("a stream token is required: pass it as 'Authorization: Bearer <token>'")
        claims = self.claims(token, now=now)
        if claims.sid != stream_id:
            raise Forbidden(f"this token is for stream {claims.sid!r}, not {stream_id!r}")
        if needed not in claims.perm:
            allowed = ", ".join(sorted(claims.perm)) or "nothing"
            raise Forbidden(f"this token does not allow {needed!r} on stream {stream_id!r} (it allows: {allowed})")
        return claims

    def approval_id(self, stream_id: str, call_id: str) -> str:
        """An id that names one call's approval in one run and proves a node with this secret
        issued it: what the AI SDK's ``tool-approval-request`` and AG-UI's interrupts carry, and
        what their clients send back with the answer. ``<stream_id>.<mac>.<call_id>``: it answers
        that one call and nothing else (no stream token goes into a client's message history);
        on a server with API keys the answer must still come with the owner's key.

        >>> tokens = StreamTokens(b"a-server-secret-of-32-bytes-long")
        >>> tokens.approval_call(tokens.approval_id("s1", "call.1"))
        ('s1', 'call.1')
        >>> tokens.approval_call("s1.forged.call.1")
        Traceback (most recent call last):
        ...
        tokenwire.errors.Forbidden: not an approval id this server issued: 's1.forged.call.1'
        """
        return f"{stream_id}.{_approval_mac(self._secret, stream_id, call_id)}.{call_id}"

    def approval_call(self, approval_id: str) -> tuple[str, str]:
        """``(stream_id, call_id)`` of an id :meth:`approval_id` made, else :class:`Forbidden`."""
        stream_id, _, rest = approval_id.partition(".")
        mac, _, call_id = rest.partition(".")
        expected = _approval_mac(self._secret, stream_id, call_id)
        if not (approval_id.isascii() and call_id and hmac.compare_digest(mac, expected)):
            raise Forbidden(f"not an approval id this server issued: {approval_id[:120]!r}")
        return stream_id, call_id

    def claims(self, token: str | None, *, now: float) -> TokenClaims:
        """The claims of a valid, unexpired token, whatever stream it is for (:class:`Unauthorized` otherwise)."""
        if not token or not token.isascii():
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
        return claims


class TicketClaims(msgspec.Struct, frozen=True):
    n: str
    """The ticket's nonce: redeeming it once claims it for good (on every node of a shared log)."""
    exp: float
    """Expiry, seconds since the epoch (seconds after issue)."""
    own: str | None = None
    """For a connection: the owner (an API key's fingerprint) it acts for."""
    sid: str | None = None
    """For reading a stream: which one."""
    perm: frozenset[str] = frozenset()
    """What it allows on ``sid``."""


_encode_ticket = msgspec.json.Encoder().encode
_decode_ticket = msgspec.json.Decoder(TicketClaims).decode


class Tickets:
    """Single-use, short-lived credentials for URLs (sans-I/O: the caller enforces single use
    with its log's ``claim_once`` and passes ``now``). Signed apart from stream tokens: one is
    never accepted as the other.

    >>> tickets = Tickets(b"a-server-secret-of-32-bytes-long")
    >>> t = tickets.issue(now=1000.0, ttl_s=30, sid="s1", perm={"read"})
    >>> tickets.verify(t, now=1010.0).sid
    's1'
    >>> tickets.verify(t, now=1031.0)
    Traceback (most recent call last):
    ...
    tokenwire.errors.Unauthorized: the ticket expired 1 s ago; ask for a new one (POST /v1/tickets)
    """

    def __init__(self, secret: bytes):
        self._secret = b"tokenwire-ticket:" + secret

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self,
        *,
        now: float,
        ttl_s: float,
        owner: str | None = None,
        sid: str | None = None,
        perm: Iterable[Permission] = (),
    ) -> str:
        claims = TicketClaims(n=secrets.token_urlsafe(12), exp=now + ttl_s, own=owner, sid=sid, perm=frozenset(perm))
        payload = _b64(_encode_ticket(claims))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, ticket: str, *, now: float) -> TicketClaims:
        """The claims of a genuine, unexpired ticket (:class:`Unauthorized` otherwise)."""
        payload, sep, signature = ticket.partition(".")
        if not ticket.isascii() or not sep or not hmac.compare_digest(signature, self._sign(payload)):
            raise Unauthorized("invalid ticket (malformed or not issued by this server)")
        try:
            claims = _decode_ticket(_unb64(payload))
        except (ValueError, msgspec.DecodeError):
            raise Unauthorized("invalid ticket payload") from None
        if claims.exp <= now:
            raise Unauthorized(f"the ticket expired {now - claims.exp:.0f} s ago; ask for a new one (POST /v1/tickets)")
        return claims


def check_api_key(presented: str | None, keys: Iterable[str]) -> None:
    """Raise :class:`Unauthorized` unless ``presented`` is one of ``keys`` (constant-time compare)."""
    if not presented:
        raise Unauthorized("an API key is required: 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys):
        raise Unauthorized("invalid API key")
