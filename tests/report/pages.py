"""Reading the report's HTML back in tests: groups with their tiles and keeper, links, thumbnails by key."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

EVIL = "evil<script>alert(1)</script>.jpg"  # a key (folder `evil<script>alert(1)<` + file `script>.jpg`)
BROKEN = "broken & <b>bad.jpg"


class Collect(HTMLParser):
    """Groups (with their tiles and keeper), every link and image source of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[int, dict] = {}
        self.links: list[str] = []
        self.current: int | None = None
        self.depth = 0  # open divs inside the current group

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div" and self.current is not None:
            self.depth += 1
        if tag == "div" and "group" in classes:
            self.current, self.depth = int(a["data-component"]), 1
            self.groups[self.current] = {"keys": [], "keepers": []}
        if tag == "figure" and self.current is not None:
            self.groups[self.current]["keys"].append(a["data-key"])
            if "keeper" in classes:
                self.groups[self.current]["keepers"].append(a["data-key"])
        if tag == "img":
            self.links.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.current is not None:
            self.depth -= 1
            if self.depth == 0:
                self.current = None


def parse_pages(folder: Path) -> dict[str, Collect]:
    pages = {}
    for path in sorted(folder.glob("*.html")):
        c = Collect()
        c.feed(path.read_text(encoding="utf-8"))
        pages[path.name] = c
    return pages


def thumbnails_by_key(text: str) -> dict[str, set[str]]:
    """key → the thumbs/ sources shown in the tiles of that key."""
    shown: dict[str, set[str]] = {}

    class Tiles(HTMLParser):
        key = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "figure":
                self.key = a.get("data-key")
            if tag == "img" and self.key and a["src"].startswith("thumbs/"):
                shown.setdefault(self.key, set()).add(a["src"])

    Tiles().feed(text)
    return shown


def mean_colour(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float64).reshape(-1, 3).mean(0)
