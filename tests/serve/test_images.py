"""Reading a sample at random (pipeline/serve/images.py) gives what the sequential reader gives at that place."""

from __future__ import annotations

import io
import tarfile
from contextlib import closing

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.extract.runner import run_extract
from pipeline.io.samples import ShardEnd, iter_samples
from pipeline.io.shards import create_shards
from pipeline.serve.images import SourceError, SourceImages, jpeg_thumbnail, tar_members
from tests.conftest import jpeg_bytes, make_image, tiny_config


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_tar_members_group_as_webdataset_does(tmp_path):
    """Subfolders, several dots, upper-case extensions, a folder entry, meta members, a repeated extension."""
    path = tmp_path / "odd-000000.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "__meta__", b"skipped")
        add(tar, "a.jpg", b"A1")
        add(tar, "a.cls", b"0")
        add(tar, "dir", kind=tarfile.DIRTYPE)
        add(tar, "dir/b.JPG", b"B1")
        add(tar, "dir/b.txt", b"caption")
        add(tar, "dir/__cache__/x.jpg", b"kept: only top-level __names__ are meta")
        add(tar, "c.tar.gz.jpg", b"C1")
        add(tar, "d.e.f.png", b"D1")
        add(tar, "d.e.f.png", b"D2")  # the same member twice: webdataset keeps the first
        add(tar, "noextension", b"skipped")
        add(tar, "g.jpg", b"G1")
    shard = create_shards([str(path)])[0]
    with closing(iter_samples(shard, ShardEnd(shard.id))) as samples:
        expected = [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"} for s in samples]
    got = []
    for key, parts in tar_members(str(path)):
        with open(path, "rb") as f:
            sample = {"__key__": key}
            for ext, offset, size in parts:
                f.seek(offset)
                sample[ext] = f.read(size)
        got.append(sample)
    assert got == expected
    assert [s["__key__"] for s in got] == ["a", "dir/b", "dir/__cache__/x", "c", "d", "g"]


def test_a_parquet_unit_is_read_from_the_row_group_holding_the_row(tmp_path):
    """8 rows in row groups of 3: every row's thumbnail source is its own image, by (key, shard, index)."""
    images = [jpeg_bytes(make_image(i * 11, (64, 48))) for i in range(8)]
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"key": [f"r{i}" for i in range(8)], "image": images}), path, row_group_size=3)
    out = tmp_path / "out"
    run_extract(tiny_config(out, shards=(str(path),)))
    source = SourceImages(out)
    for i in (7, 0, 4, 3, 5):  # out of order, across row groups
        assert source.image(f"r{i}", "train-00000-of-00001", i) == images[i]
    with pytest.raises(SourceError, match="holds another key"):
        source.image("r2", "train-00000-of-00001", 3)
    with pytest.raises(SourceError, match="is not in its shard"):
        source.image("r8", "train-00000-of-00001", 8)
    with pytest.raises(SourceError, match="not among the root's inputs"):
        source.image("r1", "other", 1)


def test_a_thumbnail_of_something_undecodable_is_a_source_error():
    with pytest.raises(SourceError):
        jpeg_thumbnail(b"\xff\xd8\xff\xe0 not a jpeg", 64, 10**6)
    assert jpeg_thumbnail(jpeg_bytes(make_image(1, (300, 200))), 64, 10**6)[:3] == b"\xff\xd8\xff"
