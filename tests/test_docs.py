"""The docs site holds together without mkdocs: every relative link lands on a file, every page is in the nav."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")
PAGES = ("index.md", "install.md", "extract.md", "dedup.md", "search.md", "curate.md", "evaluate.md", "scaling.md",
         "DESIGN.md", "PERFORMANCE.md", "FORMAT.md")


def relative_links(page: Path) -> list[str]:
    """The targets of a page's Markdown links that point into the repository (no URL, no in-page anchor)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code blocks link nothing
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file(page):
    missing = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_the_site_has_every_page_and_the_nav_lists_each_once():
    assert {p.name for p in DOCS.glob("*.md")} >= set(PAGES)
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.M)
    assert sorted(nav) == sorted(p.name for p in DOCS.glob("*.md"))


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("")
    page.write_text("[b](b.md#x) [c](c.md) [web](https://example.org) [here](#top)\n```\n[d](d.md)\n```\n")
    assert relative_links(page) == ["b.md#x", "c.md"]
