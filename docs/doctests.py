"""A Griffe extension for the API reference: docstrings' doctest examples become ``pycon`` code
blocks (Markdown would run ``>>>`` lines and their output together as one paragraph), and their
Sphinx roles (``:class:`~tokenwire.Response```) become code spans."""

from __future__ import annotations

import re
from typing import Any

import griffe


def fence(text: str) -> str:
    """Wrap each run of unindented ``>>>`` / ``...`` lines and their output in a fence."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(">>>") and not inside:
            out += ["```pycon", line]
            inside = True
        elif inside and not line.strip():
            out += ["```", line]
            inside = False
        else:
            out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def unrole(text: str) -> str:
    """``:func:`~a.b.c``` → ```c```, ``:class:`a.B``` → ```a.B```."""
    return ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)


class Doctests(griffe.Extension):
    """Fence the doctests and unwrap the roles of every object the API reference loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = unrole(fence(obj.docstring.value))
