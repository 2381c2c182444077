"""Units of work (pipeline/io/shards.py): shard specs, shard ids, rank splitting, image folders as chunks."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import MissingInputError
from pipeline.io import shards as shards_mod
from pipeline.io.shards import (
    Shard,
    create_folder_shards,
    create_shards,
    expand_shards,
    is_url,
    list_image_files,
    shard_id,
    split_by_rank,
)
from tests.conftest import jpeg_bytes, make_image


def touch(*paths: Path) -> list[str]:
    """Create empty files (expand_shards never opens a shard) and return their paths as strings."""
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    return [str(p) for p in paths]


def forbid_disk(monkeypatch) -> None:
    """Make any file-system lookup made by pipeline.io.shards fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError(f"disk touched with {args}")

    monkeypatch.setattr(shards_mod.os.path, "isfile", boom)
    monkeypatch.setattr(shards_mod.os.path, "exists", boom)
    monkeypatch.setattr(shards_mod.glob, "glob", boom)


# --------------------------------------------------------------------------- expand_shards: local files


def test_brace_pattern_expands_in_order_over_real_files(tmp_path):
    made = touch(*(tmp_path / f"train-{i:06d}.tar" for i in range(4)))
    got = expand_shards([str(tmp_path / "train-{000000..000002}.tar")])
    assert got == made[:3]


def test_brace_pattern_with_a_missing_member_keeps_it_and_names_it(tmp_path, caplog):
    """A missing shard among others is left undone when read (the job exits 1, a rerun retries it)."""
    present = touch(tmp_path / "train-000000.tar", tmp_path / "train-000002.tar")
    with caplog.at_level(logging.WARNING, logger="pipeline.io.shards"):
        got = expand_shards([str(tmp_path / "train-{000000..000002}.tar")])
    assert got == [present[0], str(tmp_path / "train-000001.tar"), present[1]]
    assert "1 of 3 shards do not exist" in caplog.text and "train-000001.tar" in caplog.text


def test_brace_pattern_with_no_member_present_is_an_error(tmp_path):
    with pytest.raises(MissingInputError, match="none of the 3 shards exists"):
        expand_shards([str(tmp_path / "train-{000000..000002}.tar")])


def test_glob_matches_sorted_and_only_matching(tmp_path):
    names = ["train-000002.tar", "train-000000.tar", "train-000001.tar", "val-000000.tar", "train-000003.txt"]
    touch(*(tmp_path / n for n in names))
    got = expand_shards([str(tmp_path / "train-*.tar")])
    assert got == [str(tmp_path / f"train-{i:06d}.tar") for i in range(3)]
    assert expand_shards([str(tmp_path / "train-00000?.tar")]) == got
    assert expand_shards([str(tmp_path / "train-00000[02].tar")]) == [got[0], got[2]]


def test_glob_without_match_is_an_error_naming_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-"):
        expand_shards([str(tmp_path / "nothing-*.tar")])


def test_missing_local_file_raises_naming_it(tmp_path):
    missing = tmp_path / "train-000042.tar"
    with pytest.raises(FileNotFoundError, match="train-000042.tar"):
        expand_shards([str(missing)])


def test_file_url_is_a_local_path(tmp_path):
    (path,) = touch(tmp_path / "x.tar")
    assert expand_shards([f"file://{path}"]) == [path]
    with pytest.raises(FileNotFoundError, match="y.tar"):
        expand_shards([f"file://{tmp_path / 'y.tar'}"])


def test_whitespace_separated_specs_in_one_string(tmp_path):
    a, b, c = touch(tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "c.tar")
    assert expand_shards([f"  {a} {b}\t\n{c}  "]) == [a, b, c]
    # mixed with URLs and brace patterns, several strings keep their order
    got = expand_shards([f"{c} s3://bk/x-{{0..1}}.tar", a])
    assert got == [c, "s3://bk/x-0.tar", "s3://bk/x-1.tar", a]


def test_nothing_at_all_is_an_error():
    with pytest.raises(ValueError, match="no shards"):
        expand_shards(["   "])
    with pytest.raises(ValueError, match="no shards"):
        expand_shards([])


def test_existing_path_with_glob_characters_is_found(tmp_path):
    (path,) = touch(tmp_path / "photos[2019]" / "train-000000.tar")
    assert expand_shards([path]) == [path]


# --------------------------------------------------------------------------- expand_shards: list files


