"""Extract + dedup runs the report tests share: a folder with planted copies and hostile names, a tar shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from webdataset import TarWriter

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.extract.runner import run_extract
from tests.conftest import jpeg_bytes, make_image, tiny_config
from tests.report.pages import BROKEN, EVIL


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory) -> Path:
    """An extract + dedup of a folder with planted exact copies (one under a hostile name) and a corrupt file."""
    root = tmp_path_factory.mktemp("report")
    photos = root / "photos"
    (photos / "copies").mkdir(parents=True)
    for i in range(10):
        make_image(i, (96, 72)).save(photos / f"img{i:02d}.jpg", quality=90)
    for name in ("a", "b"):
        shutil.copy(photos / "img00.jpg", photos / "copies" / f"img00_{name}.jpg")  # a group of three
    shutil.copy(photos / "img01.jpg", photos / "copies" / "img01_copy.jpg")
    (photos / EVIL).parent.mkdir()
    shutil.copy(photos / "img02.jpg", photos / EVIL)
    (photos / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    run_extract(tiny_config(root / "out", images=str(photos), folder_shard_size=5))  # 4 shards
    run_dedup(DedupConfig(features=str(root / "out"), progress=False))
    return root / "out"


@pytest.fixture(scope="session")
def shard_run(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """An extract + dedup of one tar shard with two exact copies; keys map to the colour index of the image."""
    root = tmp_path_factory.mktemp("report_tar")
    colour = {}
    with TarWriter(str(root / "train-000000.tar"), encoder=False) as sink:
        for n, i in enumerate([0, 1, 2, 3, 1, 4, 5, 1]):
            key = f"k{n:02d}"
            sink.write({"__key__": key, "jpg": jpeg_bytes(make_image(i * 3, (80, 60)), quality=95),
                        "cls": b"0"})
            colour[key] = i * 3
    run_extract(tiny_config(root / "out", shards=(str(root / "train-000000.tar"),)))
    run_dedup(DedupConfig(features=str(root / "out"), progress=False))
    return root / "out", colour


@pytest.fixture(scope="session")
def searched(shard_run, tmp_path_factory) -> tuple[Path, dict[str, int], pa.Table, Path]:
    """`shard_run` with an index, a k=3 search of its own features (table and CSV) and a curation by them."""
    from pipeline.curate.retrieval import CurateConfig, run_curate
    from pipeline.index.build import IndexConfig, build_index
    from pipeline.index.search import run_search

    out, colour = shard_run
    build_index(IndexConfig(features=str(out), progress=False))
    table = run_search(str(out / "index"), str(out), k=3)  # the features as queries: no re-extraction
    csv = tmp_path_factory.mktemp("search") / "search.csv"
    table.to_pandas().to_csv(csv, index=False)
    run_curate(CurateConfig(pool=str(out), queries=(("self", str(out)),), mode="sample", k=2, progress=False))
    return out, colour, table, csv
