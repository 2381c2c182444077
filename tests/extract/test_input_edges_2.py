"""The extract stage's inputs, round two: each mistake ends in one `error:` line, or a clear warning (issue 26,
items 1-3, 7, 10-14 and 16)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from webdataset import TarWriter

from jobs import extract as extract_job
from tests.conftest import TINY_KWARGS, TINY_RES, jpeg_bytes, make_image, write_shards

REPO = Path(__file__).resolve().parents[2]
TINY = ["--weights", "random", "--model-kwargs", ",".join(f"{k}={v}" for k, v in TINY_KWARGS),
        "--resolution", str(TINY_RES), "--device", "cpu", "--precision", "fp32", "--workers", "0", "--no-progress"]


def extract(tmp_path: Path, *args: str) -> int:
    """`dinocurate extract ARGS` in this process (the tiny random ViT unless ARGS say otherwise); its exit code."""
    with pytest.raises(SystemExit) as info:
        extract_job.main(["--out", str(tmp_path / "out"), *TINY, *args])
    return info.value.code


def one_error_line(capsys) -> str:
    """stderr ends in one `error: ...` line (log lines before it: --weights random warns), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
    return lines[-1]


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        make_image(i).save(folder / f"p{i}.jpg")
    return folder


# ------------------------------------------------------------------------------------- model and weights
def test_an_unknown_model_is_named_with_the_nearest_names(tmp_path, photos, capsys):
    assert extract(tmp_path, "--images", str(photos), "--model", "vit_nonexistent_model") == 2
    line = one_error_line(capsys)
    assert line.startswith("error: timm has no model 'vit_nonexistent_model' (--model)") and "hub" not in line
    assert extract(tmp_path, "--images", str(photos), "--model", "vit_smal_patch14_dinov2") == 2
    assert "did you mean vit_small_patch14_dinov2" in one_error_line(capsys)
    assert extract(tmp_path, "--images", str(photos), "--model", "vit_small_patch14_reg4_dinov2.lvd999") == 2
    assert "no pretrained tag 'lvd999' for vit_small_patch14_reg4_dinov2" in one_error_line(capsys)


