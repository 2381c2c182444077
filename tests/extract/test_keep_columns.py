"""Metadata through (issue 14): img2dataset members and Parquet columns stored beside the features, exported
back unchanged."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from webdataset import TarWriter

from pipeline.curate.export import ExportConfig, run_export
from pipeline.errors import ConfigError, InputError
from pipeline.extract.runner import run_extract
from pipeline.io.samples import kept_values
from pipeline.io.schema import read_provenance
from tests.conftest import jpeg_bytes, make_image, tiny_config

KEEP = ("json", "txt", "url", "caption")


def img2dataset_shard(path: Path, n: int = 4) -> dict[str, dict[str, bytes]]:
    """jpg + json (url, caption, key, sizes, as img2dataset writes it) + txt members; returns them by key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = {}
    with TarWriter(str(path), encoder=False) as sink:
        for i in range(n):
            key = f"{i:09d}"
            meta = {"url": f"https://example.org/{i}.jpg", "caption": f"a phot\u00f6 {i}", "key": key,
                    "status": "success", "width": 64, "height": 48}
            sample = {"jpg": jpeg_bytes(make_image(i)), "json": json.dumps(meta).encode(),
                      "txt": f"a phot\u00f6 {i}".encode()}
            if i == 2:
                del sample["txt"]  # a sample without a caption file
            sink.write({"__key__": key, **sample})
            samples[key] = sample
    return samples


def export_members(tmp_path: Path, df: pd.DataFrame) -> dict[str, bytes]:
    """Export every row of `df` (from tmp_path/out) to tmp_path/exp; the tar's members by name."""
    sel = tmp_path / "sel.parquet"
    pq.write_table(pa.table({"key": list(df.key), "shard": list(df.shard), "index": list(df["index"])}), sel)
    run_export(ExportConfig(selection=str(sel), out=str(tmp_path / "exp"), features=str(tmp_path / "out"),
                            progress=False))
    with tarfile.open(next((tmp_path / "exp").glob("*.tar"))) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def test_img2dataset_members_become_columns_and_export_round_trips_them(tmp_path):
    samples = img2dataset_shard(tmp_path / "in" / "00000.tar")
    cfg = tiny_config(tmp_path / "out", shards=(str(tmp_path / "in" / "00000.tar"),), keep_columns=KEEP)
    assert run_extract(cfg).images == 4
    f = next((tmp_path / "out" / "features").glob("*.parquet"))
    df = pd.read_parquet(f)
    schema = pq.read_schema(f)
    assert [schema.field(c).type for c in KEEP] == [pa.string()] * 4
    assert schema.names.index("caption") < schema.names.index("cls")  # beside the metadata, before features
    for row in df.itertuples():
        src = samples[row.key]
        assert row.json == src["json"].decode() and row.url == f"https://example.org/{int(row.key)}.jpg"
        assert row.caption == f"a phot\u00f6 {int(row.key)}"
        assert (row.txt if isinstance(row.txt, str) else None) == (src["txt"].decode() if "txt" in src else None)
    assert read_provenance(f)["keep_columns"] == list(KEEP)
    got = export_members(tmp_path, df)
    want = {f"{k}.{ext}": data for k, sample in samples.items() for ext, data in sample.items()}
    assert got == want  # byte for byte, the json and txt members included


def test_parquet_columns_are_kept_and_written_back_as_members(tmp_path):
    images = [jpeg_bytes(make_image(i)) for i in range(3)]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "key": ["a", "b", "c"],
                             "caption": ["one", None, "thr\u00e9e"], "score": [0.5, 1.0, 2.0]}), path)
    run_extract(tiny_config(tmp_path / "out", shards=(str(path),), keep_columns=("caption", "score")))
    table = pq.read_table(tmp_path / "out" / "features")
    df = table.to_pandas()
    assert table.column("caption").to_pylist() == ["one", None, "thr\u00e9e"]
    assert table.column("score").to_pylist() == ["0.5", "1.0", "2.0"]
    with pytest.raises(InputError, match="--keep-columns url: .* has no column 'url'"):  # asked for, absent
        run_extract(tiny_config(tmp_path / "out2", shards=(str(path),), keep_columns=("caption", "url")))
    got = export_members(tmp_path, df)
    assert got == {"a.jpg": images[0], "a.caption.txt": b"one", "a.score.txt": b"0.5", "b.jpg": images[1],
                   "b.score.txt": b"1.0", "c.jpg": images[2], "c.caption.txt": "thr\u00e9e".encode(),
                   "c.score.txt": b"2.0"}


def test_kept_values_lift_url_and_caption_from_json_only_when_absent():
    sample = {"json": b'{"url": "u", "caption": "from json", "n": 1}', "caption": b"own", "n": 3}
    assert kept_values(sample, ("url", "caption", "n", "json", "missing")) == (
        "u", "own", "3", '{"url": "u", "caption": "from json", "n": 1}', None)
    assert kept_values({"json": b"not json"}, ("url",)) == (None,)
    assert kept_values({"json": b"[1, 2]"}, ("caption",)) == (None,)


def test_keep_columns_cannot_shadow_the_feature_files_own_columns(tmp_path):
    for bad in (("key",), ("cls",), ("__key__",), ("url", "url")):
        with pytest.raises(ConfigError, match="keep_columns"):
            tiny_config(tmp_path, shards=("x.tar",), keep_columns=bad)


def test_without_keep_columns_the_fingerprint_is_unchanged(tmp_path):
    import torch

    from pipeline.extract.backbone import create_backbone

    plain = create_backbone(tiny_config(tmp_path, shards=("x.tar",)), torch.device("cpu")).provenance()
    kept = create_backbone(tiny_config(tmp_path, shards=("x.tar",), keep_columns=("url",)),
                           torch.device("cpu")).provenance()
    assert "keep_columns" not in plain and kept["keep_columns"] == ["url"]
    assert plain["fingerprint"] != kept["fingerprint"]  # one schema per root
