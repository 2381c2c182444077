"""Units of work: tar and Parquet shards from patterns, globs, folders, lists and URLs; image folders in chunks."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import braceexpand

from pipeline.errors import InputError, MissingInputError
from pipeline.io.imagefiles import PARQUET_SUFFIXES as _PARQUET_SUFFIXES
from pipeline.io.imagefiles import TAR_SUFFIXES as _TAR_SUFFIXES
from pipeline.io.imagefiles import is_image_file, list_image_files

log = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_LIST_SUFFIXES = (".txt", ".list", ".lst", ".shards")
# A Parquet file is one unit of work, or, when larger, runs of whole row groups of at least this many rows.
PARQUET_UNIT_ROWS = 10_000
# Columns tried, in order, when --image-column / --key-column are not given.
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp", "bytes")
KEY_COLUMNS = ("key", "__key__", "id")


@dataclass(frozen=True)
class Shard:
    """One unit of work: a tar shard (url), row groups of a Parquet file (url + row_groups + the columns read),
    or a chunk of an image folder (root + relative files)."""

    id: str
    url: str | None = None
    root: str | None = None
    files: tuple[str, ...] = ()
    stamps: tuple[str, ...] = ()  # per file "size:mtime_ns", so a file replaced under its name is redone
    row_groups: tuple[int, int] | None = None  # Parquet: [first, stop) row groups
    first_row: int = 0  # Parquet: the file's row number of the unit's first row (keys without a key column)
    image_column: str | None = None
    key_column: str | None = None  # None: "<file stem>_<row number>"

    @property
    def is_parquet(self) -> bool:
        return self.row_groups is not None

    @property
    def digest(self) -> str | None:
        """Identity of a folder chunk's content (file names, sizes, mtimes); None for tar shards."""
        if self.url is not None:
            return None
        return hashlib.sha1("\n".join(self.files + self.stamps).encode()).hexdigest()

    @property
    def source(self) -> str:
        return self.url if self.url is not None else f"{self.root} [{len(self.files)} files]"

    @property
    def origin(self) -> dict:
        """The input this unit is bound to, as its done marker records it: `input` is the folder (a chunk's
        members are its digest) or the shard file (absolute; a URL as given), `stamp` a local shard file's
        "size:mtime_ns" (a file replaced under its name is redone), else None."""
        if self.url is None:
            return {"input": self.root, "stamp": None}
        if is_url(self.url):
            return {"input": self.url, "stamp": None}
        path = os.path.abspath(self.url.removeprefix("file://"))
        return {"input": path, "stamp": _stamp(path)}


def is_url(spec: str) -> bool:
    return spec.startswith("pipe:") or bool(_URL.match(spec)) and not spec.startswith("file://")


def open_stream(url: str):
    """A binary stream for a local path, a `pipe:` command (webdataset) or any fsspec URL."""
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    if is_url(url):
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(url.removeprefix("file://"), "rb")


def whole_spec(spec: str) -> bool:
    """A `pipe:` command, or a path with white space in it (`my shards/a.tar`: its folder exists, spaces and all),
    is one spec; other white space separates specs."""
    if is_url(spec):
        return spec.startswith("pipe:")
    return os.path.exists(spec) or os.sep in spec and os.path.isdir(os.path.dirname(spec))


def expand_shards(specs: list[str] | tuple[str, ...]) -> list[str]:
    """Expand shard specs into an ordered list of shard locations.

    Each spec (several may share one string, split at white space unless `whole_spec`) is a brace
    pattern (`train-{000000..000099}.tar`), a glob, a text file with one spec per
    line, a local path, or a URL (`s3://`, `gs://`, `https://`, `pipe:cmd`). Brace patterns are expanded
    for URLs too; globs only for local paths. A listed local shard that does not exist stays in the list: it
    fails when read, is left undone, the others go on and the job exits 1 (a rerun retries it). When none
    of the shards exists, that is a mistake in the spec: an error naming them.
    """
    if isinstance(specs, str):
        specs = [specs]
    specs = list(specs)
    out: list[str] = []
    lists: list[str] = []  # the list files read on the way
    for spec in specs:
        parts = [spec.strip()] if whole_spec(spec.strip()) else spec.split()
        for part in parts:
            out.extend(_expand_one(part, lists))
    if not out:
        raise InputError(f"no shards found for {list(specs)}")
    _refuse_images(out)
    missing = [s for s in out if not is_url(s) and not os.path.isfile(s)]
    if missing and len(missing) == len(out):
        if lists:
            raise MissingInputError(
                f"{lists[0]!r} was read as a list of shards (one path or URL a line, as any "
                f"{'/'.join(_LIST_SUFFIXES)} file is) and none of its {len(missing)} entries exists (e.g. "
                f"{missing[0]!r}): give the shard files themselves, or an image folder as IMAGES=DIR")
        raise MissingInputError(f"shard {missing[0]!r} does not exist" if len(missing) == 1 else
                                f"none of the {len(out)} shards exists (e.g. {missing[0]!r})")
    if missing:
        log.warning("%d of %d shards do not exist (e.g. %s): they will be left undone and the job exits 1; "
                    "rerun once they are there", len(missing), len(out), missing[0])
    return out


