"""Image files: which files of a folder are images (by Pillow's extensions, else their header), listed sorted."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from PIL import Image

from pipeline.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Extensions Pillow registers for formats it only writes, only stubs, or needs outside tools for: a file
# with such a name is an image only if its header says so.
_NOT_PHOTOS = {".pdf", ".eps", ".ps", ".mpg", ".mpeg", ".h5", ".hdf", ".fits", ".fit", ".wmf", ".emf",
               ".grib", ".bufr", ".xbm", ".xpm"}


def list_image_files(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(image files, skipped non-image files) below root, relative and sorted.

    A file is an image when Pillow knows its extension or, failing that, recognises its header (JPEG
    bytes behind an `.svg` name count). Files Pillow knows by name but cannot decode stay in the list:
    they become failure rows, never silent losses. Hidden files and folders (names starting with `.`: macOS
    `._name` resource forks, `.thumbnails` caches, `.git`) are left out and counted in the log.
    """
    root = Path(root)
    if root.is_file():
        shard = str(root).lower().endswith(TAR_SUFFIXES + PARQUET_SUFFIXES)
        raise InputError(f"{str(root)!r} is a file, not a folder: IMAGES= takes a folder of images (read "
                         f"recursively), " + (f"a shard is SHARDS={str(root)!r}" if shard else
                                              f"e.g. its folder IMAGES={str(root.parent)!r}"))
    if not root.is_dir():
        raise MissingInputError(f"image folder {str(root)!r} does not exist")
    known = photo_extensions()
    images, skipped = [], []
    hidden_files = hidden_dirs = 0
    for dirpath, dirnames, filenames in os.walk(root):
        hidden_dirs += sum(d.startswith(".") for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                hidden_files += 1
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if is_image_file(path, known):
                images.append(rel)
            else:
                skipped.append(rel)
    if hidden_files or hidden_dirs:
        log.info("%s: left out %d hidden files and %d hidden folders (names starting with '.')", root,
                 hidden_files, hidden_dirs)
    return sorted(images), sorted(skipped)


def is_image_file(path: Path, known: set[str] | None = None) -> bool:
    """An image by its extension (one Pillow reads, `known`), else by its header."""
    return path.suffix.lower() in (known or photo_extensions()) or _sniff_image(path)


@functools.cache
def photo_extensions() -> frozenset[str]:
    """File extensions of the image formats Pillow reads (lower case, with the dot)."""
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions()) - _NOT_PHOTOS


def _sniff_image(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return bool(im.format)
    except Image.DecompressionBombError:
        return True  # an image, too large: it must become a failure row, not vanish
    except Exception:  # noqa: BLE001 - any failure to identify means "not an image file"
        return False
