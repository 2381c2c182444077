"""`--extras stats`: float32 quality columns only when asked, equal to io/stats on the model's input; default
roots keep their schema and fingerprint."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.errors import ConfigError, ConfigMismatchError
from pipeline.extract.backbone import create_backbone
from pipeline.extract.config import RESERVED_COLUMNS
from pipeline.extract.loader import ExtractDataset
from pipeline.extract.runner import run_extract
from pipeline.io.schema import read_provenance
from pipeline.io.stats import STATS_COLUMNS, STATS_DEFINITION
from pipeline.provenance import fingerprint
from tests.conftest import make_image, tiny_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stats") / "photos"
    folder.mkdir()
    for i in range(5):
        make_image(i, (96 + 16 * i, 72)).save(folder / f"p{i}.jpg", quality=92)
    Image.new("RGB", (80, 60)).save(folder / "black.png")
    return folder


@pytest.fixture(scope="module")
def roots(photos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roots")
    run_extract(tiny_config(tmp / "plain", images=str(photos)))
    run_extract(tiny_config(tmp / "stats", images=str(photos), extras=("stats",)))
    return tmp / "plain", tmp / "stats"


def test_stats_columns_exist_only_when_asked(roots):
    plain, stats = (pq.read_schema(next((r / "features").glob("*.parquet"))) for r in roots)
    assert not set(STATS_COLUMNS) & set(plain.names)
    assert stats.names == plain.names[:10] + list(STATS_COLUMNS) + plain.names[10:]  # after the metadata
    assert all(str(stats.field(c).type) == "float" for c in STATS_COLUMNS)


def test_the_provenance_records_the_definitions_and_default_fingerprints_hold(roots):
    plain, stats = (read_provenance(next((r / "features").glob("*.parquet"))) for r in roots)
    assert "stats" not in plain and stats["stats"] == STATS_DEFINITION
    assert stats["fingerprint"] != plain["fingerprint"]  # the two roots never mix
    without = {k: v for k, v in stats.items() if k != "stats"}
    assert fingerprint(without) == plain["fingerprint"]  # the extra adds one key and changes nothing else


def test_values_equal_the_signals_of_the_models_input(roots, photos):
    _, root = roots
    table = pq.read_table(next((root / "features").glob("*.parquet")))
    cfg = tiny_config(root, images=str(photos), extras=("stats",))
    dataset = ExtractDataset([], create_backbone(cfg, torch.device("cpu")).preprocess, 4, cfg.max_pixels,
                             stats=True)
    rows = table.to_pylist()
    assert len(rows) == 6
    for row in rows:
        _, meta = dataset.process("x", 0, row["key"], (photos / row["key"]).read_bytes())
        stored = [row[c] for c in STATS_COLUMNS]
        np.testing.assert_allclose(stored, np.float32(meta.stats), rtol=1e-6)
        assert row["aspect"] == pytest.approx(row["width"] / row["height"], rel=1e-6)
    black = next(r for r in rows if r["key"] == "black.png")
    assert black["brightness"] == 0 and black["flat_share"] == 1 and black["sharpness"] == 0


def test_a_root_without_stats_refuses_a_run_with_them(roots, photos):
    plain, _ = roots
    with pytest.raises(ConfigMismatchError):
        run_extract(tiny_config(plain, images=str(photos), extras=("stats",)))


def test_keep_columns_cannot_take_a_stats_name():
    assert set(STATS_COLUMNS) <= set(RESERVED_COLUMNS)
    with pytest.raises(ConfigError, match="keep_columns"):
        tiny_config("x", images="y", keep_columns=("sharpness",))
