"""The cursor of a run tree: where a reader of a run and every run below it is, in a few bytes.

A parent's stream marks each child run with ``step child started`` (its ``stream_id``, written
once the child is in the log) and ``step child finished``. :class:`TreeCursor` is the sans-I/O
core of reading a tree (:mod:`tokenwire.log.tree_read` reads one from a log with it): each
stream's position, the causal hold of a parent's ``child finished`` mark until the child's
terminal event was delivered, and the token a reader resumes from after a dropped connection,
with nothing lost and nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import quote, unquote

from tokenwire.errors import ConnectionLost, InvalidRequest
from tokenwire.events import TERMINAL_TYPES, Event, Step

__all__ = ["MAX_TOKEN", "TreeCursor", "child_started"]

MAX_TOKEN = 65_536
"""The longest tree cursor :meth:`TreeCursor.parse` takes (about 1,800 streams still running)."""


def child_started(event: Event) -> str | None:
    """The stream id of the child run ``event`` marks as started in its parent, or None."""
    if event.__class__ is not Step or event.name != "child" or event.status != "started":
        return None
    detail = event.detail
    sid = detail.get("stream_id") if isinstance(detail, dict) else None
    return sid if isinstance(sid, str) and sid else None


def _child_finished(event: Event) -> tuple[str, bool] | None:
    """The child a ``step child finished`` mark names, and whether it ended (not suspended)."""
    if event.__class__ is not Step or event.name != "child" or event.status != "finished":
        return None
    detail = event.detail
    sid = detail.get("stream_id") if isinstance(detail, dict) else None
    if not isinstance(sid, str) or not sid:
        return None
    return sid, detail.get("outcome") != "suspended"


class TreeCursor:
    """Where a reader of a run tree is: the sans-I/O core of :func:`~tokenwire.log.follow_tree` and of the
    server's tree subscription.

    Feed it each stream's events as they are read (:meth:`feed`, overlaps allowed); it gives
    back the events to deliver, in order per stream, and lists in :attr:`opening` the child
    streams to start reading. A parent's ``child finished`` mark is delivered only after the
    child's terminal event (the parent's later events wait with it), so a reader never sees a
    child finished before its end. :meth:`token` is the resume state in a few bytes: the root's
    position and those of the streams that have not ended (an ended child is never read again,
    since its ``started`` mark lies behind its parent's position), ``seq@stream`` each, with an
    ``e`` after the seq of an ended root and a ``p`` after that of a child its parent marked
    suspended; :meth:`parse` reads it back.

    >>> from tokenwire.events import Done, Start, Step
    >>> cur = TreeCursor("root")
    >>> mark = Step(name="child", status="started", detail={"stream_id": "kid"}, stream_id="root", seq=1)
    >>> [e.type for e in cur.feed("root", [Start(model="m", stream_id="root", seq=0), mark])]
    ['start', 'step']
    >>> cur.opening, cur.token()
    (['root', 'kid'], '2@root,0@kid')
    >>> _ = list(cur.feed("kid", [Start(model="m", stream_id="kid", seq=0), Done(stream_id="kid", seq=1)]))
    >>> cur.token(), cur.ended
    ('2@root', False)
    """

    __slots__ = (
        "_dirty",
        "_ended",
        "_gone",
        "_held",
        "_names",
        "_parts",
        "_settled",
        "_waiting",
        "marked_at",
        "max_streams",
        "opening",
        "positions",
        "root",
        "roots",
    )

    def __init__(
        self,
        root: str,
        positions: Mapping[str, int] | None = None,
        *,
        max_streams: int = 1024,
        roots: Iterable[str] = (),
    ):
        self.root = root
        self.max_streams = max_streams
        self.positions: dict[str, int] = {root: 0, **dict.fromkeys(roots, 0), **(positions or {})}
        """The next seq to deliver of every stream read (the root's first)."""
        self.roots: set[str] = {root, *roots}
        """The streams read for their own sake (the root; of a multiplexed subscription, every
        stream it names): an ended one keeps its part of the token (``e``), so that a resume
        that names it again does not read it again; the runs found below them drop theirs."""
        self.opening: list[str] = []
        """Streams to start reading (from :attr:`positions`); the caller takes and clears it."""
        self._ended: set[str] = set()  # delivered their terminal event
        self._settled: set[str] = set()  # ended, or marked suspended by their parent: not waited for
        self._held: dict[str, list[Event]] = {}  # a parent's events waiting for a child's terminal
        self._waiting: dict[str, str] = {}  # child -> the parent held for it
        self._names: dict[str, str] = {}  # stream id -> its form in a token
        self._parts: dict[str, str] = {}  # stream id -> its part of the token
        self._dirty: set[str] = set()  # streams that moved since the token was last made
        self._gone: dict[str, None] = {}  # child runs that ended and left the cursor, newest last
        self.marked_at: dict[str, float] = {}
        """When each child found by this cursor was marked started (its parent's mark's ``ts``)."""
        for sid in self.positions:
            self._note(sid)
        self.reopen()

    def reopen(self) -> None:
        """Start again from the positions (a new connection after a drop): every stream that has
        not ended is to be read again, and the events held back are forgotten (they were not
        delivered, so they are read again too)."""
        self._held.clear()
        self._waiting.clear()
        self.opening = [sid for sid in self.positions if sid not in self._ended]

    def add_root(self, sid: str, at: int = 0) -> None:
        """Read ``sid`` too, from seq ``at`` unless the cursor has it (a stream a multiplexed
        subscription names): it becomes one of :attr:`roots`."""
        self.roots.add(sid)
        if sid not in self.positions:
            if len(self.positions) >= self.max_streams:
                raise InvalidRequest(f"at most {self.max_streams} streams on one subscription")
            self.positions[sid] = at
            self.opening.append(sid)
        self._note(sid)

    def restore(self, token: str) -> None:
        """Become the cursor ``token`` describes, keeping :attr:`roots` (a client taking the
        position a server starts a subscription at: the runs of ``mine`` going on then)."""
        other = TreeCursor.parse(token, max_streams=self.max_streams)
        roots = self.roots | other.roots
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))
        self.roots = roots
        for sid in self.positions:
            self._note(sid)

    def finished(self, sid: str) -> bool:
        """Whether ``sid``'s terminal event was delivered."""
        return sid in self._ended

    @classmethod
    def parse(cls, token: str, *, max_streams: int = 1024) -> TreeCursor:
        """The cursor a :meth:`token` describes; :class:`~tokenwire.errors.InvalidRequest` when
        it is not one. Its first stream is its :attr:`root`; a multiplexed subscription's other
        roots are the server's to say again (:meth:`add_root`)."""
        if len(token) > MAX_TOKEN:
            raise InvalidRequest(f"a tree cursor is at most {MAX_TOKEN} characters, not {len(token)}")
        positions: dict[str, int] = {}
        marked: dict[str, str] = {}
        for part in token.split(","):
            seq, at, sid = part.partition("@")
            if seq[-1:] in ("e", "p"):
                seq, marked[unquote(sid)] = seq[:-1], seq[-1]
            ok = at and sid and seq.isascii() and seq.isdigit() and len(seq) <= 18
            if not ok or len(positions) >= max_streams:
                raise InvalidRequest(f"not a tree cursor: {token[:60]!r}")
            positions[unquote(sid)] = int(seq)
        cursor = cls(next(iter(positions)), positions, max_streams=max_streams)
        for sid, how in marked.items():
            cursor._settled.add(sid)
            if how == "e":
                cursor._ended.add(sid)
            cursor._note(sid)
        cursor.reopen()
        return cursor

    @property
    def ended(self) -> bool:
        """Every stream of the tree read so far has delivered its terminal event (or, a child
        its parent marked as suspended, is not waited for: it may carry on much later)."""
        return len(self._settled) == len(self.positions)

    def token(self) -> str:
        """The resume state as text (ASCII, no spaces: fit for an SSE ``id``): each stream's part
        is remade only when it moved, so its cost is the token's length (and nothing for a reader
        that never asks)."""
        if self._dirty:
            for sid in self._dirty:
                self._note(sid)
            self._dirty.clear()
        return ",".join(self._parts.values())

    def _note(self, sid: str) -> None:
        """Bring ``sid``'s part of the token up to date (an ended child has none)."""
        if sid in self._ended and sid not in self.roots:
            self._parts.pop(sid, None)
            return
        name = self._names.get(sid)
        if name is None:
            name = self._names[sid] = quote(sid, safe="")
        how = ("e" if sid in self._ended else "p") if sid in self._settled else ""
        self._parts[sid] = f"{self.positions[sid]}{how}@{name}"

    def receive(self, event: Event) -> Iterator[Event]:
        """An event a server sent on a tree subscription (a client's side: in delivery order,
        maybe again after a resume): the event once, as :meth:`feed` gives it;
        :class:`~tokenwire.errors.ConnectionLost` for one of a stream not in the tree."""
        sid = event.stream_id
        if sid not in self.positions:
            if sid in self._gone:
                return iter(())  # a child that ended here, sent again by a resume from before its end
            raise ConnectionLost(f"tree {self.root!r}: the server sent an event of a stream not in it")
        return self.feed(sid, (event,))

    def _forget(self, sid: str) -> None:
        """A child run ended: it leaves the cursor (a reader of an owner's runs reads any number
        of them, at most ``max_streams`` at once); the newest ended are kept by name, to drop what
        a resume from before their end sends again."""
        del self.positions[sid]
        for held in (self._ended, self._settled, self._dirty):
            held.discard(sid)
        for named in (self._names, self._parts, self.marked_at):
            named.pop(sid, None)
        self._gone[sid] = None
        if len(self._gone) > 4 * self.max_streams:
            del self._gone[next(iter(self._gone))]

    def feed(self, sid: str, events: Iterable[Event]) -> Iterator[Event]:
        """The events of ``sid`` (read in order, maybe again) that are now deliverable, and those
        of parents this releases; the cursor moves as each is taken."""
        held = self._held.get(sid)
        if held is not None:  # waiting for a child: keep the rest, in order, once
            after = held[-1].seq
            held.extend(e for e in events if e.seq > after)
            return
        work: list[tuple[str, Iterable[Event]]] = [(sid, events)]
        while work:
            sid, batch = work.pop()
            it = iter(batch)
            for event in it:
                pos = self.positions[sid]
                if event.seq < pos:
                    continue  # a resumed reader's overlap
                finished = _child_finished(event)
                if finished is not None:
                    child, ended = finished
                    if not ended and child in self.positions:
                        self._settled.add(child)  # suspended: the tree does not wait for it
                        self._dirty.add(child)
                    elif child in self.positions and child not in self._ended:
                        self._held[sid] = [event, *it]
                        self._waiting[child] = sid
                        break
                self.positions[sid] = event.seq + 1
                started = child_started(event)
                if started is not None and started not in self.positions and len(self.positions) < self.max_streams:
                    self.positions[started] = 0
                    self.marked_at[started] = event.ts
                    self.opening.append(started)
                    self._dirty.add(started)
                terminal = event.__class__ in TERMINAL_TYPES
                if terminal and sid not in self.roots:
                    self._forget(sid)  # never read again (its mark lies behind its parent's position)
                elif terminal:
                    self._ended.add(sid)
                    self._settled.add(sid)
                    self._dirty.add(sid)
                else:
                    self._dirty.add(sid)
                if terminal:
                    parent = self._waiting.pop(sid, None)
                    if parent is not None:
                        yield event
                        work.append((parent, self._held.pop(parent)))
                        break  # nothing of sid follows its terminal
                yield event
