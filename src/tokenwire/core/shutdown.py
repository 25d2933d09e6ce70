"""Hooks that run when the interpreter starts to exit, while every thread still runs.

At exit Python first joins its non-daemon threads (``ThreadPoolExecutor`` workers among them) and
only then runs :mod:`atexit` hooks, by which time a stream blocked on one of those threads has
already hung the exit. ``threading._register_atexit`` hooks run before the joins, in reverse order
of registration; :func:`at_exit` uses them where the interpreter has them, else :mod:`atexit`.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable

__all__ = ["at_exit"]


_registered: set[Callable[[], None]] = set()
_lock = threading.Lock()


def at_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` when the interpreter starts to exit, before non-daemon threads are joined.

    Registering the same hook again does nothing (it keeps its first place in the order).
    """
    with _lock:
        if hook in _registered:
            return
        _registered.add(hook)
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(hook)
        return
    with contextlib.suppress(RuntimeError):  # registering while already shutting down
        register(hook)
