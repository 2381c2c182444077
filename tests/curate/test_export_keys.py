"""Export never writes two samples under one key, and every sample moves the bar (issue 12, items 5, 6, 12)."""

from __future__ import annotations

import json

import pytest
import webdataset as wds
from webdataset import TarWriter

from pipeline.curate.export import ExportConfig, run_export
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.errors import InputError
from pipeline.extract.runner import run_extract
from tests.conftest import jpeg_bytes, make_image, tiny_config, write_shards


@pytest.fixture()
def twin_shards(tmp_path):
    """Two source shards whose samples carry the same 10 keys (e.g. two crawls named alike)."""
    a, keys = write_shards(tmp_path / "a", 1, 10, prefix="crawl1")
    b = tmp_path / "crawl2-000000.tar"
    with TarWriter(str(b), encoder=False) as sink:  # same keys, other photos
        for i, key in enumerate(keys):
            sink.write({"__key__": key, "jpg": jpeg_bytes(make_image(i, seed=7))})
    run_extract(tiny_config(tmp_path / "out", shards=(a[0], str(b))))
    run_dedup(DedupConfig(features=str(tmp_path / "out"), progress=False))
    return tmp_path, keys


def test_samples_sharing_a_key_are_renamed_and_listed(twin_shards, capsys):
    tmp_path, keys = twin_shards
    manifest = run_export(ExportConfig(selection=str(tmp_path / "out" / "dedup" / "groups.parquet"),
                                       out=str(tmp_path / "export"), progress=True))
    got = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "export" / "export-000000.tar"),
                                                shardshuffle=False)]
    assert len(got) == 20 == len(set(got)) == manifest.record["samples"]
    assert sorted(got) == sorted(keys + [f"{k}__1" for k in keys])
    renamed = json.loads((tmp_path / "export" / "manifest.json").read_text())["renamed"]
    assert [r["new_key"] for r in renamed] == [f"{k}__1" for k in keys]
    assert {r["shard"] for r in renamed} == {"crawl2-000000"}
    assert "20/20" in capsys.readouterr().err


def test_export_out_that_is_a_file(twin_shards):
    tmp_path, _ = twin_shards
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        run_export(ExportConfig(selection=str(tmp_path / "out" / "dedup" / "groups.parquet"),
                                out=str(tmp_path / "afile"), progress=False))