def _is_tar(path: str) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _refuse_images(locations: list[str]) -> None:
    """Image files given as shards (`SHARDS=photo.jpg`) would be read as damaged tars: refused, naming IMAGES=."""
    odd = [s for s in locations if not is_url(s) and not s.lower().endswith(_TAR_SUFFIXES + _PARQUET_SUFFIXES)
           and os.path.isfile(s)]
    images = [s for s in odd if is_image_file(Path(s))]
    if not images:
        other = [s for s in odd if not _is_tar(s)]
        if other:
            raise InputError(f"{other[0]!r} is not a shard: neither a tar nor a Parquet file (SHARDS= takes .tar "
                             f"or .parquet files, a folder of them, or a .txt list of them)")
        return
    folder = os.path.dirname(os.path.abspath(images[0]))
    what = (f"{images[0]!r} is an image file" if len(images) == 1
            else f"{len(images)} of the shards are image files (e.g. {images[0]!r})")
    raise InputError(f"{what}, not a shard (SHARDS= takes .tar or .parquet files): give image files by their "
                     f"folder as IMAGES=DIR (here IMAGES={folder!r})")


def _expand_one(spec: str, lists: list[str] | None = None) -> list[str]:
    if is_url(spec):
        return list(braceexpand.braceexpand(spec))
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    found: list[str] = []
    for pattern in braceexpand.braceexpand(spec):
        if pattern.lower().endswith(_LIST_SUFFIXES) and os.path.isfile(pattern):
            if lists is not None:
                lists.append(pattern)
            found.extend(_read_list_file(pattern))
        elif os.path.isdir(pattern):
            found.extend(_folder_shards(pattern))
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


def _folder_shards(folder: str) -> list[str]:
    """A folder given as SHARDS: its Parquet files, else its tar files (below it, sorted). img2dataset's output
    (NNNNN.tar beside its NNNNN.parquet metadata, which holds no images): the tars. Image files beside the
    shards are not read: their number is logged, with IMAGES= to read them."""
    files = sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    tars = [f for f in files if f.lower().endswith(_TAR_SUFFIXES)]
    parquets = [f for f in files if f.lower().endswith(_PARQUET_SUFFIXES)]
    tar_stems = {os.path.join(os.path.dirname(f), shard_id(f)) for f in tars}
    if parquets and all(os.path.join(os.path.dirname(f), shard_id(f)) in tar_stems for f in parquets):
        log.info("%s: an img2dataset output (each .parquet is the metadata of the .tar of its name): reading its "
                 "%d tars", folder, len(tars))
        chosen = tars
    else:
        chosen = parquets or tars
        if parquets and tars:
            log.warning("%s: reading its %d Parquet files, not the %d tar files beside them (give those as "
                        "SHARDS='%s/*.tar')", folder, len(parquets), len(tars), folder.rstrip("/"))
    images = [f for f in files if not f.lower().endswith(_TAR_SUFFIXES + _PARQUET_SUFFIXES + _LIST_SUFFIXES)
              and is_image_file(Path(f))]
    if not chosen:
        raise MissingInputError(f"no Parquet or tar files in the folder {folder!r}" + (
            f", but {len(images)} image files: give it as IMAGES={folder!r}" if images
            else " (an image folder is IMAGES=)"))
    if images:
        log.warning("%s: skipped %d image files beside its shards (e.g. %s); to read them, give the folder as "
                    "IMAGES=%s", folder, len(images), os.path.relpath(images[0], folder), folder)
    return chosen


