"""A folder of files with planted byte-identical copies, and its output root deduped (no model: a feature root
made from arrays, with each file's real sha1, so exact edges group the copies)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.layout import OutputRoot
from tests.conftest import write_feature_root

# relative path → content id; equal ids are byte-identical copies (keeper: the smallest key of its group)
FILES = {"a.jpg": 0, "trip/a_copy.jpg": 0, "trip/deep/a_copy2.jpg": 0, "b.png": 1, "b2.png": 1, "c.jpg": 2,
         "d.jpg": 3}
DUPLICATES = ("b2.png", "trip/a_copy.jpg", "trip/deep/a_copy2.jpg")
KEEPERS = ("a.jpg", "b.png", "c.jpg", "d.jpg")


def content(i: int) -> bytes:
    return np.random.default_rng(i).integers(0, 256, 1000 + 137 * i, dtype=np.uint8).tobytes()


@dataclass
class Collection:
    folder: Path
    out: Path

    @property
    def quarantine(self) -> Path:
        return self.folder.with_name(self.folder.name + ".duplicates")


def snapshot(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every file's bytes and every folder, relative: a move and its undo must leave this unchanged."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    dirs = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir())
    return files, dirs


def make_collection(tmp: Path, reference: Path | None = None) -> Collection:
    folder, out = tmp / "photos", tmp / "out"
    for rel, i in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content(i))
    keys = sorted(FILES)
    sha1 = [hashlib.sha1((folder / k).read_bytes()).digest() for k in keys]
    vectors = np.random.default_rng(0).normal(size=(len(keys), 16)).astype(np.float32)
    write_feature_root(out, vectors, keys=keys, sha1=sha1)
    OutputRoot(out).claim({"fingerprint": "test"}, {"images": os.path.abspath(folder), "shards": []})
    run_dedup(DedupConfig(features=str(out), embedding=False, progress=False, reference=reference and str(reference),
                          force=True))
    return Collection(folder, out)


@pytest.fixture
def collection(tmp_path: Path) -> Collection:
    return make_collection(tmp_path)
