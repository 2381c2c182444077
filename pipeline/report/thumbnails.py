"""Thumbnails: the pages ask for the images they show, then only those are read and written as small JPEGs."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.extract.config import DEFAULT_MAX_PIXELS
from pipeline.io.decode import DATA_ERRORS, SampleError, thumbnail_jpeg
from pipeline.report.html import esc
from pipeline.roots.sources import ImageSource, Item, read_images

log = logging.getLogger(__name__)

THUMBS = "thumbs"  # the thumbnails' folder, beside the pages


@dataclass
class Thumb:
    """A thumbnail a page wants; `src` (relative to the page) is set once written, `error` otherwise."""

    key: str
    name: str
    src: str | None = None
    error: str | None = None

    def html(self) -> str:
        if self.src:
            return f'<img src="{esc(self.src)}" alt="{esc(self.key)}" loading="lazy">'
        return f'<div class="missing" title="{esc(self.error or "")}">image unavailable</div>'


class Thumbnails:
    """Collects what the pages show, then reads only those images from their sources and writes small JPEGs."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder, self.size = folder, size
        self.wanted: dict[str, tuple[ImageSource | None, Item, Thumb]] = {}
        self.missing: Counter = Counter()
        self.written = 0

    def want(self, source: ImageSource | None, key: str, shard: str = "", index: int = -1) -> Thumb:
        item = (key, shard or "", int(index))
        name = hashlib.sha1("\0".join([source.id if source else "", *map(str, item)]).encode()).hexdigest()[:20]
        if name not in self.wanted:
            thumb = Thumb(key, f"{name}.jpg", error=None if source else "the image source is unknown")
            self.wanted[name] = (source, item, thumb)
        return self.wanted[name][2]

    def fetch(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        by_source: dict[str, list[tuple[ImageSource, Item, Thumb]]] = {}
        for source, item, thumb in self.wanted.values():
            if source is not None:
                by_source.setdefault(source.id, []).append((source, item, thumb))
        for entries in by_source.values():
            got = read_images(entries[0][0], [item for _, item, _ in entries])
            for _, item, thumb in entries:
                data = got.get(item, "not read")
                if isinstance(data, str):
                    thumb.error = data
                else:
                    thumb.error = _write_thumbnail(data, self.folder / thumb.name, self.size)
                    if thumb.error is None:
                        thumb.src = f"{THUMBS}/{thumb.name}"
                        self.written += 1
        self.missing = Counter(t.error.split(":")[0] for _, _, t in self.wanted.values() if t.src is None)
        if self.missing:
            log.warning("report: %d of %d images could not be shown (%s)", sum(self.missing.values()),
                        len(self.wanted), dict(self.missing))


def _write_thumbnail(data: bytes, path: Path, size: int) -> str | None:
    """A JPEG of at most `size` px a side (JPEGs decoded at reduced scale); why not, when it cannot be."""
    try:
        path.write_bytes(thumbnail_jpeg(data, size, DEFAULT_MAX_PIXELS))
    except SampleError as err:
        return f"{err.reason}: {err.detail}"
    except DATA_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