def test_list_file_relative_paths_resolve_against_its_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    a, b = touch(data / "sub" / "a.tar", data / "sub" / "b.tar")
    c0, c1 = touch(data / "c-0.tar", data / "c-1.tar")
    (absolute,) = touch(tmp_path / "elsewhere" / "abs.tar")
    g1, g2 = touch(data / "globbed" / "g-1.tar", data / "globbed" / "g-2.tar")
    listing = data / "shards.txt"
    listing.write_text(
        "# a comment line\n"
        "\n"
        "sub/a.tar\n"
        "   \n"
        "   # an indented comment\n"
        f"  {absolute}  \n"
        "sub/b.tar\n"
        "c-{0..1}.tar\n"
        "globbed/g-*.tar\n"
    )
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)  # relative lines must not resolve against the working directory
    assert expand_shards([str(listing)]) == [a, absolute, b, c0, c1, g1, g2]
    # the list file given by a relative path resolves against its own folder too
    monkeypatch.chdir(tmp_path)
    assert expand_shards(["data/shards.txt"]) == [a, absolute, b, c0, c1, g1, g2]


def test_list_file_keeps_urls_and_pipe_commands(tmp_path):
    listing = tmp_path / "remote.list"
    listing.write_text("s3://bk/x-{0..1}.tar\n# skip me\npipe:cat /data/y.tar\nhttps://h/p/z.tar\n")
    assert expand_shards([str(listing)]) == [
        "s3://bk/x-0.tar", "s3://bk/x-1.tar", "pipe:cat /data/y.tar", "https://h/p/z.tar"]


def test_list_file_lines_are_not_split_at_spaces(tmp_path):
    # one spec per line: a path with spaces works in a list file (on the command line it would be split)
    (path,) = touch(tmp_path / "my photos" / "train-000000.tar")
    listing = tmp_path / "shards.txt"
    listing.write_text("my photos/train-000000.tar\n")
    assert expand_shards([str(listing)]) == [path]


def test_list_file_with_a_missing_entry_keeps_it_and_names_it(tmp_path, caplog):
    touch(tmp_path / "a.tar")
    listing = tmp_path / "shards.txt"
    listing.write_text("a.tar\nmissing-7.tar\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.io.shards"):
        got = expand_shards([str(listing)])
    assert got == [str(tmp_path / "a.tar"), str(tmp_path / "missing-7.tar")]
    assert "missing-7.tar" in caplog.text
    listing.write_text("missing-7.tar\n")
    with pytest.raises(MissingInputError, match="missing-7.tar"):
        expand_shards([str(listing)])


# --------------------------------------------------------------------------- expand_shards: URLs


def test_url_brace_patterns_expand_without_touching_disk(monkeypatch):
    forbid_disk(monkeypatch)
    assert expand_shards(["s3://b/x-{0..2}.tar"]) == ["s3://b/x-0.tar", "s3://b/x-1.tar", "s3://b/x-2.tar"]
    assert expand_shards(["gs://b/d/train-{000008..000010}.tar"]) == [
        "gs://b/d/train-000008.tar", "gs://b/d/train-000009.tar", "gs://b/d/train-000010.tar"]
    # a URL never goes through glob: '?' and '*' are kept as they are
    assert expand_shards(["https://h/p/a*.tar?sig=1"]) == ["https://h/p/a*.tar?sig=1"]


def test_pipe_command_is_kept_as_one_spec(monkeypatch):
    forbid_disk(monkeypatch)
    assert expand_shards(["pipe:cat x.tar"]) == ["pipe:cat x.tar"]
    assert expand_shards(["  pipe:curl -s -L https://h/p/train-000001.tar  "]) == [
        "pipe:curl -s -L https://h/p/train-000001.tar"]


@pytest.mark.parametrize("spec, expected", [
    ("s3://b/x.tar", True), ("gs://b/x.tar", True), ("https://h/x.tar", True), ("pipe:cat x", True),
    ("file:///a/x.tar", False), ("/a/x.tar", False), ("rel/x.tar", False), ("x-{0..2}.tar", False),
])
def test_is_url(spec, expected):
    assert is_url(spec) is expected


# --------------------------------------------------------------------------- shard ids


