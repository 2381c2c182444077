"""Parquet shards in (issue 14): datasets.Image structs and plain binary columns, keys, failure rows, row-group
units, resume, the same features as tars, and export back to webdataset."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.curate.export import ExportConfig, image_extension, run_export
from pipeline.errors import InputError
from pipeline.extract.runner import run_extract
from pipeline.io.shards import create_shards, parquet_units
from tests.conftest import jpeg_bytes, make_image, tiny_config, write_shards


def read(out: Path, what: str = "features") -> pd.DataFrame:
    files = sorted((out / what).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def photos(n: int, start: int = 0) -> list[bytes]:
    return [jpeg_bytes(make_image(i, (64 + (i % 5) * 8, 48))) for i in range(start, start + n)]


def write_binary(path: Path, images: list, keys: list | None = None, row_group_size: int | None = None) -> Path:
    columns = {"jpg": pa.array(images, pa.binary())}
    if keys is not None:
        columns["id"] = pa.array(keys)
    columns["caption"] = pa.array([f"caption {i}" for i in range(len(images))])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_a_binary_column_with_keys_gives_a_row_for_every_sample(tmp_path):
    """Feature rows for decodable images, failure rows (with the reason) for a null image and broken bytes;
    keys from the `id` column; a rerun skips the done file."""
    images = photos(5)
    images[1] = None
    images[3] = b"not an image"
    path = write_binary(tmp_path / "in" / "part-0.parquet", images, keys=[f"k{i}" for i in range(5)])
    cfg = tiny_config(tmp_path / "out", shards=(str(path),))
    stats = run_extract(cfg)
    assert (stats.images, stats.failures, stats.written) == (3, 2, 1)
    feats, fails = read(tmp_path / "out"), read(tmp_path / "out", "failures")
    assert list(feats.key) == ["k0", "k2", "k4"] and list(feats["index"]) == [0, 2, 4]
    assert set(feats.shard) == {"part-0"}
    assert dict(zip(fails.key, fails.reason)) == {"k1": "NoImage", "k3": "UnidentifiedImageError"}
    assert run_extract(cfg).skipped == 1


def test_a_datasets_image_column_written_by_the_datasets_library(tmp_path):
    """The real `datasets` library: Image() rows with bytes become feature rows, keyed by file stem and row (no
    key column); a row datasets keeps as a local path (to_parquet does not embed it) is a failure row saying
    so, never a silent loss."""
    datasets = pytest.importorskip("datasets")
    images = photos(5)
    rows = [{"bytes": data, "path": f"p{i}.jpg"} for i, data in enumerate(images[:4])]
    (tmp_path / "p4.jpg").write_bytes(images[4])
    rows.append({"bytes": None, "path": str(tmp_path / "p4.jpg")})
    ds = datasets.Dataset.from_dict({"image": rows, "label": [0, 1, 0, 1, 1]}).cast_column("image", datasets.Image())
    path = tmp_path / "hf" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    ds.to_parquet(str(path))
    assert pa.types.is_struct(pq.read_schema(path).field("image").type)
    stats = run_extract(tiny_config(tmp_path / "out", shards=(str(tmp_path / "hf"),)))  # a folder of Parquet
    assert (stats.images, stats.failures) == (4, 1)
    feats, fails = read(tmp_path / "out"), read(tmp_path / "out", "failures")
    stem = "train-00000-of-00001"
    assert list(feats.key) == [f"{stem}_{i:07d}" for i in range(4)]
    assert list(feats.sha1) == [hashlib.sha1(b).digest() for b in images[:4]]  # the very bytes given
    assert list(zip(fails.key, fails.reason)) == [(f"{stem}_0000004", "PathWithoutBytes")]
    assert str(tmp_path / "p4.jpg") in fails.detail[0]


def test_a_path_without_bytes_is_a_failure_row(tmp_path):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"bytes": photos(1)[0], "path": "a.jpg"}, {"bytes": None, "path": "/elsewhere/b.jpg"}, None]
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": pa.array(rows, struct), "key": ["a", "b", "c"]}), path)
    stats = run_extract(tiny_config(tmp_path / "out", shards=(str(path),)))
    assert (stats.images, stats.failures) == (1, 2)
    fails = read(tmp_path / "out", "failures")
    assert dict(zip(fails.key, fails.reason)) == {"b": "PathWithoutBytes", "c": "NoImage"}
    assert "/elsewhere/b.jpg" in fails.detail[fails.key == "b"].iloc[0]


def test_large_files_are_split_into_row_group_units_with_file_row_keys(tmp_path):
    path = write_binary(tmp_path / "big.parquet", photos(10), row_group_size=3)  # groups of 3, 3, 3, 1
    units = parquet_units(str(path), unit_rows=5)
    assert [(u.id, u.row_groups, u.first_row) for u in units] == [("big-rg00000", (0, 2), 0),
                                                                 ("big-rg00002", (2, 4), 6)]
    assert {u.image_column for u in units} == {"jpg"} and {u.key_column for u in units} == {None}
    whole = parquet_units(str(path))
    assert [(u.id, u.row_groups) for u in whole] == [("big", (0, 4))]
    import pipeline.io.shards as shards_mod

    shards_mod.PARQUET_UNIT_ROWS, old = 5, shards_mod.PARQUET_UNIT_ROWS
    try:
        stats = run_extract(tiny_config(tmp_path / "out", shards=(str(path),)))
    finally:
        shards_mod.PARQUET_UNIT_ROWS = old
    assert (stats.images, stats.written) == (10, 2)
    feats = read(tmp_path / "out")
    assert list(feats.key) == [f"big_{i:07d}" for i in range(10)]
    assert list(feats.shard) == ["big-rg00000"] * 6 + ["big-rg00002"] * 4 and list(feats["index"]) == [*range(6),
                                                                                                       *range(4)]


def test_the_same_photos_as_tars_and_as_parquet_give_identical_features(tmp_path):
    tars, keys = write_shards(tmp_path / "tars", 2, 4)
    images = photos(8)
    write_binary(tmp_path / "pq" / "train-000000.parquet", images[:4], keys=keys[:4])
    write_binary(tmp_path / "pq" / "train-000001.parquet", images[4:], keys=keys[4:])
    run_extract(tiny_config(tmp_path / "a", shards=tuple(tars)))
    run_extract(tiny_config(tmp_path / "b", shards=(str(tmp_path / "pq" / "*.parquet"),)))
    a, b = read(tmp_path / "a"), read(tmp_path / "b")
    assert list(a.key) == list(b.key) == keys and list(a.shard) == list(b.shard)
    for col in ("cls", "patch_mean", "sha1", "phash"):
        assert np.array_equal(np.stack(a[col]) if col in ("cls", "patch_mean") else a[col].to_numpy(),
                              np.stack(b[col]) if col in ("cls", "patch_mean") else b[col].to_numpy()), col


def test_export_of_parquet_rows_writes_the_original_bytes(tmp_path):
    images = photos(3)
    path = write_binary(tmp_path / "rows.parquet", images, keys=["a.b", "c", "d"])
    run_extract(tiny_config(tmp_path / "out", shards=(str(path),)))
    feats = read(tmp_path / "out")
    sel = tmp_path / "selected.parquet"
    pq.write_table(pa.table({"key": list(feats.key), "shard": list(feats.shard), "index": list(feats["index"])}), sel)
    run_export(ExportConfig(selection=str(sel), out=str(tmp_path / "exp"), features=str(tmp_path / "out"),
                            progress=False))
    members = {}
    for tar in sorted((tmp_path / "exp").glob("*.tar")):
        with tarfile.open(tar) as tf:
            members.update({m.name: tf.extractfile(m).read() for m in tf.getmembers()})
    assert members == {"a_b.jpg": images[0], "a_b.key.txt": b"a.b", "c.jpg": images[1], "d.jpg": images[2]}


def test_column_mistakes_are_one_clear_error(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": pa.array([b"1"], pa.binary()), "b": pa.array([b"2"], pa.binary()),
                             "n": [1]}), path)
    with pytest.raises(InputError, match="which column holds the images"):
        create_shards([str(path)])
    assert create_shards([str(path)], image_column="b")[0].image_column == "b"
    with pytest.raises(InputError, match="no image column 'zz'"):
        create_shards([str(path)], image_column="zz")
    with pytest.raises(InputError, match="not image bytes"):
        create_shards([str(path)], image_column="n")
    with pytest.raises(InputError, match="no key column 'k'"):
        create_shards([str(path)], image_column="a", key_column="k")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(InputError, match="cannot be read as Parquet"):
        create_shards([str(tmp_path / "broken.parquet")])


def test_image_extension_from_the_bytes():
    buf = io.BytesIO()
    make_image(1).save(buf, format="PNG")
    webp = io.BytesIO()
    make_image(1).save(webp, format="WEBP")
    assert [image_extension(b) for b in (photos(1)[0], buf.getvalue(), webp.getvalue(), b"??")] == \
        ["jpg", "png", "webp", "img"]
    assert Image.open(io.BytesIO(buf.getvalue())).format == "PNG"


def test_export_as_uids_writes_a_sorted_datacomp_subset_and_the_keys(tmp_path):
    from pipeline.curate.export import UID_DTYPE, key_uids

    hexes = ["f" * 32, "0123456789abcdef0123456789abcdef", "00000000000000010000000000000002"]
    sel = tmp_path / "selected.parquet"
    pq.write_table(pa.table({"key": hexes, "shard": ["s"] * 3, "index": [0, 1, 2]}), sel)
    manifest = run_export(ExportConfig(selection=str(sel), out=str(tmp_path / "sub"), format="uids", progress=False))
    uids = np.load(tmp_path / "sub" / "uids.npy")
    assert uids.dtype == UID_DTYPE and manifest.record["samples"] == 3 and "32-hex-digit" in manifest.record["uids"]
    assert uids.tolist() == [(1, 2), (0x0123456789ABCDEF, 0x0123456789ABCDEF), (2**64 - 1, 2**64 - 1)]
    assert (tmp_path / "sub" / "keys.txt").read_text() == "".join(k + "\n" for k in sorted(hexes))
    import hashlib

    got, how = key_uids(["b", "a"])
    want = sorted((int(h[:16], 16), int(h[16:], 16)) for h in (hashlib.md5(k.encode()).hexdigest() for k in "ab"))
    assert got.tolist() == want and "MD5" in how
