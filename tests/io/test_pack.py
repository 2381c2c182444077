"""An image folder packed as webdataset tar shards (pipeline/extract/pack.py), read back by pipeline/io/samples.py."""

from __future__ import annotations

import io
import math
import os
import tarfile
from pathlib import Path

import pytest
import webdataset
import webdataset as wds
from PIL import Image

from pipeline.extract.pack import pack_folder, sample_key
from pipeline.io.samples import IMAGE_EXTS, ShardEnd, iter_tar, pick_image
from pipeline.io.shards import Shard, create_shards, expand_shards
from tests.conftest import jpeg_bytes, make_image


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# relative path → (bytes, member extension expected in the tar)
def folder_contents() -> dict[str, tuple[bytes, str]]:
    return {
        "a.jpg": (jpeg_bytes(make_image(1)), "jpg"),
        "a.b.jpg": (jpeg_bytes(make_image(2)), "jpg"),
        "Upper.JPG": (jpeg_bytes(make_image(3)), "jpg"),
        "fake.svg": (jpeg_bytes(make_image(4)), "img"),  # JPEG bytes behind a name Pillow does not know
        "noext": (png_bytes(make_image(5)), "img"),
        "broken.png": (b"\x89PNG but not really" * 4, "png"),  # packed as is: a failure row at extract time
        "sub/c.png": (png_bytes(make_image(6)), "png"),
        "sub/x.y.z.png": (png_bytes(make_image(7)), "png"),
        "sub/deep/d.jpeg": (jpeg_bytes(make_image(8)), "jpeg"),
        "v1.2/e.webp": (b"", "webp"),  # replaced below by real WebP bytes
    }