@pytest.mark.parametrize("location, expected", [
    ("/data/train-000003.tar", "train-000003"),
    ("rel/dir/train-000003.tar", "train-000003"),
    ("train-000003.tar", "train-000003"),
    ("s3://bucket/p/train-000003.tar", "train-000003"),
    ("gs://bucket/train-000004.tar.gz", "train-000004"),
    ("/data/train-000005.tar.gz", "train-000005"),
    ("/data/x.tgz", "x"),
    ("/data/x.tar.bz2", "x"),
    ("/data/x.tar.xz", "x"),
    ("/data/UPPER.TAR", "UPPER"),
    ("/data/a.b.tar", "a.b"),
    ("https://h/p/train-000007.tar?sig=abc&x=1", "train-000007"),
    ("pipe:cat /data/train-000008.tar", "train-000008"),
    ("pipe:curl -s -L https://h/p/train-000009.tar", "train-000009"),
    ("pipe:cat x.tar", "x"),
])
def test_shard_id(location, expected):
    assert shard_id(location) == expected


def test_shard_id_ignores_slashes_in_the_query_string():
    url = "https://h/p/train-000002.tar?X-Amz-Credential=AKIA/20240101/us-east-1/s3/aws4_request&sig=1"
    assert shard_id(url) == "train-000002"


def test_create_tar_shards_with_aws_cli_pipe_commands():
    specs = [f"pipe:aws s3 cp s3://bk/train-{i:06d}.tar -" for i in range(2)]
    assert [s.id for s in create_shards(specs)] == ["train-000000", "train-000001"]


# --------------------------------------------------------------------------- create_tar_shards


def test_create_tar_shards_sorts_by_id(tmp_path):
    c, a, b = touch(tmp_path / "c.tar", tmp_path / "a.tar", tmp_path / "b.tar")
    got = create_shards([c, a, b])
    assert [(s.id, s.url) for s in got] == [("a", a), ("b", b), ("c", c)]
    assert all(s.digest is None and s.source == s.url and s.root is None and s.files == () for s in got)


def test_create_tar_shards_skips_the_same_location_twice(tmp_path):
    (a,) = touch(tmp_path / "a.tar")
    assert create_shards([a, a]) == [Shard(id="a", url=a)]


@pytest.mark.parametrize("second", ["d2/x.tar", "d1/x.tar.gz"])
def test_create_tar_shards_refuses_two_locations_with_one_id(tmp_path, second):
    first, other = touch(tmp_path / "d1" / "x.tar", tmp_path / second)
    with pytest.raises(ValueError) as info:
        create_shards([first, other])
    assert "'x'" in str(info.value) and first in str(info.value) and other in str(info.value)


def test_create_tar_shards_refuses_colliding_urls():
    with pytest.raises(ValueError, match="'x'"):
        create_shards(["s3://a/x.tar", "s3://b/x.tar"])


# --------------------------------------------------------------------------- split_by_rank


