"""A shard path with white space in it is one spec; white space between specs still separates them (issue 26)."""

from __future__ import annotations

import pytest

from pipeline.errors import MissingInputError
from pipeline.io.shards import expand_shards


def test_a_shard_in_a_folder_with_a_space_is_one_spec(tmp_path):
    folder = tmp_path / "my shards"
    folder.mkdir()
    for name in ("a-0.tar", "a-1.tar"):
        (folder / name).write_bytes(b"")
    assert expand_shards([str(folder / "a-0.tar")]) == [str(folder / "a-0.tar")]
    assert expand_shards([str(folder / "a-{0..1}.tar")]) == [str(folder / "a-0.tar"), str(folder / "a-1.tar")]
    assert expand_shards([str(folder)]) == [str(folder / "a-0.tar"), str(folder / "a-1.tar")]


def test_a_missing_shard_with_a_space_is_named_whole(tmp_path):
    (tmp_path / "my shards").mkdir()
    with pytest.raises(MissingInputError, match="shard '.*my shards/gone.tar' does not exist"):
        expand_shards([str(tmp_path / "my shards" / "gone.tar")])


def test_white_space_between_specs_still_separates_them(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(b"")
    b.write_bytes(b"")
    assert expand_shards([f"{a} {b}"]) == [str(a), str(b)]
    assert expand_shards(["s3://bucket/x-{0..1}.tar s3://bucket/y.tar"]) == [
        "s3://bucket/x-0.tar", "s3://bucket/x-1.tar", "s3://bucket/y.tar"]