NOT_PACKED = {"notes.txt": b"some notes\n", ".hidden.jpg": jpeg_bytes(make_image(9)),
              ".cache/f.jpg": jpeg_bytes(make_image(10))}


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict[str, tuple[bytes, str]]]:
    root = tmp_path / "images"
    contents = folder_contents()
    buf = io.BytesIO()
    make_image(11).save(buf, format="WEBP", quality=80)
    contents["v1.2/e.webp"] = (buf.getvalue(), "webp")
    for rel, data in [(r, d) for r, (d, _) in contents.items()] + list(NOT_PACKED.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root, contents


def read_wds(paths: list[str]) -> list[dict]:
    return list(webdataset.WebDataset(paths, shardshuffle=False))


@pytest.mark.parametrize("rel, key", [
    ("a.jpg", "a"), ("a.b.jpg", "a_b"), ("sub/x.y.z.png", "sub/x_y_z"), ("v1.2/e.webp", "v1.2/e"),
    ("noext", "noext"), ("fake.svg", "fake"), ("d/e/f.tar.gz", "d/e/f_tar"), ("Upper.JPG", "Upper"),
])
def test_sample_key(rel, key):
    assert sample_key(rel) == key


@pytest.mark.parametrize("shard_size", [1, 3, 4, 10, 1000])
def test_pack_folder_writes_shards_and_a_listing(folder, tmp_path, shard_size):
    root, contents = folder
    out = tmp_path / "out"
    paths = pack_folder(str(root), str(out), shard_size=shard_size, progress=False)
    n = len(contents)
    expected = [str(out / f"shard-{i:06d}.tar") for i in range(math.ceil(n / shard_size))]
    assert paths == expected
    assert sorted(os.listdir(out)) == sorted([os.path.basename(p) for p in expected] + ["shards.txt"])
    assert (out / "shards.txt").read_text() == "".join(os.path.basename(p) + "\n" for p in expected)
    # the listing is a shard spec that resolves against its own folder
    assert expand_shards([str(out / "shards.txt")]) == expected
    # every shard but the last is full, in sorted file order
    per_shard = [len(read_wds([p])) for p in paths]
    assert sum(per_shard) == n and all(k == shard_size for k in per_shard[:-1])


def test_packed_samples_hold_the_original_bytes_once(folder, tmp_path):
    root, contents = folder
    paths = pack_folder(str(root), str(tmp_path / "out"), shard_size=4, progress=False)
    samples = read_wds(paths)
    rels = [s["path.txt"].decode() for s in samples]
    assert rels == sorted(contents)  # each image once, in sorted order; nothing else
    for sample in samples:
        rel = sample["path.txt"].decode()
        data, ext = contents[rel]
        assert sample["__key__"] == sample_key(rel)
        members = {k for k in sample if not k.startswith("__")}
        assert members == {ext, "path.txt"}, rel
        assert sample[ext] == data, rel
    assert not {"notes.txt", ".hidden.jpg", ".cache/f.jpg"} & set(rels)


def test_packed_shards_read_by_the_pipeline_loader(folder, tmp_path):
    root, contents = folder
    paths = pack_folder(str(root), str(tmp_path / "out"), shard_size=3, progress=False)
    shards = create_shards([str(tmp_path / "out" / "shards.txt")])
    assert [s.url for s in shards] == paths
    seen = {}
    for shard in shards:
        end = ShardEnd(shard.id)
        for sample in iter_tar(shard, end):
            assert end.damage is None
            rel = sample["path.txt"].decode()
            assert rel not in seen
            seen[rel] = pick_image(sample, None)
            assert sample["__key__"] == sample_key(rel)
    assert seen == {rel: data for rel, (data, _) in contents.items()}


def test_tar_members_are_named_key_dot_ext(folder, tmp_path):
    root, contents = folder
    (path,) = pack_folder(str(root), str(tmp_path / "out"), shard_size=100, progress=False)
    with tarfile.open(path) as tar:
        names = tar.getnames()
    expected = []
    for rel in sorted(contents):
        # one sample's members are consecutive (webdataset's TarWriter orders them by extension)
        expected += sorted([f"{sample_key(rel)}.{contents[rel][1]}", f"{sample_key(rel)}.path.txt"])
    assert names == expected
    assert all(ext in IMAGE_EXTS for _, ext in contents.values())


def test_tar_members_carry_no_pax_header(folder, tmp_path):
    """Whole-second mtimes: no PAX header per member (a float mtime adds one, doubling what readers parse)."""
    root, _ = folder
    (path,) = pack_folder(str(root), str(tmp_path / "out"), shard_size=100, progress=False)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert members and all(m.pax_headers == {} and isinstance(m.mtime, int) and m.mtime > 0 for m in members)
    raw = Path(path).read_bytes()
    headers = [raw[o:o + 512] for o in range(0, len(raw), 512) if raw[o + 257:o + 262] == b"ustar"]
    assert len(headers) == len(members)  # one header block per member, none of type 'x' (PAX)
    assert all(h[156:157] == b"0" for h in headers)


@pytest.mark.parametrize("names, keys", [
    (("x.jpg", "x.png"), ["x", "x_png"]),
    (("a.b.jpg", "a_b.jpg"), ["a_b", "a_b_jpg"]),
    (("s/p.q.png", "s/p_q.jpeg"), ["s/p_q", "s/p_q_jpeg"]),
    (("photo.bmp", "photo.jpeg", "photo_bmp.png"), ["photo", "photo_jpeg", "photo_bmp"]),
])
def test_files_that_would_share_a_key_are_all_packed_under_unique_keys(tmp_path, names, keys):
    """RAW+JPEG exports and format conversions (issue 12, item 18): every file packed, keys unique, path.txt
    maps each key back to its file."""
    root = tmp_path / "images"
    for i, rel in enumerate(names):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg_bytes(make_image(i)))
    out = tmp_path / "out"
    pack_folder(str(root), str(out), shard_size=10, progress=False)
    samples = list(wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False))
    got = {s["__key__"]: s["path.txt"].decode() for s in samples}
    assert sorted(got) == sorted(keys) and sorted(got.values()) == sorted(names)
    for key, rel in got.items():  # each key's image bytes are its file's
        sample = next(s for s in samples if s["__key__"] == key)
        image = next(v for k, v in sample.items() if k not in ("__key__", "__url__", "__local_path__", "path.txt"))
        assert image == (root / rel).read_bytes()


def test_folder_without_images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "notes.txt").write_text("nothing to pack")
    with pytest.raises(FileNotFoundError, match="no image files"):
        pack_folder(str(root), str(tmp_path / "out"), progress=False)


def test_repacking_replaces_the_shards(folder, tmp_path):
    root, contents = folder
    out = tmp_path / "out"
    first = pack_folder(str(root), str(out), shard_size=4, progress=False)
    again = pack_folder(str(root), str(out), shard_size=4, progress=False)
    assert first == again
    assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in again]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert Shard(id="shard-000000", url=first[0]) == create_shards([str(out / "shards.txt")])[0]