@pytest.mark.parametrize("n", [0, 1, 3, 10, 11])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_split_by_rank_partitions_the_input(n, world):
    items = [f"s{i}" for i in range(n)]
    parts = [split_by_rank(items, r, world) for r in range(world)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == sorted(items)
    assert len(flat) == len(set(flat)) == n
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for p in parts:  # each rank keeps the input order
        assert p == sorted(p, key=items.index)


def test_split_by_rank_is_round_robin():
    assert [split_by_rank(list(range(8)), r, 3) for r in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]


# --------------------------------------------------------------------------- image folders


def png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    files = {
        "a.jpg": jpeg_bytes(make_image(1)),
        "sub/b.png": png_bytes(make_image(2)),
        "sub/a.b.jpg": jpeg_bytes(make_image(3)),
        "sub/deeper/c.jpeg": jpeg_bytes(make_image(4)),
        "fake.svg": jpeg_bytes(make_image(5)),  # JPEG bytes behind a wrong name: sniffed
        "noext": png_bytes(make_image(6)),  # no extension at all: sniffed
        "broken.jpg": b"this is not a jpeg at all" * 10,  # known extension, garbage: kept (a failure row later)
        "notes.txt": b"just some notes\n",
        "README": b"plain text without extension\n",
        ".hidden.jpg": jpeg_bytes(make_image(7)),
        ".cache/d.jpg": jpeg_bytes(make_image(8)),
        "sub/.thumbs/e.jpg": jpeg_bytes(make_image(9)),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


EXPECTED_IMAGES = ["a.jpg", "broken.jpg", "fake.svg", "noext", "sub/a.b.jpg", "sub/b.png", "sub/deeper/c.jpeg"]


def test_list_image_files(image_folder):
    images, skipped = list_image_files(image_folder)
    assert images == EXPECTED_IMAGES
    assert skipped == ["README", "notes.txt"]
    assert list_image_files(str(image_folder)) == (images, skipped)


def test_list_image_files_missing_folder(tmp_path):
    with pytest.raises(MissingInputError, match="nope"):
        list_image_files(tmp_path / "nope")


def test_sniffed_image_over_pillows_pixel_limit_is_still_listed(tmp_path, monkeypatch):
    # Pillow refuses in Image.open above 2 * MAX_IMAGE_PIXELS (default ~179 MP; decode_image also lowers the
    # limit process-wide to max_pixels). Such a file is an image and must become a failure row, not vanish.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "big.svg").write_bytes(jpeg_bytes(make_image(0, (64, 48))))  # 3072 px > 2 * 1000
    assert list_image_files(tmp_path) == (["big.svg"], [])


def test_create_folder_shards_chunks(image_folder):
    got = create_folder_shards(str(image_folder), 3)
    assert [s.id for s in got] == ["folder-000000", "folder-000001", "folder-000002"]
    assert [list(s.files) for s in got] == [EXPECTED_IMAGES[0:3], EXPECTED_IMAGES[3:6], EXPECTED_IMAGES[6:]]
    assert all(s.root == str(image_folder) and s.url is None for s in got)
    for s in got:
        assert s.digest == hashlib.sha1("\n".join(s.files + s.stamps).encode()).hexdigest()
        assert len(s.stamps) == len(s.files)
        assert s.source == f"{image_folder} [{len(s.files)} files]"
    assert len({s.digest for s in got}) == 3
    assert create_folder_shards(str(image_folder), 3) == got  # stable


@pytest.mark.parametrize("chunk, sizes", [(1, [1] * 7), (2, [2, 2, 2, 1]), (7, [7]), (100, [7])])
def test_create_folder_shards_chunk_sizes(image_folder, chunk, sizes):
    got = create_folder_shards(str(image_folder), chunk)
    assert [len(s.files) for s in got] == sizes
    assert [s.id for s in got] == [f"folder-{i:06d}" for i in range(len(sizes))]
    assert [f for s in got for f in s.files] == EXPECTED_IMAGES


def test_create_folder_shards_root_is_absolute(image_folder, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    got = create_folder_shards(image_folder.name, 4)
    assert {s.root for s in got} == {str(image_folder)}


def test_folder_digest_changes_only_where_the_file_list_changes(image_folder):
    before = create_folder_shards(str(image_folder), 3)
    # a file sorting last changes only the last chunk
    (image_folder / "zz.jpg").write_bytes(jpeg_bytes(make_image(11)))
    after = create_folder_shards(str(image_folder), 3)
    assert [s.digest for s in after[:2]] == [s.digest for s in before[:2]]
    assert after[2].digest != before[2].digest
    # a file sorting first shifts every chunk
    (image_folder / "0first.jpg").write_bytes(jpeg_bytes(make_image(12)))
    shifted = create_folder_shards(str(image_folder), 3)
    assert all(s.digest != a.digest for s, a in zip(shifted, after))
    # a removed file changes its chunk
    os.remove(image_folder / "zz.jpg")
    os.remove(image_folder / "0first.jpg")
    os.remove(image_folder / "sub" / "b.png")
    removed = create_folder_shards(str(image_folder), 3)
    assert removed[0].digest == before[0].digest and removed[1].digest != before[1].digest


def test_create_folder_shards_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    (tmp_path / ".hidden.jpg").write_bytes(jpeg_bytes(make_image(0)))
    with pytest.raises(FileNotFoundError, match="no image files"):
        create_folder_shards(str(tmp_path), 10)


def test_forbid_disk_catches_local_lookups(monkeypatch):
    # guards the URL tests above: a local spec under forbid_disk() must trip it
    forbid_disk(monkeypatch)
    with pytest.raises(AssertionError, match="disk touched"):
        expand_shards(["/data/x-{0..2}.tar"])


def test_folder_digest_changes_when_a_file_is_replaced_under_its_name(tmp_path):
    from tests.conftest import make_image

    make_image(0).save(tmp_path / "a.jpg")
    make_image(1).save(tmp_path / "b.jpg")
    before = create_folder_shards(str(tmp_path), 10)[0].digest
    make_image(2, (80, 60)).save(tmp_path / "b.jpg")  # edited photo, same name
    assert create_folder_shards(str(tmp_path), 10)[0].digest != before
