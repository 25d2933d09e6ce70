"""Every Python example in the README and in the documentation site's own pages runs as written
(the site's other pages include the README's sections)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SOURCES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [(p, code) for p in SOURCES for code in re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S)]


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("path", "code"), BLOCKS, ids=[f"{p.stem}{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_readme_example_runs(path: Path, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(path), "exec"), {"__name__": "__readme__"})
