"""The documentation site builds in strict mode (a broken link, a missing README section or a
docstring the API reference cannot render fails it) and every page of its nav is in it. The
Python blocks of its pages, the README's sections included, run in tests/test_readme.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def nav_pages(nav: list[object]) -> list[str]:
    found: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        found += nav_pages(value) if isinstance(value, list) else [str(value)]
    return found


@pytest.mark.timeout(360)
def test_the_site_builds_strict_with_every_page_of_its_nav(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(mkdocs, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = nav_pages(config["nav"])
    assert {str(p.relative_to(DOCS)) for p in PAGES} == set(pages)  # no page left out of the nav
    for page in pages:
        html = site / page.removesuffix(".md").removesuffix("index") / "index.html"
        assert html.is_file(), page
    quickstart = (site / "quickstart" / "index.html").read_text()
    assert "Server: SSE, WebSocket, web UI" in quickstart and "Last-Event-ID" in quickstart  # README's section
    reference = (site / "reference" / "tokenwire" / "index.html").read_text()
    assert 'id="tokenwire.run_sync"' in reference  # from the docstrings
    assert '<span class="gp">&gt;&gt;&gt; </span>' in reference and ":func:" not in reference  # doctests, roles
