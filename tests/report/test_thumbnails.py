"""Where thumbnails come from (folder, tar shards through pipeline.io.samples, one file) and how they are written."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.report.thumbnails import THUMBS, Thumbnails
from pipeline.roots.sources import ImageSource, open_source, read_images
from tests.conftest import jpeg_bytes, make_image
from tests.report.pages import mean_colour


def test_open_source_of_a_root_a_folder_a_file_and_nothing(shard_run, folder_run, tmp_path):
    out, _ = shard_run
    assert open_source(out) == ImageSource("shards", out)
    folder = open_source(folder_run)
    assert folder.kind == "folder" and folder.path.name == "photos" and folder.path.is_dir()
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert open_source(tmp_path / "a.jpg") == ImageSource("file", tmp_path / "a.jpg")
    assert open_source(tmp_path) == ImageSource("folder", tmp_path)
    assert open_source(tmp_path / "nowhere") is None


def test_read_images_from_shards_checks_each_key(shard_run):
    out, colour = shard_run
    items = [("k05", "train-000000", 5), ("k01", "train-000000", 1), ("k02", "train-000000", 3),
             ("k09", "train-000000", 9), ("k00", "train-999999", 0)]
    got = read_images(open_source(out), items)
    for key, _, _ in items[:2]:
        img = Image.open(io.BytesIO(got[(key, "train-000000", int(key[1:]))]))
        assert np.abs(mean_colour(img) - mean_colour(make_image(colour[key], (80, 60)))).max() < 6
    assert got[items[2]] == "train-000000#3 holds another key"  # the shard changed since extraction
    assert got[items[3]] == "not found in its shard"
    assert got[items[4]] == "shard train-999999 is not among the inputs"


def test_a_folder_key_never_reads_outside_the_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"a")
    (tmp_path / "secret.txt").write_bytes(b"s")
    got = read_images(ImageSource("folder", tmp_path / "imgs"), [("a.jpg", "", -1), ("../secret.txt", "", -1),
                                                                  ("b.jpg", "", -1)])
    assert got[("a.jpg", "", -1)] == b"a" and got[("../secret.txt", "", -1)] == "key points outside the image folder"
    assert got[("b.jpg", "", -1)].startswith("FileNotFoundError")


def test_thumbnails_are_small_jpegs_and_failures_say_why(tmp_path):
    (tmp_path / "imgs").mkdir()
    make_image(1, (400, 100)).save(tmp_path / "imgs" / "wide.png")
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (tmp_path / "q.jpg").write_bytes(jpeg_bytes(make_image(2, (50, 40))))
    thumbs = Thumbnails(tmp_path / "r" / THUMBS, 64)
    folder = ImageSource("folder", tmp_path / "imgs")
    wide = thumbs.want(folder, "wide.png")
    assert thumbs.want(folder, "wide.png") is wide  # asked twice, read once
    bad, lost = thumbs.want(folder, "bad.jpg"), thumbs.want(None, "x")
    query = thumbs.want(ImageSource("file", tmp_path / "q.jpg"), "any key")
    thumbs.fetch()
    assert thumbs.written == 2 and wide.src.startswith(f"{THUMBS}/") and query.src
    assert Image.open(tmp_path / "r" / wide.src).size == (64, 16)
    assert Image.open(tmp_path / "r" / query.src).size == (50, 40)  # never enlarged
    assert bad.src is None and bad.error and "image unavailable" in bad.html()
    assert lost.error == "the image source is unknown"
    assert sum(thumbs.missing.values()) == 2
    assert '<img src="thumbs/' in wide.html() and 'alt="wide.png"' in wide.html()
