"""Labels and the train/val split: label files, ImageFolder labels, the seeded stratified split, joined by key."""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io.tables import read_user_table
from pipeline.layout import OutputRoot
from pipeline.roots.features import FeatureSet, read_meta

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
WEBDATASET_LABELS = (
    "these features come from webdataset shards: their `cls`/`txt` members are not stored with the "
    "features, so labels cannot be read from them. Write a labels file with columns key,label[,split] "
    "(CSV or Parquet; key = the sample's __key__) and pass --labels FILE")


@dataclass(frozen=True)
class Split:
    """Labelled keys present in every feature root, sorted; class indices; which rows are val."""

    keys: tuple[str, ...]
    y: np.ndarray
    classes: tuple[str, ...]
    is_val: np.ndarray
    mode: str  # "given" (labels file) or "seeded" (stratified)
    rows: tuple[np.ndarray, ...]  # per feature root: its row id of each key

    def digest(self) -> str:
        """Changes when any key, label or train/val assignment does: equal digests, same evaluation data."""
        h = hashlib.sha256()
        for key, c, v in zip(self.keys, self.y, self.is_val):
            h.update(f"{key}\t{self.classes[c]}\t{SPLITS[int(v)]}\n".encode())
        return h.hexdigest()[:16]


def read_label_file(path: str | Path) -> tuple[dict[str, str], dict[str, str] | None]:
    """key → label (and key → train|val when there is a `split` column) from a CSV or Parquet file."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        table = read_user_table(path, "labels file", pq.read_table)
    else:
        types = {name: pa.string() for name in ("key", "label", "split")}
        table = read_user_table(path, "labels file", lambda p: pacsv.read_csv(
            p, convert_options=pacsv.ConvertOptions(column_types=types)))
    missing = {"key", "label"} - set(table.column_names)
    if missing:
        raise InputError(f"{path} needs columns key and label (and optionally split); it has {table.column_names}")
    keys = table.column("key").cast(pa.string()).to_pylist()
    labels = table.column("label").cast(pa.string()).to_pylist()
    splits = table.column("split").cast(pa.string()).to_pylist() if "split" in table.column_names else None
    out: dict[str, str] = {}
    split_of: dict[str, str] = {}
    empty, conflicts = 0, []
    for i, (key, label) in enumerate(zip(keys, labels)):
        if key is None or label is None or not label.strip():
            empty += 1
            continue
        if key in out and out[key] != label:
            conflicts.append(f"{key!r}: {out[key]!r} vs {label!r}")
        out[key] = label
        if splits is not None:
            s = (splits[i] or "").strip().lower()
            if s not in SPLITS:
                raise InputError(f"{path}: key {key!r} has split {splits[i]!r}; the split column takes train or val")
            split_of[key] = s
    if conflicts:
        raise InputError(f"{path} gives {len(conflicts)} keys two labels, e.g. {conflicts[:3]}")
    if empty:
        log.warning("labels file %s: %d rows without a key or label ignored", path, empty)
    return out, (split_of if splits is not None else None)


def folder_labels(root: Path, keys: list[str]) -> dict[str, str]:
    """ImageFolder convention: the label of `class_name/.../file.jpg` is `class_name`."""
    record = OutputRoot(root).read_config()
    if record is not None and record.get("config", {}).get("images") is None:
        raise InputError(f"{root}: {WEBDATASET_LABELS}")
    labels = {k: k.split("/", 1)[0] for k in keys if "/" in k}
    if not labels:
        raise InputError(f"no key of {root} has a folder part (class_name/file): --labels folder needs an "
                         f"ImageFolder-style tree; else pass --labels FILE (columns key,label[,split])")
    return labels


def stratified_val(y: np.ndarray, classes: tuple[str, ...], fraction: float, seed: int,
                   salt: str = "val") -> np.ndarray:
    """Seeded per-class draw of round(n·fraction) val rows, at most n-1: a class of one stays in train.

    Each class has its own generator (seed, salt, class name), so adding a class leaves the others' split alone.
    """
    is_val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_val = min(math.floor(len(idx) * fraction + 0.5), len(idx) - 1)
        if n_val > 0:
            rng = np.random.default_rng([seed, zlib.crc32(f"{salt}:{classes[c]}".encode())])
            is_val[rng.choice(idx, n_val, replace=False)] = True
    return is_val


def resolve_split(sets: list[FeatureSet], labels: str, val_fraction: float, seed: int) -> tuple[Split, dict]:
    """Join labels ("folder" or a CSV/Parquet file) with every root's keys; drop (and count) what cannot be
    used; split train/val. The report counts classes under `num_classes`."""
    report: dict = {"roots": []}
    rows_by_set, sha1_by_set = zip(*(_key_rows(fs) for fs in sets))
    sha1 = sha1_by_set[0]
    label_of, given = _read_labels(labels, sets, rows_by_set)
    common = set(label_of)
    for fs, rows in zip(sets, rows_by_set):
        unlabelled = len(rows.keys() - label_of.keys())
        absent = label_of.keys() - rows.keys()
        failed = len(absent & _failed_keys(fs.root))
        report["roots"].append({"root": str(fs.root), "rows": fs.count, "duplicate_keys": fs.count - len(rows),
                                "keys_without_label": unlabelled, "labels_without_features": len(absent),
                                "of_which_failed_extraction": failed})
        if unlabelled:
            log.warning("%s: %d of %d keys have no label: left out", fs.root, unlabelled, len(rows))
        if absent:
            log.warning("%s: %d labelled keys have no features (%d of them failed extraction, see failures/): "
                        "left out%s", fs.root, len(absent), failed,
                        " of every feature set, so all see the same images" if len(sets) > 1 else "")
        common &= rows.keys()
    if not common:
        raise InputError("no labelled key has features: check that the labels file's keys are the features' keys "
                         f"(e.g. {next(iter(rows_by_set[0]), None)!r})")
    keys = tuple(sorted(common))
    classes = tuple(sorted({label_of[k] for k in keys}))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label_of[k]] for k in keys], dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    if given is not None:
        mode, is_val = "given", np.array([given[k] == "val" for k in keys])
        log.info("split given by the labels file's `split` column (--val-fraction unused)")
    else:
        mode, is_val = "seeded", stratified_val(y, classes, val_fraction, seed)
        singles = int((counts == 1).sum())
        if singles:
            log.warning("%d classes have a single image: kept in train (a stratified split cannot put them in "
                        "both train and val)", singles)
    train_classes = set(y[~is_val].tolist())
    orphans = int(sum(1 for c in y[is_val] if c not in train_classes))
    if orphans:
        log.warning("%d val images belong to classes with no train image: no method can get them right", orphans)
    if is_val.all() or not is_val.any():
        raise InputError(f"the split leaves {'train' if is_val.all() else 'val'} empty ({len(keys)} labelled "
                         f"images, {len(classes)} classes): give more images per class or a larger --val-fraction")
    train_bytes = {sha1[k] for k, v in zip(keys, is_val) if not v} - {None}
    copies = sum(1 for k, v in zip(keys, is_val) if v and sha1[k] in train_bytes)
    if copies:
        log.warning("%d val images have a byte-identical copy in train: they inflate every method's score "
                    "(dedup the set first for a clean number)", copies)
    train_counts = np.bincount(y[~is_val], minlength=len(classes))
    report.update(used=len(keys), num_classes=len(classes), train=int((~is_val).sum()), val=int(is_val.sum()),
                  single_image_classes=int((counts == 1).sum()), val_without_train_class=orphans,
                  val_exact_copies_in_train=copies,
                  majority_top1=float((y[is_val] == train_counts.argmax()).mean()))
    log.info("%d labelled images in %d classes: %d train, %d val (%s split)", len(keys), len(classes),
             report["train"], report["val"], mode)
    rows = tuple(np.array([r[k] for k in keys], dtype=np.int64) for r in rows_by_set)
    return Split(keys, y, classes, is_val, mode, rows), report


def _read_labels(source: str, sets: list[FeatureSet],
                 rows_by_set: tuple[dict[str, int], ...]) -> tuple[dict[str, str], dict[str, str] | None]:
    """key → label from the folders of every root or from a labels file; key → split when the file gives one."""
    if source in ("cls", "txt"):
        raise InputError(WEBDATASET_LABELS)
    if source != "folder":
        return read_label_file(source)
    labels: dict[str, str] = {}
    for fs, rows in zip(sets, rows_by_set):
        labels.update(folder_labels(fs.root, list(rows)))
    return labels, None


def _key_rows(fs: FeatureSet) -> tuple[dict[str, int], dict[str, bytes]]:
    """key → row id (the first row of a repeated key) and key → SHA-1 of the encoded image."""
    meta = read_meta(fs, ("key", "sha1"), absent="null")  # made elsewhere: no SHA-1 (None), no copies counted
    keys, sha1 = meta.column("key").to_pylist(), meta.column("sha1").to_pylist()
    rows: dict[str, int] = {}
    for i, k in enumerate(keys):
        rows.setdefault(k, i)
    if len(rows) < len(keys):
        log.warning("%s: %d rows repeat an earlier key; the first row of each key is used",
                    fs.root, len(keys) - len(rows))
    return rows, {k: sha1[i] for k, i in rows.items()}


def _failed_keys(root: Path) -> set[str]:
    """Keys listed in a root's failure files (extraction failed for them)."""
    files = OutputRoot(root).failure_files()
    return {k for f in files for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()}
