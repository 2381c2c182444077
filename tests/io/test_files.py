"""Atomic writes: a temporary file beside the target, then a rename; a failed write leaves the old file."""

from __future__ import annotations

import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.files import read_json, write_json_atomic, write_parquet_atomic
from tests.conftest import listing


def test_write_parquet_atomic_leaves_only_the_file(tmp_path):
    path = tmp_path / "deep" / "er" / "f.parquet"  # parents are created
    write_parquet_atomic(pa.table({"a": [1, 2, 3]}), path)
    assert listing(path.parent) == ["f.parquet"]
    assert pq.read_table(path).column("a").to_pylist() == [1, 2, 3]
    write_parquet_atomic(pa.table({"a": [4]}), path)  # replaces
    assert listing(path.parent) == ["f.parquet"]
    assert pq.read_table(path).column("a").to_pylist() == [4]


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "f.parquet"
    write_parquet_atomic(pa.table({"a": [1, 2, 3]}), path)
    before = path.read_bytes()
    calls = []

    def half_write(table, where, **kwargs):
        calls.append(str(where))
        with open(where, "wb") as f:  # a partial file, then the failure
            f.write(b"PAR1 partial")
        raise exc

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(type(exc)):
        write_parquet_atomic(pa.table({"a": [9]}), path)
    assert len(calls) == 1 and os.path.dirname(calls[0]) == str(tmp_path) and calls[0] != str(path)
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["f.parquet"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(table, where, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError, match="no space"):
        write_parquet_atomic(pa.table({"a": [1]}), tmp_path / "f.parquet")
    assert listing(tmp_path) == []


def test_write_json_atomic(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic({"b": 1, "a": [1, 2]}, path)
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert read_json(path) == {"a": [1, 2], "b": 1}
    assert listing(tmp_path) == ["x.json"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet_atomic(pa.table({"a": [1]}), tmp_path / "f.parquet")
        write_json_atomic({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f.parquet").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o644