def test_an_unknown_model_without_random_weights_names_the_model_not_the_hub(tmp_path, photos):
    done = subprocess.run([sys.executable, "-m", "jobs.extract", "--images", str(photos), "--out",
                           str(tmp_path / "out"), "--model", "vit_nonexistent_model"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: timm has no model 'vit_nonexistent_model'")


def test_a_convnet_gives_its_pooled_features(tmp_path, photos, capsys):
    assert extract(tmp_path, "--images", str(photos), "--model", "resnet10t", "--model-kwargs", "") == 0
    table = pq.read_table(next((tmp_path / "out" / "features").glob("*.parquet")))
    assert table.num_rows == 2 and table.schema.field("cls").type.list_size == 512
    assert table.schema.field("patch_mean").type.list_size == 512
    # an average-pooled convnet: its pooled pre-logits are the mean over its feature map's positions
    cls, mean = (table.column(c).to_numpy(zero_copy_only=False) for c in ("cls", "patch_mean"))
    assert all(abs(float(a) - float(b)) < 1e-2 for x, y in zip(cls, mean) for a, b in zip(x, y))
    assert extract(tmp_path / "layers", "--images", str(photos), "--model", "resnet10t", "--model-kwargs", "",
                   "--extras", "layers") == 2
    assert "resnet10t has no CLS token" in one_error_line(capsys)


@pytest.mark.parametrize("kwargs, says", [
    ("depth=abc", "depth='abc' is text, not a number"),
    ("depht=2", "unexpected keyword argument 'depht'"),
    ("embed_dim=65,num_heads=2", "dim should be divisible by num_heads"),
])
def test_model_kwargs_timm_cannot_build_are_one_line(tmp_path, photos, capsys, kwargs, says):
    assert extract(tmp_path, "--images", str(photos), "--model-kwargs", kwargs) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: timm cannot build vit_small_patch14_reg4_dinov2.lvd142m with --model-kwargs "
                           f"{kwargs} (") and says in line


@pytest.mark.parametrize("name, content, says", [
    ("notes.pth", b"hello, I am text\nsecond line\n", "it holds text ('hello, I am text' ...)"),
    ("random.pth", bytes(range(7, 256)) * 4, "neither a zip archive nor a pickle"),
    ("pickle-like.pth", b"\x80\xfe" + bytes(range(256)), "torch cannot read it as one"),
    ("photo.pt", None, "it is a JPEG image"),
    ("notes.safetensors", b"hello", "it holds text"),
    ("empty.bin", b"", "it is empty"),
])
def test_a_file_that_is_no_checkpoint_never_gets_unpickling_advice(tmp_path, photos, capsys, name, content, says):
    path = tmp_path / name
    path.write_bytes(jpeg_bytes(make_image(0)) if content is None else content)
    assert extract(tmp_path, "--images", str(photos), "--weights", str(path)) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {name} is not a checkpoint") and says in line
    assert "weights_only" not in line and "torch.load" not in line


# ------------------------------------------------------------------------------------------------ inputs
def test_a_text_file_given_as_shards_is_said_to_be_read_as_a_list(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("buy milk\ncall Bob\n")
    assert extract(tmp_path, "--shards", str(notes)) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {str(notes)!r} was read as a list of shards") and "none of its 2 entries" in line


def test_an_image_given_as_shards_points_to_images(tmp_path, photos, capsys):
    assert extract(tmp_path, "--shards", str(photos / "p0.jpg")) == 2
    assert one_error_line(capsys) == (f"error: {str(photos / 'p0.jpg')!r} is an image file, not a shard (SHARDS= "
                                      f"takes .tar or .parquet files): give image files by their folder as "
                                      f"IMAGES=DIR (here IMAGES={str(photos)!r})")
    assert not (tmp_path / "out" / "features").exists()


def test_a_shards_folder_says_how_many_images_it_skipped(tmp_path, caplog):
    folder = tmp_path / "mixed"
    (folder / "trip").mkdir(parents=True)
    for i in range(3):
        make_image(i).save(folder / "trip" / f"{i}.jpg")
    shards, keys = write_shards(tmp_path / "s", 1, 2)
    with open(shards[0], "rb") as plain, gzip.open(folder / "old.tgz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    with caplog.at_level(logging.WARNING):
        assert extract(tmp_path, "--shards", str(folder)) == 0
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert said == [f"{folder}: skipped 3 image files beside its shards (e.g. trip/0.jpg); to read them, give the "
                    f"folder as IMAGES={folder}"]
    table = pq.read_table(tmp_path / "out" / "features" / "old.parquet", columns=["key"])
    assert table.column("key").to_pylist() == keys


def test_a_shards_folder_of_images_only_points_to_images(tmp_path, photos, capsys):
    assert extract(tmp_path, "--shards", str(photos)) == 2
    assert one_error_line(capsys) == (f"error: no Parquet or tar files in the folder {str(photos)!r}, but 2 image "
                                      f"files: give it as IMAGES={str(photos)!r}")


def test_an_img2dataset_folder_reads_its_tars_not_its_metadata(tmp_path, capsys):
    folder = tmp_path / "laion"
    folder.mkdir()
    urls = [f"https://example.com/{i}.jpg" for i in range(3)]
    with TarWriter(str(folder / "00000.tar"), encoder=False) as sink:
        for i, url in enumerate(urls):
            key = f"{i:09d}"
            meta = {"url": url, "caption": f"photo {i}", "key": key, "status": "success"}
            sink.write({"__key__": key, "jpg": jpeg_bytes(make_image(i)), "json": json.dumps(meta).encode(),
                        "txt": f"photo {i}".encode()})
    pq.write_table(pa.table({"url": urls, "caption": [f"photo {i}" for i in range(3)],
                             "key": [f"{i:09d}" for i in range(3)], "status": ["success"] * 3,
                             "error_message": pa.array([None] * 3, pa.string())}), folder / "00000.parquet")
    (folder / "00000_stats.json").write_text(json.dumps({"count": 3, "successes": 3}))
    assert extract(tmp_path, "--shards", str(folder), "--keep-columns", "url,caption") == 0
    table = pq.read_table(tmp_path / "out" / "features" / "00000.parquet", columns=["key", "url", "caption"])
    assert table.to_pydict() == {"key": [f"{i:09d}" for i in range(3)], "url": urls,
                                 "caption": [f"photo {i}" for i in range(3)]}


def test_an_image_given_as_the_image_folder_is_said_to_be_a_file(tmp_path, photos, capsys):
    assert extract(tmp_path, "--images", str(photos / "p0.jpg")) == 2
    assert one_error_line(capsys) == (f"error: {str(photos / 'p0.jpg')!r} is a file, not a folder: IMAGES= takes a "
                                      f"folder of images (read recursively), e.g. its folder IMAGES={str(photos)!r}")
    shards, _ = write_shards(tmp_path / "s", 1, 1)
    assert extract(tmp_path, "--images", shards[0]) == 2
    assert one_error_line(capsys).endswith(f"a shard is SHARDS={shards[0]!r}")


def test_a_kept_column_the_parquet_lacks_is_refused(tmp_path, capsys):
    path = tmp_path / "labelled.parquet"
    pq.write_table(pa.table({"image": [jpeg_bytes(make_image(0))], "label": ["cat"]}), path)
    assert extract(tmp_path, "--shards", str(path), "--keep-columns", "label,caption") == 2
    assert one_error_line(capsys) == (f"error: --keep-columns caption: {path} has no column 'caption' (it would be "
                                      f"null in every row); its columns: image, label")
    assert extract(tmp_path, "--shards", str(path), "--keep-columns", "label") == 0
