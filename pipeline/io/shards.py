"""Units of work: shard lists from brace patterns, globs, list files and URLs; image folders as chunks."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import braceexpand
from PIL import Image

from pipeline.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_TAR_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar")
_LIST_SUFFIXES = (".txt", ".list", ".lst", ".shards")
# Extensions Pillow registers for formats it only writes, only stubs, or needs outside tools for: a file
# with such a name is an image only if its header says so.
_NOT_PHOTOS = {".pdf", ".eps", ".ps", ".mpg", ".mpeg", ".h5", ".hdf", ".fits", ".fit", ".wmf", ".emf",
               ".grib", ".bufr", ".xbm", ".xpm"}


@dataclass(frozen=True)
class Shard:
    """One unit of work: a tar shard (url) or a chunk of an image folder (root + relative files)."""

    id: str
    url: str | None = None
    root: str | None = None
    files: tuple[str, ...] = ()
    stamps: tuple[str, ...] = ()  # per file "size:mtime_ns", so a file replaced under its name is redone

    @property
    def digest(self) -> str | None:
        """Identity of a folder chunk's content (file names, sizes, mtimes); None for tar shards."""
        if self.url is not None:
            return None
        return hashlib.sha1("\n".join(self.files + self.stamps).encode()).hexdigest()

    @property
    def source(self) -> str:
        return self.url if self.url is not None else f"{self.root} [{len(self.files)} files]"


def is_url(spec: str) -> bool:
    return spec.startswith("pipe:") or bool(_URL.match(spec)) and not spec.startswith("file://")


def expand_shards(specs: list[str] | tuple[str, ...]) -> list[str]:
    """Expand shard specs into an ordered list of shard locations.

    Each spec (several may share one string, split at white space, except a `pipe:` command) is a brace
    pattern (`train-{000000..000099}.tar`), a glob, a text file with one spec per
    line, a local path, or a URL (`s3://`, `gs://`, `https://`, `pipe:cmd`). Brace patterns are expanded
    for URLs too; globs only for local paths. A listed local shard that does not exist stays in the list: it
    fails when read, is left undone, the others go on and the job exits 1 (a rerun retries it). When none
    of the shards exists, that is a mistake in the spec: an error naming them.
    """
    if isinstance(specs, str):
        specs = [specs]
    out: list[str] = []
    for spec in specs:
        parts = [spec.strip()] if spec.strip().startswith("pipe:") else spec.split()
        for part in parts:
            out.extend(_expand_one(part))
    if not out:
        raise InputError(f"no shards found for {list(specs)}")
    missing = [s for s in out if not is_url(s) and not os.path.isfile(s)]
    if missing and len(missing) == len(out):
        raise MissingInputError(f"shard {missing[0]!r} does not exist" if len(missing) == 1 else
                                f"none of the {len(out)} shards exists (e.g. {missing[0]!r})")
    if missing:
        log.warning("%d of %d shards do not exist (e.g. %s): they will be left undone and the job exits 1; "
                    "rerun once they are there", len(missing), len(out), missing[0])
    return out


def _expand_one(spec: str) -> list[str]:
    if is_url(spec):
        return list(braceexpand.braceexpand(spec))
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    found: list[str] = []
    for pattern in braceexpand.braceexpand(spec):
        if pattern.lower().endswith(_LIST_SUFFIXES) and os.path.isfile(pattern):
            found.extend(_read_list_file(pattern))
        elif os.path.isfile(pattern):  # before globbing: `photos[2019]/x.tar` is a real name
            found.append(pattern)
        elif any(ch in pattern for ch in "*?["):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise MissingInputError(f"no shard matches {pattern!r}")
            found.extend(matches)
        else:
            found.append(pattern)  # missing: kept, see expand_shards
    return found


def _read_list_file(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    out: list[str] = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_url(line) and not os.path.isabs(line):
            line = os.path.join(base, line)
        out.extend(_expand_one(line))
    return out


def shard_id(location: str) -> str:
    """File name without the tar extension: `s3://b/train-000003.tar` → `train-000003`."""
    if location.startswith("pipe:"):
        words = [w.split("?")[0] for w in re.split(r"\s+", location[len("pipe:"):].strip())]
        tars = [w for w in words if w.lower().endswith(_TAR_SUFFIXES)]  # `aws s3 cp s3://b/x.tar -` → x
        location = tars[-1] if tars else words[-1]
    name = location.split("?")[0].split("#")[0].rstrip("/").split("/")[-1]
    for suffix in _TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def create_tar_shards(specs: list[str] | tuple[str, ...]) -> list[Shard]:
    """Shards for tar inputs, sorted by id; two inputs with one id are an error (ids name output files)."""
    shards: dict[str, Shard] = {}
    for location in expand_shards(specs):
        sid = shard_id(location)
        if sid in shards:
            if shards[sid].url == location:
                continue
            raise InputError(f"two shards share the id {sid!r}: {shards[sid].url} and {location}")
        shards[sid] = Shard(id=sid, url=location)
    return [shards[k] for k in sorted(shards)]


def list_image_files(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(image files, skipped non-image files) below root, relative and sorted.

    A file is an image when Pillow knows its extension or, failing that, recognises its header (JPEG
    bytes behind an `.svg` name count). Files Pillow knows by name but cannot decode stay in the list:
    they become failure rows, never silent losses. Hidden files and folders (names starting with `.`: macOS
    `._name` resource forks, `.thumbnails` caches, `.git`) are left out and counted in the log.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"image folder {str(root)!r} does not exist")
    Image.init()
    known = {ext.lower() for ext in Image.registered_extensions()} - _NOT_PHOTOS
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
            if path.suffix.lower() in known or _sniff_image(path):
                images.append(rel)
            else:
                skipped.append(rel)
    if hidden_files or hidden_dirs:
        log.info("%s: left out %d hidden files and %d hidden folders (names starting with '.')", root,
                 hidden_files, hidden_dirs)
    return sorted(images), sorted(skipped)


def _sniff_image(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return bool(im.format)
    except Image.DecompressionBombError:
        return True  # an image, too large: it must become a failure row, not vanish
    except Exception:  # noqa: BLE001 - any failure to identify means "not an image file"
        return False


def create_folder_shards(root: str, chunk: int) -> list[Shard]:
    """An image folder as chunks of `chunk` sorted files: `folder-000000`, `folder-000001`, ..."""
    files, skipped = list_image_files(root)
    if skipped:
        log.info("ignoring %d non-image files in %s (e.g. %s)", len(skipped), root, skipped[0])
    if not files:
        raise MissingInputError(f"no image files found in {root!r}")
    root = os.path.abspath(root)
    stamps = [_stamp(os.path.join(root, f)) for f in files]
    return [
        Shard(id=f"folder-{i // chunk:06d}", root=root, files=tuple(files[i : i + chunk]),
              stamps=tuple(stamps[i : i + chunk]))
        for i in range(0, len(files), chunk)
    ]


def _stamp(path: str) -> str:
    """Size and mtime: a chunk whose files change is redone. A file gone (or a dangling link) since the
    listing stamps as missing; reading it then gives its failure row."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"missing:{type(exc).__name__}"
    return f"{st.st_size}:{st.st_mtime_ns}"


def split_by_rank(items: list, rank: int, world_size: int) -> list:
    """Rank r of W takes items r, r+W, r+2W, ... (the same rule splits a rank's list by worker)."""
    return items[rank::world_size]
