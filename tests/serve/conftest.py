"""Tiny roots the server tests share (a folder with planted copies and a hostile name, a tar shard) and servers
started on free loopback ports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from webdataset import TarWriter

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from pipeline.io.files import write_parquet_atomic
from pipeline.roots.features import open_features, read_meta
from pipeline.serve.config import ServeConfig
from pipeline.serve.run import BackgroundServer
from tests.conftest import jpeg_bytes, make_image, tiny_config

EVIL = "evil<script>alert(1)</script>.jpg"
COPIES = {"img00.jpg": ["copies/img00_a.jpg", "copies/img00_b.jpg"], "img01.jpg": ["copies/img01_copy.jpg"],
          "img02.jpg": [EVIL]}


def _folder(root: Path) -> Path:
    """10 photos, 4 exact copies of three of them (one under a hostile name): groups of 3, 2 and 2."""
    photos = root / "photos"
    (photos / "copies").mkdir(parents=True)
    for i in range(10):
        make_image(i, (96 + 8 * (i % 3), 72)).save(photos / f"img{i:02d}.jpg", quality=90)
    for source, copies in COPIES.items():
        for copy in copies:
            (photos / copy).parent.mkdir(exist_ok=True)  # the hostile name holds a "/": a folder "evil<script>..."
            shutil.copy(photos / source, photos / copy)
    return photos


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory) -> Path:
    """Extract (4 folder chunks) + Flat index + dedup + a curate selection of `_folder`."""
    base = tmp_path_factory.mktemp("serve")
    photos = _folder(base)
    out = base / "out"
    run_extract(tiny_config(out, images=str(photos), folder_shard_size=4))
    build_index(IndexConfig(features=str(out), progress=False))
    run_dedup(DedupConfig(features=str(out), progress=False))
    write_selection(out)
    return out


def write_selection(out: Path) -> None:
    """A curate `selected.parquet` (docs/FORMAT.md §10) of 7 rows from two sources, written as curate writes it."""
    meta = read_meta(open_features(out), ("key", "shard", "index")).to_pylist()
    rows = [{"key": m["key"], "shard": m["shard"], "index": m["index"], "id": m["id"],
             "source": "seeds" if i % 2 else "balanced", "mode": "sample" if i % 2 else "balanced",
             "query": meta[0]["key"] if i % 2 else None, "cluster": None if i % 2 else i,
             "similarity": 0.5 + i / 100 if i % 2 else None} for i, m in enumerate(meta[:7])]
    schema = pa.schema([("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()), ("id", pa.int64()),
                        ("source", pa.string()), ("mode", pa.string()), ("query", pa.string()),
                        ("cluster", pa.int64()), ("similarity", pa.float32())])
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), out / "curate" / "selected.parquet")


@pytest.fixture(scope="session")
def tar_root(tmp_path_factory) -> Path:
    """Extract + index of one tar shard of 8 samples (two exact copies of one image)."""
    base = tmp_path_factory.mktemp("serve_tar")
    with TarWriter(str(base / "train-000000.tar"), encoder=False) as sink:
        for n, i in enumerate([0, 1, 2, 3, 1, 4, 5, 6]):
            sink.write({"__key__": f"k{n:02d}", "jpg": jpeg_bytes(make_image(i * 7, (80, 60)), quality=95),
                        "cls": b"0", "json": b'{"caption": "x"}'})
    out = base / "out"
    run_extract(tiny_config(out, shards=(str(base / "train-000000.tar"),)))
    build_index(IndexConfig(features=str(out), progress=False))
    run_dedup(DedupConfig(features=str(out), progress=False))
    return out


def serve_config(out: Path, **overrides) -> ServeConfig:
    """A test server's config over the root `out` (its index), on any free port."""
    values = dict(index=str(out / "index"), port=0, device="cpu", k=5, progress=False)
    return ServeConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def server(folder_root):
    """The server over `folder_root` on a free loopback port: (url, the BackgroundServer)."""
    background = BackgroundServer(serve_config(folder_root, max_upload_mb=1.0, max_pixels=4_000_000,
                                               reviewer="tester"))
    url = background.start()
    yield url, background
    background.stop()