def is_parquet(location: str) -> bool:
    return location.split("?")[0].lower().endswith(_PARQUET_SUFFIXES)


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
    for suffix in _TAR_SUFFIXES + _PARQUET_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def create_shards(specs: list[str] | tuple[str, ...], image_column: str | None = None,
                  key_column: str | None = None, keep_columns: tuple[str, ...] = ()) -> list[Shard]:
    """Shards for tar and Parquet inputs, sorted by id; two inputs with one id are an error (ids name output
    files). A Parquet file's columns are found here, once: `image_column` / `key_column`, else the first of
    IMAGE_COLUMNS (or the only binary column) and of KEY_COLUMNS present; a Parquet file that lacks one of
    `keep_columns` is refused."""
    shards: dict[str, Shard] = {}
    for location in expand_shards(specs):
        if is_parquet(location) and (is_url(location) or os.path.isfile(location)):
            units = parquet_units(location, image_column, key_column, keep_columns=keep_columns)
        else:  # a tar, or a listed file that is missing: read (and failed) as a tar
            units = [Shard(id=shard_id(location), url=location)]
        for unit in units:
            if unit.id in shards:
                if shards[unit.id] == unit:
                    continue
                raise InputError(f"two shards share the id {unit.id!r}: {shards[unit.id].url} and {location}")
            shards[unit.id] = unit
    return [shards[k] for k in sorted(shards)]



def parquet_units(location: str, image_column: str | None = None, key_column: str | None = None,
                  unit_rows: int | None = None, keep_columns: tuple[str, ...] = ()) -> list[Shard]:
    """A Parquet file as units of work: the whole file, or runs of whole row groups of >= `unit_rows` rows
    (ids `<stem>-rg00000`, by first row group), with its image and key columns resolved."""
    import pyarrow.parquet as pq

    try:
        with open_stream(location) as stream:
            meta = pq.ParquetFile(stream).metadata
            schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # noqa: BLE001 - any failure to read the footer: not a Parquet file we can use
        raise InputError(f"{location} cannot be read as Parquet: {type(exc).__name__}: {exc}") from exc
    image = _image_column(location, schema, image_column)
    key = key_column
    if key is not None and key not in schema.names:
        raise InputError(f"{location} has no key column {key!r}; its columns: {', '.join(schema.names)}")
    if key is None:
        key = next((c for c in KEY_COLUMNS if c in schema.names), None)
    lifted = "json" in schema.names and "json" in keep_columns  # url, caption: from the json column (samples.py)
    absent = [c for c in keep_columns if c not in schema.names and not (lifted and c in ("url", "caption"))]
    if absent:
        raise InputError(f"--keep-columns {','.join(absent)}: {location} has no column {absent[0]!r} (it would be "
                         f"null in every row); its columns: {', '.join(schema.names)}")
    stem = shard_id(location)
    unit_rows = unit_rows or PARQUET_UNIT_ROWS
    runs, start, rows, first_row, row = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        if rows >= unit_rows or g == meta.num_row_groups - 1:
            runs.append((start, g + 1, first_row))
            row += rows
            start, rows, first_row = g + 1, 0, row
    if not runs:  # a file with no row groups: one empty unit, done at once
        runs = [(0, 0, 0)]
    return [Shard(id=stem if len(runs) == 1 else f"{stem}-rg{a:05d}", url=location, row_groups=(a, b),
                  first_row=first, image_column=image, key_column=key) for a, b, first in runs]


def _image_column(location: str, schema, wanted: str | None) -> str:
    import pyarrow as pa

    def usable(t) -> bool:
        return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)))

    if wanted is not None:
        if wanted not in schema.names:
            raise InputError(f"{location} has no image column {wanted!r}; its columns: {', '.join(schema.names)}")
        if not usable(schema.field(wanted).type):
            raise InputError(f"{location}: column {wanted!r} is {schema.field(wanted).type}, not image bytes "
                             "(binary, or a struct with 'bytes' as datasets.Image writes it)")
        return wanted
    named = [c for c in IMAGE_COLUMNS if c in schema.names and usable(schema.field(c).type)]
    if named:
        return named[0]
    binary = [f.name for f in schema if usable(f.type)]
    if len(binary) == 1:
        return binary[0]
    raise InputError(f"{location}: which column holds the images? give --image-column (columns: "
                     f"{', '.join(f'{f.name} ({f.type})' for f in schema)})")


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
